//! The reflection client: fetches every file a backend serves, with all
//! imports, into one encoded `FileDescriptorSet` ready for
//! [`Registry::put`](descriptors::Registry::put).
//!
//! One stream, one request at a time: `list_services`, then
//! `file_containing_symbol` for each service, then `file_by_filename` for
//! every import not yet seen. Files keep the exact bytes the server sent.
//!
//! [`ask_once`] is the same client for one question on a stream of its own,
//! over any [`Transport`]: the front's reflection service uses it to ask the
//! backends through their clusters.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, combinators::UnsyncBoxBody};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};
use tonic_reflection::pb::{v1, v1alpha};
use tower::{ServiceExt as _, util::BoxCloneService};

use balancer::body::BoxError;

use super::wire::{Answer, NOT_FOUND, Query};

/// Time for the whole exchange, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most files one fetch accepts.
const MAX_FILES: usize = 10_000;
/// Most bytes of files one fetch accepts (also the largest response message).
const MAX_SET_BYTES: usize = 64 * 1024 * 1024;

/// Why [`fetch_descriptor_set`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// The server could not be reached.
    #[error("cannot reach the server: {}", .0.message())]
    Connect(#[source] Status),
    /// Neither `grpc.reflection.v1` nor `v1alpha` is served.
    #[error("the server offers no gRPC reflection service (v1 or v1alpha)")]
    Unimplemented,
    /// The reflection call failed with this status.
    #[error("reflection call failed: {:?}: {}", .0.code(), .0.message())]
    Rpc(#[source] Status),
    /// The server lists a service but has no file for it.
    #[error("the server lists service {0} but has no file defining it")]
    MissingService(String),
    /// A file imports one the server does not have.
    #[error("the server does not serve {file}, imported by {imported_by}")]
    MissingFile {
        /// The missing import.
        file: String,
        /// A file importing it.
        imported_by: String,
    },
    /// The server answered a request with an `ErrorResponse`.
    #[error("the server answered {request} with error code {code}: {message}")]
    Server {
        /// What was asked.
        request: String,
        /// gRPC status code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// An answer of the wrong kind, or none.
    #[error("unexpected answer to {0}")]
    UnexpectedAnswer(String),
    /// The stream ended before an answer came.
    #[error("the server ended the reflection stream early")]
    StreamEnded,
    /// A file descriptor does not decode.
    #[error("cannot decode a file descriptor from the server")]
    Decode(#[source] prost::DecodeError),
    /// A file descriptor has no name.
    #[error("a file descriptor from the server has no name")]
    NamelessFile,
    /// More than [`MAX_FILES`] files or [`MAX_SET_BYTES`] bytes.
    #[error("the server's descriptors exceed {MAX_FILES} files or {MAX_SET_BYTES} bytes")]
    TooLarge,
    /// No complete answer in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// Asks the server behind `channel` over gRPC reflection (v1, or v1alpha
/// when v1 is `UNIMPLEMENTED`) for every service it lists, except
/// `grpc.reflection.*` and `grpc.health.v1.Health`, resolves their files and
/// all their imports, and returns an encoded `FileDescriptorSet` with every
/// file after its imports. The caller builds the channel (and its TLS).
/// The whole exchange is bounded by a 10 s timeout.
pub async fn fetch_descriptor_set(channel: Channel) -> Result<Vec<u8>, ReflectionError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch(channel))
        .await
        .map_err(|_| ReflectionError::Timeout(FETCH_TIMEOUT))?
}

/// What a reflection stream runs over: a tonic [`Channel`] (descriptor
/// sync), or a cluster of the balancer (the front's reflection service).
pub(super) type Transport = BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<UnsyncBoxBody<Bytes, TransportError>>,
    TransportError,
>;

/// A [`Transport`] failing to deliver a call or its response. A concrete
/// type rather than [`BoxError`]: with a boxed trait object here, rustc
/// cannot prove the generated client's futures `Send`
/// (rust-lang/rust#102211). tonic reads the gRPC status from the source
/// chain.
#[derive(Debug, thiserror::Error)]
#[error("transport failed")]
pub(super) struct TransportError(#[source] pub(super) BoxError);

/// A tonic channel as a [`Transport`]; its errors keep their source chain,
/// so a refused connection is still `UNAVAILABLE`.
fn channel_transport(channel: Channel) -> Transport {
    BoxCloneService::new(
        channel
            .map_response(|resp: http::Response<tonic::body::Body>| {
                resp.map(|body| {
                    body.map_err(|status: Status| TransportError(Box::new(status)))
                        .boxed_unsync()
                })
            })
            .map_err(|error: tonic::transport::Error| TransportError(Box::new(error))),
    )
}

/// Asks one question on a stream of its own (v1, or v1alpha when v1 is
/// `UNIMPLEMENTED`) and returns the answer; answer messages over
/// `max_answer_bytes` fail the call. The caller bounds the time.
pub(super) async fn ask_once(
    transport: Transport,
    query: Query,
    max_answer_bytes: usize,
) -> Result<Answer, ReflectionError> {
    let opened = open_v1(transport.clone(), query.clone(), max_answer_bytes).await;
    let mut session = match opened {
        Err(ReflectionError::Unimplemented) => {
            open_v1alpha(transport, query.clone(), max_answer_bytes).await?
        }
        other => other?,
    };
    // Dropping the session ends the request stream, then the call.
    session.receive(&query).await
}

async fn fetch(channel: Channel) -> Result<Vec<u8>, ReflectionError> {
    let (mut session, services) = Session::connect(channel_transport(channel)).await?;
    let mut files = Files::default();
    for service in services.into_iter().filter(|s| !is_infrastructure(s)) {
        let query = Query::FileContainingSymbol(service.clone());
        let answer = session.ask(query.clone()).await?;
        let found = files_of(answer, &query)?.ok_or(ReflectionError::MissingService(service))?;
        files.add(found)?;
    }
    while let Some((file, imported_by)) = files.next_missing() {
        let query = Query::FileByFilename(file.clone());
        let answer = session.ask(query.clone()).await?;
        if let Some(found) = files_of(answer, &query)? {
            files.add(found)?;
        }
        if !files.contains(&file) {
            return Err(ReflectionError::MissingFile { file, imported_by });
        }
    }
    Ok(files.into_set())
}

/// Services a server runs beside what it serves.
fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service == "grpc.health.v1.Health"
}

/// The files of a file answer; `None` when the server has none (`NOT_FOUND`).
fn files_of(answer: Answer, query: &Query) -> Result<Option<Vec<Vec<u8>>>, ReflectionError> {
    match answer {
        Answer::Files(files) => Ok(Some(files)),
        Answer::Error {
            code: NOT_FOUND, ..
        } => Ok(None),
        Answer::Error { code, message } => Err(ReflectionError::Server {
            request: query.describe(),
            code,
            message,
        }),
        Answer::Services(_) | Answer::ExtensionNumbers { .. } => {
            Err(ReflectionError::UnexpectedAnswer(query.describe()))
        }
    }
}

// === impl ReflectionError ===

impl ReflectionError {
    fn from_status(status: Status) -> Self {
        match status.code() {
            Code::Unimplemented => Self::Unimplemented,
            Code::Unavailable => Self::Connect(status),
            _ => Self::Rpc(status),
        }
    }
}

/// Answers as they come off the stream (`None`: a response without an answer).
type Answers = Pin<Box<dyn Stream<Item = Result<Option<Answer>, Status>> + Send>>;

/// One open reflection stream, either version.
struct Session {
    /// Requests to send; bounded, one in flight at a time.
    requests: mpsc::Sender<Query>,
    answers: Answers,
}

/// Opens a stream of one version with its `first` request already queued:
/// some servers send response headers only with their first message, and
/// the client call waits for those headers.
macro_rules! open_stream {
    ($($name:ident => $pb:ident),+) => {$(
        async fn $name(
            transport: Transport,
            first: Query,
            max_answer_bytes: usize,
        ) -> Result<Session, ReflectionError> {
            let (requests, rx) = mpsc::channel::<Query>(1);
            requests
                .try_send(first)
                .map_err(|_| ReflectionError::StreamEnded)?;
            let outgoing = ReceiverStream::new(rx).map($pb::ServerReflectionRequest::from);
            let responses = $pb::server_reflection_client::ServerReflectionClient::new(transport)
                .max_decoding_message_size(max_answer_bytes)
                .server_reflection_info(outgoing)
                .await
                .map_err(ReflectionError::from_status)?
                .into_inner();
            let answers = responses.map(|r| r.map(|resp| resp.message_response.map(Answer::from)));
            Ok(Session {
                requests,
                answers: Box::pin(answers),
            })
        }
    )+};
}

open_stream!(open_v1 => v1, open_v1alpha => v1alpha);

// === impl Session ===

impl Session {
    /// Opens a stream (v1, else v1alpha) and returns it with the services the
    /// server lists.
    async fn connect(transport: Transport) -> Result<(Self, Vec<String>), ReflectionError> {
        let list = Query::ListServices;
        match Self::listed(open_v1(transport.clone(), list.clone(), MAX_SET_BYTES).await).await {
            Err(ReflectionError::Unimplemented) => {
                Self::listed(open_v1alpha(transport, list, MAX_SET_BYTES).await).await
            }
            other => other,
        }
    }

    /// Reads the answer to the `list_services` queued by `open_*`.
    async fn listed(
        session: Result<Self, ReflectionError>,
    ) -> Result<(Self, Vec<String>), ReflectionError> {
        let mut session = session?;
        let query = Query::ListServices;
        match session.receive(&query).await? {
            Answer::Services(names) => Ok((session, names)),
            Answer::Error { code, message } => Err(ReflectionError::Server {
                request: query.describe(),
                code,
                message,
            }),
            Answer::Files(_) | Answer::ExtensionNumbers { .. } => {
                Err(ReflectionError::UnexpectedAnswer(query.describe()))
            }
        }
    }

    /// Sends one request and waits for its answer.
    async fn ask(&mut self, query: Query) -> Result<Answer, ReflectionError> {
        let describe = query.clone();
        // If the call is over, sending fails and the next read says why.
        let _ = self.requests.send(query).await;
        self.receive(&describe).await
    }

    async fn receive(&mut self, query: &Query) -> Result<Answer, ReflectionError> {
        match self.answers.next().await {
            Some(Ok(Some(answer))) => Ok(answer),
            Some(Ok(None)) => Err(ReflectionError::UnexpectedAnswer(query.describe())),
            // Some servers (tonic-reflection) end the stream with NOT_FOUND
            // instead of answering with an ErrorResponse.
            Some(Err(status)) if status.code() == Code::NotFound => {
                Ok(Answer::not_found(status.message().to_owned()))
            }
            Some(Err(status)) => Err(ReflectionError::from_status(status)),
            None => Err(ReflectionError::StreamEnded),
        }
    }
}

/// The name and imports of a `FileDescriptorProto`; everything else in the
/// bytes is skipped when decoding (and kept in the bytes themselves).
#[derive(Clone, PartialEq, prost::Message)]
struct FileHeader {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
}

/// `google.protobuf.FileDescriptorSet` with files as opaque bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFileSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// The files received so far.
#[derive(Default)]
struct Files {
    by_name: HashMap<String, File>,
    /// Names in arrival order.
    arrival: Vec<String>,
    /// Imports seen, with a file importing each; may hold files since received.
    imports: VecDeque<(String, String)>,
    total_bytes: usize,
}

struct File {
    bytes: Vec<u8>,
    imports: Vec<String>,
}

// === impl Files ===

impl Files {
    /// Adds encoded files; the first copy of a name wins.
    fn add(&mut self, encoded: Vec<Vec<u8>>) -> Result<(), ReflectionError> {
        for bytes in encoded {
            let header = FileHeader::decode(bytes.as_slice()).map_err(ReflectionError::Decode)?;
            let name = header
                .name
                .filter(|n| !n.is_empty())
                .ok_or(ReflectionError::NamelessFile)?;
            if self.by_name.contains_key(&name) {
                continue;
            }
            self.total_bytes += bytes.len();
            if self.by_name.len() >= MAX_FILES || self.total_bytes > MAX_SET_BYTES {
                return Err(ReflectionError::TooLarge);
            }
            self.imports.extend(
                header
                    .dependency
                    .iter()
                    .map(|import| (import.clone(), name.clone())),
            );
            self.arrival.push(name.clone());
            self.by_name.insert(
                name,
                File {
                    bytes,
                    imports: header.dependency,
                },
            );
        }
        Ok(())
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// An import not received yet, with a file importing it.
    fn next_missing(&mut self) -> Option<(String, String)> {
        while let Some((import, imported_by)) = self.imports.pop_front() {
            if !self.contains(&import) {
                return Some((import, imported_by));
            }
        }
        None
    }

    /// The encoded set, each file after its imports (depth-first post-order
    /// from the files in arrival order; iterative, so a long import chain
    /// cannot overflow the stack).
    fn into_set(self) -> Vec<u8> {
        let mut order: Vec<String> = Vec::with_capacity(self.by_name.len());
        {
            let mut visited: HashSet<&str> = HashSet::new();
            let mut stack: Vec<(&str, usize)> = Vec::new();
            for root in &self.arrival {
                if !visited.insert(root) {
                    continue;
                }
                stack.push((root, 0));
                while let Some(top) = stack.last_mut() {
                    let (name, next) = *top;
                    let imports = self
                        .by_name
                        .get(name)
                        .map_or(&[][..], |f| f.imports.as_slice());
                    match imports.get(next) {
                        Some(import) => {
                            top.1 += 1;
                            if self.by_name.contains_key(import) && visited.insert(import) {
                                stack.push((import, 0));
                            }
                        }
                        None => {
                            order.push(name.to_owned());
                            stack.pop();
                        }
                    }
                }
            }
        }
        let mut by_name = self.by_name;
        RawFileSet {
            file: order
                .iter()
                .filter_map(|name| by_name.remove(name))
                .map(|f| f.bytes)
                .collect(),
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests;
