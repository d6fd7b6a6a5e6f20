//! The reflection service on the gateway's front: tonic-reflection's
//! generated `ServerReflectionServer` (v1 and v1alpha) around our own
//! implementation, which answers from the registry's current snapshot and,
//! given [`Upstreams`], merges in what the backends answer: their services
//! join the list, and a file or symbol the registry does not know is asked
//! of them.
//!
//! Each request message on a stream takes a fresh snapshot, so a set uploaded
//! while a client (e.g. grpcurl) holds a stream open shows up at once. Like
//! grpc-go, a file answer carries the requested file first, then all of its
//! transitive imports. Unknown files and symbols are an `ErrorResponse`
//! (`NOT_FOUND`) on the stream, which stays open.

use std::{
    collections::{BTreeSet, HashSet, VecDeque},
    pin::Pin,
    sync::Arc,
};

use bytes::Bytes;
use descriptors::{Registry, Snapshot};
use futures_util::{Stream, StreamExt as _};
use http_body_util::BodyExt as _;
use prost_reflect::{DescriptorPool, FileDescriptor};
use tonic::Status;
use tonic_reflection::pb::{v1, v1alpha};
use tower::ServiceExt as _;
use tracing::{debug, error};

use balancer::body::BoxError;

use super::{
    upstream::{Upstreams, is_not_found, merge_services},
    wire::{Answer, INTERNAL, INVALID_ARGUMENT, Query, V1_SERVICE, V1ALPHA_SERVICE},
};
use crate::respond::ResponseBody;

/// Path prefix of the v1 service (it has one method, `ServerReflectionInfo`).
const V1_PREFIX: &str = "/grpc.reflection.v1.ServerReflection/";
/// Path prefix of the v1alpha service.
const V1ALPHA_PREFIX: &str = "/grpc.reflection.v1alpha.ServerReflection/";
/// Largest request message we decode: requests are a name or two.
const MAX_REQUEST_MESSAGE_BYTES: usize = 64 * 1024;

/// Whether this gRPC path (`/pkg.Service/Method`) belongs to the reflection
/// service, v1 or v1alpha. An unknown method under it is answered
/// `UNIMPLEMENTED` by [`serve`], not routed upstream.
pub fn is_reflection_path(path: &str) -> bool {
    path.starts_with(V1_PREFIX) || path.starts_with(V1ALPHA_PREFIX)
}

/// Serves one reflection call (a bidirectional stream) from the registry,
/// and from the backends when `upstreams` is given.
///
/// The answer streams as the client asks; every request message is answered
/// from the registry's snapshot at that moment, then (for a list, or what
/// the registry does not know) from the backends, one request at a time.
/// Errors on the stream itself (a malformed frame, the client going away)
/// end it with a gRPC status in the trailers; this function always returns
/// a response.
pub async fn serve<B>(
    registry: Arc<Registry>,
    upstreams: Option<Upstreams>,
    req: http::Request<B>,
) -> http::Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    let reflection = Reflection::new(registry, upstreams.map(Arc::new));
    // Both generated servers answer UNIMPLEMENTED for a path they don't know.
    let result = if req.uri().path().starts_with(V1ALPHA_PREFIX) {
        v1alpha::server_reflection_server::ServerReflectionServer::new(reflection)
            .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
            .oneshot(req)
            .await
    } else {
        v1::server_reflection_server::ServerReflectionServer::new(reflection)
            .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
            .oneshot(req)
            .await
    };
    let response = match result {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.map(|body| {
        body.map_err(|status| Box::new(status) as BoxError)
            .boxed_unsync()
    })
}

/// Response stream of one reflection call.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Implements both versions of the service over the registry.
#[derive(Clone)]
struct Reflection {
    registry: Arc<Registry>,
    /// `grpc/reflection/v1{,alpha}/reflection.proto`: the service's own
    /// descriptors, consulted after the registry.
    own: DescriptorPool,
    /// The backends, asked after both; none = the registry alone.
    upstreams: Option<Arc<Upstreams>>,
}

// === impl Reflection ===

impl Reflection {
    fn new(registry: Arc<Registry>, upstreams: Option<Arc<Upstreams>>) -> Self {
        Self {
            registry,
            own: own_pool(),
            upstreams,
        }
    }

    /// Answers one request from the current snapshot (the unit tests'
    /// entry; the server's is [`Reflection::answer_off_runtime`]).
    #[cfg(test)]
    fn answer(&self, query: Query) -> Answer {
        answer(&self.registry.snapshot(), &self.own, query)
    }

    /// [`Reflection::answer`] on a blocking thread: it may build the
    /// registry's descriptor pool (about 40 ms per 1,000 methods) when it is
    /// not cached.
    async fn answer_off_runtime(&self, query: Query) -> Answer {
        let snapshot = self.registry.snapshot();
        let own = self.own.clone();
        tokio::task::spawn_blocking(move || answer(&snapshot, &own, query))
            .await
            .unwrap_or_else(|_| Answer::Error {
                code: INTERNAL,
                message: "reflection lookup failed".to_owned(),
            })
    }

    /// Answers one request from the current snapshot, then the backends.
    async fn answer_merged(&self, query: Query) -> Answer {
        debug!(request = %query.describe(), "Reflection request");
        let own = self.answer_off_runtime(query.clone()).await;
        let Some(upstreams) = &self.upstreams else {
            return own;
        };
        match own {
            Answer::Services(names) => {
                Answer::Services(merge_services(names, upstreams.list_services().await))
            }
            own if is_not_found(&own) => upstreams.find(&query).await.unwrap_or(own),
            own => own,
        }
    }
}

/// The same implementation for both versions; only the message types differ.
macro_rules! impl_server {
    ($($pb:ident),+) => {$(
        #[tonic::async_trait]
        impl $pb::server_reflection_server::ServerReflection for Reflection {
            type ServerReflectionInfoStream = ResponseStream<$pb::ServerReflectionResponse>;

            async fn server_reflection_info(
                &self,
                request: tonic::Request<tonic::Streaming<$pb::ServerReflectionRequest>>,
            ) -> Result<tonic::Response<Self::ServerReflectionInfoStream>, Status> {
                let this = self.clone();
                // Answered in the response stream's own poll, one request
                // at a time: no task, no channel, and the client's flow
                // control paces us; a client going away drops the
                // questions to the backends.
                let responses = request.into_inner().then(move |req| {
                    let this = this.clone();
                    async move {
                        let req = req?;
                        let answer = match req.message_request.clone() {
                            Some(m) => this.answer_merged(Query::from(m)).await,
                            None => Answer::Error {
                                code: INVALID_ARGUMENT,
                                message: "message_request is required".to_owned(),
                            },
                        };
                        Ok($pb::ServerReflectionResponse {
                            valid_host: req.host.clone(),
                            original_request: Some(req),
                            message_response: Some(answer.into()),
                        })
                    }
                });
                Ok(tonic::Response::new(Box::pin(responses)))
            }
        }
    )+};
}

impl_server!(v1, v1alpha);

/// The reflection service's own descriptors (both versions).
fn own_pool() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    for set in [v1::FILE_DESCRIPTOR_SET, v1alpha::FILE_DESCRIPTOR_SET] {
        if let Err(error) = pool.decode_file_descriptor_set(set) {
            // A bug in tonic-reflection's build: we serve without them.
            error!(%error, "Reflection's own descriptors do not decode");
        }
    }
    pool
}

/// Answers `query` from `snapshot`, then from `own`.
fn answer(snapshot: &Snapshot, own: &DescriptorPool, query: Query) -> Answer {
    // Built from the sets' bytes if not cached (dropped again when idle).
    let pool = snapshot.pool();
    let pools = [&*pool, own];
    match query {
        Query::ListServices => Answer::Services(list_services(snapshot)),
        Query::FileByFilename(name) => match pools.iter().find_map(|p| p.get_file_by_name(&name)) {
            Some(file) => Answer::Files(with_imports(&file)),
            None => Answer::not_found(format!("file {name} not found")),
        },
        Query::FileContainingSymbol(symbol) => {
            match pools
                .iter()
                .find_map(|p| file_containing_symbol(p, &symbol))
            {
                Some(file) => Answer::Files(with_imports(&file)),
                None => Answer::not_found(format!("symbol {symbol} not found")),
            }
        }
        Query::FileContainingExtension {
            containing_type,
            number,
        } => {
            let extension = pools.iter().find_map(|p| {
                let number = u32::try_from(number).ok()?;
                p.get_message_by_name(&containing_type)?
                    .get_extension(number)
            });
            match extension {
                Some(e) => Answer::Files(with_imports(&e.parent_file())),
                None => {
                    Answer::not_found(format!("extension {number} of {containing_type} not found"))
                }
            }
        }
        Query::AllExtensionNumbersOfType(name) => {
            match pools.iter().find_map(|p| p.get_message_by_name(&name)) {
                Some(message) => Answer::ExtensionNumbers {
                    numbers: message
                        .extensions()
                        .filter_map(|e| i32::try_from(e.number()).ok())
                        .collect(),
                    base_type_name: name,
                },
                None => Answer::not_found(format!("type {name} not found")),
            }
        }
    }
}

/// Every service of the registered sets (the bundled protos define none),
/// plus the reflection service itself; sorted, without duplicates.
fn list_services(snapshot: &Snapshot) -> Vec<String> {
    let mut names: BTreeSet<String> = snapshot
        .sets()
        .flat_map(|set| set.services.iter().cloned())
        .collect();
    names.insert(V1_SERVICE.to_owned());
    names.insert(V1ALPHA_SERVICE.to_owned());
    names.into_iter().collect()
}

/// `file` encoded, then each of its transitive imports once (breadth first),
/// as the pool holds them: with extension options such as `google.api.http`.
fn with_imports(file: &FileDescriptor) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([file.name().to_owned()]);
    let mut queue = VecDeque::from([file.clone()]);
    while let Some(f) = queue.pop_front() {
        out.push(f.encode_to_vec());
        for dependency in f.dependencies() {
            if seen.insert(dependency.name().to_owned()) {
                queue.push_back(dependency);
            }
        }
    }
    out
}

/// The file defining `symbol`: a service, method, message, field, oneof,
/// enum, enum value or extension, by full name. Enum values are found both
/// where protobuf scopes them (beside their enum: `pkg.VALUE`) and under their
/// enum (`pkg.Enum.VALUE`, as tonic-reflection lists them).
fn file_containing_symbol(pool: &DescriptorPool, symbol: &str) -> Option<FileDescriptor> {
    if let Some(s) = pool.get_service_by_name(symbol) {
        return Some(s.parent_file());
    }
    if let Some(m) = pool.get_message_by_name(symbol) {
        return Some(m.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Some(e.parent_file());
    }
    if let Some(e) = pool.get_extension_by_name(symbol) {
        return Some(e.parent_file());
    }
    // A top-level name in a file without a package has no parent.
    let (parent, child) = symbol.rsplit_once('.').unwrap_or(("", symbol));
    if let Some(s) = pool.get_service_by_name(parent)
        && s.methods().any(|m| m.name() == child)
    {
        return Some(s.parent_file());
    }
    if let Some(m) = pool.get_message_by_name(parent)
        && (m.get_field_by_name(child).is_some()
            || m.oneofs().any(|o| o.name() == child)
            || m.child_enums()
                .any(|e| e.get_value_by_name(child).is_some()))
    {
        return Some(m.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(parent)
        && e.get_value_by_name(child).is_some()
    {
        return Some(e.parent_file());
    }
    // A value of a top-level enum, scoped by its package.
    pool.files().find(|f| {
        f.package_name() == parent && f.enums().any(|e| e.get_value_by_name(child).is_some())
    })
}

#[cfg(test)]
mod tests;
