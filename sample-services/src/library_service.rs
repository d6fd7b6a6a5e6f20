//! `sample.library.v1.LibraryService`: a stateless service for JSON transcoding tests and demos
//! (see `proto/library.proto`). Every answer is computed from the request alone; metadata echo
//! and call accounting live in [`crate::call`].

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, stream};
use prost::Message as _;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::{
    google_rpc,
    library::{
        AllTypes, Book, BulkCreateResponse, CreateBookRequest, CreateShelfRequest,
        DeleteBookRequest, FailRequest, File, Genre, GetBookRequest, GetFileRequest,
        GetShelfRequest, ListBooksRequest, MoveBookRequest, SearchBooksRequest,
        SearchBooksResponse, Shelf, UpdateBookRequest, WatchRequest,
        library_service_server::{LibraryService, LibraryServiceServer},
    },
    stream_plan::StreamPlan,
};

/// Books `ListBooks` streams when `page_size` is 0 or less.
const DEFAULT_PAGE_SIZE: i32 = 3;
/// `book_count` of every shelf `GetShelf` returns.
const SHELF_BOOK_COUNT: i64 = 42;
/// `published` of the books `ListBooks` and `Watch` stream: 2024-01-01T00:00:00Z.
const PUBLISHED_UNIX_SECONDS: i64 = 1_704_067_200;
/// Page count of book 0 of a listing; book `i` has `i` more.
const FIRST_BOOK_PAGES: i32 = 100;
/// Prefix of the `google.protobuf.Any` type URLs in `Fail`'s error details.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
/// `ErrorInfo.domain` in `Fail`'s error details.
const ERROR_DOMAIN: &str = "sample.library.v1";
/// Prefix `Chat` puts before each echoed title.
const CHAT_PREFIX: &str = "echo: ";

type BookStream = Pin<Box<dyn Stream<Item = Result<Book, Status>> + Send>>;

/// The tonic service, ready to add to a router.
pub(crate) fn server() -> LibraryServiceServer<Library> {
    LibraryServiceServer::new(Library)
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Library;

/// What `GetShelf` and `CustomVerb` answer.
fn shelf(name: String) -> Shelf {
    Shelf {
        theme: format!("Theme of {name}"),
        name,
        book_count: SHELF_BOOK_COUNT,
    }
}

/// Book `i` of a `ListBooks` or `Watch` stream under `parent`.
fn listed_book(parent: &str, i: i32, filter: &str) -> Book {
    let title = if filter.is_empty() {
        format!("Book {i}")
    } else {
        format!("Book {i} matching {filter}")
    };
    Book {
        name: format!("{parent}/books/{i}"),
        title,
        author: String::new(),
        pages: FIRST_BOOK_PAGES.saturating_add(i),
        published: Some(prost_types::Timestamp {
            seconds: PUBLISHED_UNIX_SECONDS,
            nanos: 0,
        }),
        tags: Vec::new(),
        genre: Genre::Science as i32,
    }
}

/// `message` packed into a `google.protobuf.Any` under its full name `name`.
fn any(name: &str, message: &impl prost::Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_URL_PREFIX}{name}"),
        value: message.encode_to_vec(),
    }
}

/// The `google.rpc.Status` that `Fail` sends in `grpc-status-details-bin`.
fn error_details(code: Code, message: &str) -> google_rpc::Status {
    let bad_request = google_rpc::BadRequest {
        field_violations: vec![google_rpc::bad_request::FieldViolation {
            field: "name".into(),
            description: "must not be empty".into(),
            ..Default::default()
        }],
    };
    let error_info = google_rpc::ErrorInfo {
        reason: "TEST_REASON".into(),
        domain: ERROR_DOMAIN.into(),
        metadata: [("k".to_owned(), "v".to_owned())].into(),
    };
    google_rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: vec![
            any("google.rpc.BadRequest", &bad_request),
            any("google.rpc.ErrorInfo", &error_info),
        ],
    }
}

/// A count from the request, negatives as 0.
fn non_negative(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

// === impl Library ===

#[tonic::async_trait]
impl LibraryService for Library {
    async fn get_shelf(
        &self,
        request: Request<GetShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        Ok(Response::new(shelf(request.into_inner().name)))
    }

    async fn create_shelf(
        &self,
        request: Request<CreateShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        let CreateShelfRequest { shelf, shelf_id } = request.into_inner();
        let mut shelf = shelf.unwrap_or_default();
        if !shelf_id.is_empty() {
            shelf.name = format!("shelves/{shelf_id}");
        }
        Ok(Response::new(shelf))
    }

    type ListBooksStream = BookStream;

    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<Self::ListBooksStream>, Status> {
        let ListBooksRequest {
            parent,
            page_size,
            filter,
        } = request.into_inner();
        let page_size = if page_size > 0 {
            page_size
        } else {
            DEFAULT_PAGE_SIZE
        };
        // Lazy: a client that goes away stops it.
        let books = (0..page_size).map(move |i| Ok(listed_book(&parent, i, &filter)));
        Ok(Response::new(Box::pin(stream::iter(books))))
    }

    async fn create_book(
        &self,
        request: Request<CreateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let CreateBookRequest {
            parent,
            book,
            book_id,
        } = request.into_inner();
        let mut book = book.unwrap_or_default();
        if !book_id.is_empty() {
            book.name = format!("{parent}/books/{book_id}");
        }
        Ok(Response::new(book))
    }

    async fn update_book(
        &self,
        request: Request<UpdateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let UpdateBookRequest { book, update_mask } = request.into_inner();
        let mut book = book.unwrap_or_default();
        let paths = update_mask
            .map(|mask| mask.paths.join(","))
            .unwrap_or_default();
        book.title = format!("{} (updated: {paths})", book.title);
        Ok(Response::new(book))
    }

    async fn delete_book(&self, _: Request<DeleteBookRequest>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn move_book(&self, request: Request<MoveBookRequest>) -> Result<Response<Book>, Status> {
        let MoveBookRequest {
            name,
            destination_shelf,
        } = request.into_inner();
        let id = name.rsplit_once('/').map_or(name.as_str(), |(_, id)| id);
        Ok(Response::new(Book {
            name: format!("{destination_shelf}/books/{id}"),
            ..Default::default()
        }))
    }

    async fn get_book_author(
        &self,
        request: Request<GetBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(Book {
            title: format!("Title of {name}"),
            author: format!("Author of {name}"),
            name,
            ..Default::default()
        }))
    }

    async fn get_file(&self, request: Request<GetFileRequest>) -> Result<Response<File>, Status> {
        let path = request.into_inner().path;
        Ok(Response::new(File {
            size: path.len() as i64,
            path,
        }))
    }

    async fn search_books(
        &self,
        request: Request<SearchBooksRequest>,
    ) -> Result<Response<SearchBooksResponse>, Status> {
        let echo = request.into_inner();
        let books = if echo.query.is_empty() {
            Vec::new()
        } else {
            vec![Book {
                title: echo.query.clone(),
                author: echo
                    .filter
                    .as_ref()
                    .map(|filter| filter.author.clone())
                    .unwrap_or_default(),
                tags: echo.tags.clone(),
                genre: echo.genre,
                ..Default::default()
            }]
        };
        Ok(Response::new(SearchBooksResponse {
            echo: Some(echo),
            books,
        }))
    }

    async fn echo_types(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<()>, Status> {
        let FailRequest {
            code,
            message,
            with_details,
        } = request.into_inner();
        let code = Code::from(code);
        if code == Code::Ok {
            return Ok(Response::new(()));
        }
        if !with_details {
            return Err(Status::new(code, message));
        }
        let details = error_details(code, &message).encode_to_vec();
        Err(Status::with_details(code, message, details.into()))
    }

    type WatchStream = BookStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let fail_code = match request.fail_code {
            0 => Code::Aborted,
            code => Code::from(code),
        };
        let parent = request.parent;
        let plan = StreamPlan {
            count: non_negative(request.count),
            interval: Duration::from_millis(non_negative(request.interval_ms)),
            fail_after: non_negative(request.fail_after),
            failure: Some(Status::new(fail_code, "watch failed")),
            // `seq` < `count`, which came from an i32.
            make: move |seq| listed_book(&parent, i32::try_from(seq).unwrap_or(i32::MAX), ""),
            seq: 0,
        };
        Ok(Response::new(Box::pin(plan.into_stream())))
    }

    async fn bulk_create(
        &self,
        request: Request<Streaming<Book>>,
    ) -> Result<Response<BulkCreateResponse>, Status> {
        let mut inbound = request.into_inner();
        let mut titles = Vec::new();
        while let Some(book) = inbound.message().await? {
            titles.push(book.title);
        }
        Ok(Response::new(BulkCreateResponse {
            count: i32::try_from(titles.len()).unwrap_or(i32::MAX),
            titles,
        }))
    }

    type ChatStream = BookStream;

    async fn chat(
        &self,
        request: Request<Streaming<Book>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let state = ChatState {
            inbound: request.into_inner(),
            done: false,
        };
        // One reply per inbound book as it arrives, so replies flow while the client sends.
        Ok(Response::new(Box::pin(stream::unfold(
            state,
            ChatState::next,
        ))))
    }

    async fn custom_verb(
        &self,
        request: Request<GetShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        self.get_shelf(request).await
    }
}

/// Where a `Chat` response stream is.
struct ChatState {
    inbound: Streaming<Book>,
    done: bool,
}

impl ChatState {
    async fn next(mut self) -> Option<(Result<Book, Status>, Self)> {
        if self.done {
            return None;
        }
        match self.inbound.message().await {
            Ok(Some(mut book)) => {
                book.title = format!("{CHAT_PREFIX}{}", book.title);
                Some((Ok(book), self))
            }
            Ok(None) => None,
            Err(status) => {
                // A failed inbound stream ends the call with its status.
                self.done = true;
                Some((Err(status), self))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_books_follow_the_parent_and_filter() {
        let book = listed_book("shelves/a", 2, "dune");
        assert_eq!(book.name, "shelves/a/books/2");
        assert_eq!(book.title, "Book 2 matching dune");
        assert_eq!(book.genre(), Genre::Science);
        assert_eq!(listed_book("shelves/a", 0, "").title, "Book 0");
    }

    #[test]
    fn error_details_decode() {
        let status = error_details(Code::InvalidArgument, "bad");
        let decoded = google_rpc::Status::decode(status.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.code, Code::InvalidArgument as i32);
        let urls: Vec<_> = decoded
            .details
            .iter()
            .map(|d| d.type_url.as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "type.googleapis.com/google.rpc.BadRequest",
                "type.googleapis.com/google.rpc.ErrorInfo"
            ]
        );
        let info = google_rpc::ErrorInfo::decode(decoded.details[1].value.as_slice()).unwrap();
        assert_eq!(info.metadata.get("k").map(String::as_str), Some("v"));
    }
}
