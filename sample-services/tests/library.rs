//! `sample.library.v1.LibraryService` over gRPC on a real loopback socket: what each method
//! answers, error details, and its streams.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use prost::Message as _;
use sample_services::{
    SampleServer, ServerOptions, google_rpc,
    library::{
        AllTypes, Book, CreateBookRequest, CreateShelfRequest, DeleteBookRequest, FailRequest,
        Genre, GetBookRequest, GetFileRequest, GetShelfRequest, ListBooksRequest, MoveBookRequest,
        SearchBooksRequest, Shelf, UpdateBookRequest, WatchRequest, all_types,
        library_service_client::LibraryServiceClient, search_books_request,
    },
};
use tokio::net::TcpListener;
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use tonic_reflection::pb::v1::{
    self,
    server_reflection_request::MessageRequest,
    server_reflection_request::MessageRequest::{FileByFilename, FileContainingSymbol},
    server_reflection_response::MessageResponse,
};

/// Bound on every wait in this test, so a bug fails it instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

async fn start(id: &str) -> anyhow::Result<(SampleServer, LibraryServiceClient<Channel>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = sample_services::spawn(listener, ServerOptions::new(id)).await?;
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    Ok((server, LibraryServiceClient::new(channel)))
}

/// The first file of the reflection v1 answer to `request`.
async fn reflect_file(
    channel: Channel,
    request: MessageRequest,
) -> anyhow::Result<prost_types::FileDescriptorProto> {
    let request = v1::ServerReflectionRequest {
        message_request: Some(request),
        ..Default::default()
    };
    let reply = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner()
        .message()
        .await?
        .context("a reply")?;
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        anyhow::bail!("not a file descriptor response: {reply:?}");
    };
    let first = files.file_descriptor_proto.first().context("a file")?;
    Ok(prost_types::FileDescriptorProto::decode(first.as_slice())?)
}

#[tokio::test]
async fn unary_methods() -> anyhow::Result<()> {
    let (server, mut library) = start("library-1").await?;

    // GetShelf, with Echo-like metadata echo.
    let mut request = Request::new(GetShelfRequest {
        name: "shelves/s1".into(),
    });
    request
        .metadata_mut()
        .insert("x-token", MetadataValue::from_static("abc"));
    let response = library.get_shelf(request).await?;
    let metadata = response.metadata();
    assert_eq!(metadata.get("x-server-id").unwrap(), "library-1");
    assert_eq!(metadata.get("x-token").unwrap(), "abc");
    assert_eq!(metadata.get("trailer-x-token").unwrap(), "abc");
    let shelf = response.into_inner();
    assert_eq!(
        shelf,
        Shelf {
            name: "shelves/s1".into(),
            theme: "Theme of shelves/s1".into(),
            book_count: 42
        }
    );
    let custom = library
        .custom_verb(GetShelfRequest {
            name: "shelves/s1".into(),
        })
        .await?;
    assert_eq!(custom.into_inner(), shelf);

    // CreateShelf: named after shelf_id, or kept.
    let created = library
        .create_shelf(CreateShelfRequest {
            shelf: Some(Shelf {
                name: "ignored".into(),
                theme: "poems".into(),
                book_count: 1,
            }),
            shelf_id: "new".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (created.name.as_str(), created.theme.as_str()),
        ("shelves/new", "poems")
    );
    let kept = library
        .create_shelf(CreateShelfRequest {
            shelf: Some(Shelf {
                name: "shelves/mine".into(),
                ..Default::default()
            }),
            shelf_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(kept.name, "shelves/mine");

    // CreateBook, UpdateBook, MoveBook, GetBookAuthor, DeleteBook, GetFile.
    let book = library
        .create_book(CreateBookRequest {
            parent: "shelves/s1".into(),
            book: Some(Book {
                title: "Dune".into(),
                ..Default::default()
            }),
            book_id: "b1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (book.name.as_str(), book.title.as_str()),
        ("shelves/s1/books/b1", "Dune")
    );
    let updated = library
        .update_book(UpdateBookRequest {
            book: Some(book),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into(), "author".into()],
            }),
        })
        .await?
        .into_inner();
    assert_eq!(updated.title, "Dune (updated: title,author)");
    let moved = library
        .move_book(MoveBookRequest {
            name: "shelves/s1/books/b1".into(),
            destination_shelf: "shelves/s2".into(),
        })
        .await?
        .into_inner();
    assert_eq!(moved.name, "shelves/s2/books/b1");
    let author = library
        .get_book_author(GetBookRequest {
            name: "shelves/s1/books/b1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(author.title, "Title of shelves/s1/books/b1");
    assert_eq!(author.author, "Author of shelves/s1/books/b1");
    library
        .delete_book(DeleteBookRequest {
            name: "shelves/s1/books/b1".into(),
        })
        .await?;
    let file = library
        .get_file(GetFileRequest {
            path: "a/b/ü.txt".into(),
        })
        .await?
        .into_inner();
    assert_eq!((file.path.as_str(), file.size), ("a/b/ü.txt", 10));

    // SearchBooks echoes the request.
    let search = SearchBooksRequest {
        query: "dune".into(),
        tags: vec!["sf".into(), "classic".into()],
        filter: Some(search_books_request::Filter {
            author: "Herbert".into(),
            year: 1965,
        }),
        min_pages: 300,
        genre: Genre::Fiction as i32,
        available: true,
    };
    let found = library.search_books(search.clone()).await?.into_inner();
    assert_eq!(found.echo, Some(search));
    assert_eq!(found.books.len(), 1);
    assert_eq!(found.books[0].author, "Herbert");

    // EchoTypes returns every field unchanged.
    let all = AllTypes {
        d: 1.5,
        f: -2.25,
        i64: i64::MIN,
        u64: u64::MAX,
        s64: -7,
        fx64: 9,
        by: vec![0, 255],
        genre: Genre::History as i32,
        nested: Some(Shelf::default()),
        counts: HashMap::from([("a".into(), 1)]),
        shelves_by_id: HashMap::from([(3, Shelf::default())]),
        choice: Some(all_types::Choice::ChoiceShelf(Shelf {
            name: "x".into(),
            ..Default::default()
        })),
        ts: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        st: Some(prost_types::Struct {
            fields: [(
                "k".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(1.0)),
                },
            )]
            .into(),
        }),
        w_i64: Some(0),
        w_s: Some(String::new()),
        empty: Some(()),
        any: Some(prost_types::Any {
            type_url: "type.googleapis.com/sample.library.v1.Shelf".into(),
            value: Shelf::default().encode_to_vec(),
        }),
        opt: Some(0),
        snake_case_field: "snake".into(),
        ..Default::default()
    };
    let echoed = library.echo_types(all.clone()).await?.into_inner();
    assert_eq!(echoed, all);

    // Fail: plain, OK, and with google.rpc error details.
    let status = library
        .fail(FailRequest {
            code: Code::NotFound as i32,
            message: "no such book".into(),
            with_details: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "no such book")
    );
    assert!(status.details().is_empty());
    library.fail(FailRequest::default()).await?;
    let status = library
        .fail(FailRequest {
            code: Code::InvalidArgument as i32,
            message: "bad book".into(),
            with_details: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.metadata().get("x-server-id").unwrap(), "library-1");
    let details = google_rpc::Status::decode(status.details())?;
    assert_eq!(
        (details.code, details.message.as_str()),
        (Code::InvalidArgument as i32, "bad book")
    );
    let [bad_request, error_info] = details.details.as_slice() else {
        panic!("two details: {details:?}");
    };
    assert_eq!(
        bad_request.type_url,
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let bad_request = google_rpc::BadRequest::decode(bad_request.value.as_slice())?;
    assert_eq!(bad_request.field_violations[0].field, "name");
    assert_eq!(
        bad_request.field_violations[0].description,
        "must not be empty"
    );
    assert_eq!(
        error_info.type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    let error_info = google_rpc::ErrorInfo::decode(error_info.value.as_slice())?;
    assert_eq!(
        (error_info.reason.as_str(), error_info.domain.as_str()),
        ("TEST_REASON", "sample.library.v1")
    );
    assert_eq!(
        error_info.metadata,
        HashMap::from([("k".into(), "v".into())])
    );

    // Each call counted like Echo's.
    tokio::time::timeout(WAIT, server.stats.wait_until(|s| s.in_flight() == 0)).await?;
    assert_eq!(server.stats.requests(), 15);
    assert_eq!(server.stats.cancelled(), 0);

    // Reflection serves library.proto and, by file name, its imports.
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let library_proto = reflect_file(
        channel.clone(),
        FileContainingSymbol(sample_services::LIBRARY_SERVICE.into()),
    )
    .await?;
    assert_eq!(library_proto.name(), "library.proto");
    assert!(
        library_proto
            .dependency
            .contains(&"google/api/annotations.proto".to_owned())
    );
    let http_proto = reflect_file(channel, FileByFilename("google/api/http.proto".into())).await?;
    assert_eq!(http_proto.package(), "google.api");

    tokio::time::timeout(WAIT, server.shutdown()).await?;
    Ok(())
}

#[tokio::test]
async fn streams() -> anyhow::Result<()> {
    let (server, mut library) = start("library-2").await?;

    // ListBooks: page_size books, 3 by default.
    let mut books = library
        .list_books(ListBooksRequest {
            parent: "shelves/s1".into(),
            page_size: 0,
            filter: "dune".into(),
        })
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(book) = books.message().await? {
        assert_eq!(book.genre(), Genre::Science);
        assert!(book.title.contains("dune"), "{}", book.title);
        assert!(book.published.is_some());
        names.push(book.name);
    }
    assert_eq!(
        names,
        [
            "shelves/s1/books/0",
            "shelves/s1/books/1",
            "shelves/s1/books/2"
        ]
    );

    // Watch: count books, interval_ms apart.
    let started = Instant::now();
    let mut watch = library
        .watch(WatchRequest {
            parent: "shelves/s1".into(),
            count: 3,
            interval_ms: 20,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut count = 0;
    while tokio::time::timeout(WAIT, watch.message())
        .await??
        .is_some()
    {
        count += 1;
    }
    assert_eq!(count, 3);
    assert!(started.elapsed() >= Duration::from_millis(40));

    // Watch failing after two books, with the default and a chosen code.
    for (fail_code, code) in [
        (0, Code::Aborted),
        (Code::Unavailable as i32, Code::Unavailable),
    ] {
        let mut watch = library
            .watch(WatchRequest {
                parent: "shelves/s1".into(),
                count: 5,
                fail_after: 2,
                fail_code,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(watch.message().await?.is_some());
        assert!(watch.message().await?.is_some());
        let status = watch.message().await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, "watch failed"));
    }

    // Watch dropped by the client counts as a cancel.
    let mut watch = library
        .watch(WatchRequest {
            parent: "shelves/s1".into(),
            count: 1_000,
            interval_ms: 10,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(watch.message().await?.is_some());
    drop(watch);
    tokio::time::timeout(
        WAIT,
        server
            .stats
            .wait_until(|s| s.cancelled() == 1 && s.in_flight() == 0),
    )
    .await
    .context("cancel counted")?;

    // BulkCreate counts and collects titles.
    let titles = ["a", "b", "c"].map(|title| Book {
        title: title.into(),
        ..Default::default()
    });
    let reply = library
        .bulk_create(tokio_stream::iter(titles))
        .await?
        .into_inner();
    assert_eq!(
        (reply.count, reply.titles),
        (3, vec!["a".into(), "b".into(), "c".into()])
    );

    // Chat answers each book before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = library
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    for i in 0..3 {
        tx.send(Book {
            title: format!("t{i}"),
            ..Default::default()
        })
        .await?;
        let reply = tokio::time::timeout(WAIT, inbound.message())
            .await??
            .expect("reply");
        assert_eq!(reply.title, format!("echo: t{i}"));
    }
    drop(tx);
    assert!(
        tokio::time::timeout(WAIT, inbound.message())
            .await??
            .is_none()
    );

    tokio::time::timeout(WAIT, server.stats.wait_until(|s| s.in_flight() == 0)).await?;
    assert_eq!(server.stats.requests(), 7);
    assert_eq!(server.stats.cancelled(), 1);

    tokio::time::timeout(WAIT, server.shutdown()).await?;
    Ok(())
}
