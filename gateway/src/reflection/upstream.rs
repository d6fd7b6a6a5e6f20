//! Asking the backends what the registry cannot answer, so reflection
//! clients (grpcurl, grpcui, `buf curl`) work through the gateway without
//! any upload, as they do through a transparent proxy.
//!
//! Every question goes out as its own reflection call (one request, one
//! answer) through [`Cluster::send`], the way a client's call would: one
//! healthy endpoint picked by the cluster's policy, the downstream's
//! metadata (`authorization`, ...) forwarded. What is asked, and what is
//! shown, follows the routes as a call would, deny rules included:
//!
//! - `list_services`: every gRPC cluster a route (not denying this client)
//!   or a bound descriptor set leads to, concurrently; a listed service is
//!   shown only when the route its calls would take exists and lets this
//!   client through.
//! - a symbol (or an extension's message type): the cluster the routes pick
//!   for it as a service path (`/pkg.Svc/x`, or `/pkg.Svc/Method` for a
//!   method), then the other clusters in turn; a route denying this client
//!   makes the symbol unknown.
//! - a file name: the clusters in turn.
//!
//! A file answer is dropped when one of its files defines a service this
//! client is denied (every call to it, or all its methods): asking for a
//! message or a file name must not reveal what the routes hide.
//!
//! Failures (no reflection, unreachable, timeout) are logged at debug and
//! skipped: the registry's answer stands. Each question is bounded in time,
//! answer size and number of clusters asked.

use std::{
    collections::BTreeSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use http::{HeaderMap, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, combinators::UnsyncBoxBody};
use prost::Message as _;
use tonic::Status;
use tower::util::BoxCloneService;
use tracing::debug;

use balancer::{
    Cluster, Lease,
    body::{BoxError, UpstreamIncoming},
    cluster::ErrorChain,
    config::UpstreamProtocol,
    headers::{GRPC_TIMEOUT, strip_hop_by_hop},
};

use super::{
    client::{Transport, TransportError, ask_once},
    wire::{Answer, NOT_FOUND, Query},
};
use crate::proxy::Shared;

/// Time one backend gets to answer one question, connecting included.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one downstream question may spend asking backends in turn.
pub const QUESTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer message accepted from a backend.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Most clusters asked for one downstream question.
pub const MAX_CLUSTERS_ASKED: usize = 16;

/// The backends, as one downstream reflection call may reach them: the
/// routes and clusters, with the caller's request headers.
#[derive(Clone)]
pub struct Upstreams {
    shared: Arc<Shared>,
    /// The downstream request's headers: route matching and deny rules.
    headers: HeaderMap,
    /// What of them goes upstream: metadata, not transport headers.
    metadata: HeaderMap,
}

// === impl Upstreams ===

impl Upstreams {
    /// The backends reachable for a reflection call with these request
    /// headers (the listener's deny rules were checked by the caller).
    pub fn new(shared: Arc<Shared>, headers: &HeaderMap) -> Self {
        Self {
            shared,
            headers: headers.clone(),
            metadata: metadata(headers),
        }
    }

    /// Services the backends list and this client may call, sorted.
    pub(super) async fn list_services(&self) -> BTreeSet<String> {
        let clusters = self.grpc_clusters();
        let answers = join_all(clusters.iter().map(|c| self.ask(c, Query::ListServices))).await;
        answers
            .into_iter()
            .filter_map(|answer| match answer {
                Some(Answer::Services(names)) => Some(names),
                _ => None,
            })
            .flatten()
            .filter(|name| self.may_call(name))
            .collect()
    }

    /// The first backend answer to a file or extension question that is
    /// not an error; `None` when no backend knows (or this client may not).
    pub(super) async fn find(&self, query: &Query) -> Option<Answer> {
        let clusters = match query {
            Query::FileContainingSymbol(symbol)
            | Query::AllExtensionNumbersOfType(symbol)
            | Query::FileContainingExtension {
                containing_type: symbol,
                ..
            } => self.clusters_for_symbol(symbol)?,
            Query::FileByFilename(_) => self.grpc_clusters(),
            Query::ListServices => return None,
        };
        let in_turn = async {
            for cluster in &clusters {
                match self.ask(cluster, query.clone()).await {
                    Some(Answer::Files(files)) => {
                        if let Some(service) = self.denied_service_in(&files) {
                            debug!(%service, request = %query.describe(), "Reflection: answer defines a denied service");
                            return None;
                        }
                        return Some(Answer::Files(files));
                    }
                    Some(answer @ Answer::ExtensionNumbers { .. }) => return Some(answer),
                    _ => continue,
                }
            }
            None
        };
        tokio::time::timeout(QUESTION_TIMEOUT, in_turn)
            .await
            .unwrap_or_else(|_| {
                debug!(request = %query.describe(), "Reflection: backends too slow");
                None
            })
    }

    /// Asks one cluster; `None` when it cannot answer (logged at debug).
    async fn ask(&self, cluster: &Arc<Cluster>, query: Query) -> Option<Answer> {
        let transport = cluster_transport(cluster.clone(), self.metadata.clone());
        let describe = query.describe();
        let result = tokio::time::timeout(
            BACKEND_TIMEOUT,
            ask_once(transport, query, MAX_ANSWER_BYTES),
        )
        .await;
        match result {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(error)) => {
                debug!(cluster = %cluster.name(), request = %describe, error = %ErrorChain(&error), "Reflection: backend did not answer");
                None
            }
            Err(_) => {
                debug!(cluster = %cluster.name(), request = %describe, "Reflection: backend timed out");
                None
            }
        }
    }

    /// Every gRPC cluster a route that does not deny this client leads to,
    /// then those of bound descriptor sets; in config order, once each, at
    /// most [`MAX_CLUSTERS_ASKED`].
    fn grpc_clusters(&self) -> Vec<Arc<Cluster>> {
        let shared = &self.shared;
        let snapshot = shared.registry.snapshot();
        let routed = shared
            .routes
            .routes()
            .iter()
            .filter(|r| r.denied_by(&self.headers).is_none())
            .filter_map(|r| shared.clusters.get(&r.cluster));
        let bound = snapshot
            .sets()
            .filter_map(|s| s.cluster.as_deref())
            .filter_map(|name| shared.clusters.get_str(name));
        let mut out: Vec<Arc<Cluster>> = Vec::new();
        for cluster in routed.chain(bound) {
            if cluster.protocol() == UpstreamProtocol::Grpc
                && !out.iter().any(|c| c.name() == cluster.name())
            {
                out.push(cluster.clone());
            }
        }
        out.truncate(MAX_CLUSTERS_ASKED);
        out
    }

    /// Whether this client's call to `service` would be routed to a gRPC
    /// cluster and not denied.
    fn may_call(&self, service: &str) -> bool {
        let shared = &self.shared;
        shared
            .routes
            .route(&format!("/{service}/x"), &self.headers)
            .is_some_and(|r| {
                r.denied_by(&self.headers).is_none()
                    && shared
                        .clusters
                        .get(&r.cluster)
                        .is_some_and(|c| c.protocol() == UpstreamProtocol::Grpc)
            })
    }

    /// A service defined in `files` that this client is denied: the route
    /// for the service as a whole denies it, or those of all its methods do.
    fn denied_service_in(&self, files: &[Vec<u8>]) -> Option<String> {
        let denied = |path: &str| {
            self.shared
                .routes
                .route(path, &self.headers)
                .is_some_and(|r| r.denied_by(&self.headers).is_some())
        };
        files
            .iter()
            // Undecodable files are the client's to reject; they name nothing.
            .filter_map(|bytes| FileServices::decode(bytes.as_slice()).ok())
            .flat_map(|file| {
                let package = file.package.unwrap_or_default();
                file.service.into_iter().map(move |s| {
                    let name = s.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    (full, s.method)
                })
            })
            .find(|(service, methods)| {
                denied(&format!("/{service}/x"))
                    || (!methods.is_empty()
                        && methods.iter().all(|m| {
                            denied(&format!("/{service}/{}", m.name.as_deref().unwrap_or("")))
                        }))
            })
            .map(|(service, _)| service)
    }

    /// The clusters to ask about `symbol`: the one the routes pick for it
    /// (as a method `/pkg.Svc/Method`, then as a service `/pkg.Svc/x`)
    /// first, then the others; `None` when a route for it denies this
    /// client.
    fn clusters_for_symbol(&self, symbol: &str) -> Option<Vec<Arc<Cluster>>> {
        let shared = &self.shared;
        let as_method = symbol
            .rsplit_once('.')
            .map(|(service, method)| format!("/{service}/{method}"));
        let as_service = format!("/{symbol}/x");
        let mut first = None;
        for path in as_method.iter().chain([&as_service]) {
            if let Some(route) = shared.routes.route(path, &self.headers) {
                if route.denied_by(&self.headers).is_some() {
                    debug!(route = %route.name, "Reflection: symbol denied by route rule");
                    return None;
                }
                first = first.or_else(|| shared.clusters.get(&route.cluster).cloned());
            }
        }
        let mut out = self.grpc_clusters();
        if let Some(first) = first.filter(|c| c.protocol() == UpstreamProtocol::Grpc) {
            out.retain(|c| c.name() != first.name());
            out.insert(0, first);
            out.truncate(MAX_CLUSTERS_ASKED);
        }
        Some(out)
    }
}

/// What [`Upstreams::denied_service_in`] reads of a `FileDescriptorProto`;
/// the rest of the bytes is skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct FileServices {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<NamedWithMethods>,
}

/// A `ServiceDescriptorProto`'s name and methods (a `MethodDescriptorProto`
/// has its name at the same tag, and no field 2 of this type).
#[derive(Clone, PartialEq, prost::Message)]
struct NamedWithMethods {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Named>,
}

/// A descriptor's name (field 1).
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// Merges the backends' services into the registry's answer, without
/// duplicates, sorted.
pub(super) fn merge_services(own: Vec<String>, backends: BTreeSet<String>) -> Vec<String> {
    let mut all: BTreeSet<String> = own.into_iter().collect();
    all.extend(backends);
    all.into_iter().collect()
}

/// Whether the registry's answer leaves the question open.
pub(super) fn is_not_found(answer: &Answer) -> bool {
    matches!(answer, Answer::Error { code, .. } if *code == NOT_FOUND)
}

/// The downstream headers that go upstream with a reflection question:
/// metadata such as `authorization`, not transport headers (`te`,
/// `content-type`, `grpc-*`, ...), which the client sets itself.
fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    strip_hop_by_hop(&mut out);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::HOST,
        header::TE,
        header::USER_AGENT,
    ] {
        out.remove(name);
    }
    let transport: Vec<_> = out
        .keys()
        .filter(|k| k.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for name in transport {
        out.remove(name);
    }
    out
}

/// One cluster as a [`Transport`]: requests go through [`Cluster::send`]
/// with `metadata` and a `grpc-timeout` of [`BACKEND_TIMEOUT`]; the
/// endpoint's slot is held until the response body ends.
fn cluster_transport(cluster: Arc<Cluster>, metadata: HeaderMap) -> Transport {
    BoxCloneService::new(tower::service_fn(
        move |mut req: http::Request<tonic::body::Body>| {
            let cluster = cluster.clone();
            for (name, value) in &metadata {
                if !req.headers().contains_key(name) {
                    req.headers_mut().append(name, value.clone());
                }
            }
            req.headers_mut().insert(
                GRPC_TIMEOUT,
                balancer::grpc::timeout::encode(BACKEND_TIMEOUT),
            );
            let fut: BoxFuture<'static, Result<_, TransportError>> = Box::pin(async move {
                let up = cluster
                    .send(req.map(balancer::body::boxed))
                    .await
                    .map_err(|e| {
                        // tonic reads the status from the source chain.
                        TransportError(Box::new(Status::unavailable(ErrorChain(&e).to_string())))
                    })?;
                let lease = up.lease;
                Ok(up
                    .response
                    .map(|inner| -> UnsyncBoxBody<Bytes, TransportError> {
                        LeasedBody {
                            inner,
                            _lease: lease,
                        }
                        .map_err(TransportError)
                        .boxed_unsync()
                    }))
            });
            fut
        },
    ))
}

/// A response body holding its endpoint slot until dropped.
struct LeasedBody {
    inner: UpstreamIncoming,
    _lease: Lease,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_metadata_goes_upstream() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer x"),
            ("x-tenant", "a"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "1S"),
            ("grpc-accept-encoding", "gzip"),
            ("user-agent", "grpcurl"),
            ("connection", "close"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        let out = metadata(&headers);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "x-tenant"]);
    }

    #[test]
    fn reads_service_and_method_names_of_a_file() {
        let pool = prost_reflect::DescriptorPool::decode(sample_services::FILE_DESCRIPTOR_SET)
            .expect("sample set decodes");
        let file = pool
            .get_file_by_name("echo.proto")
            .expect("echo.proto")
            .encode_to_vec();
        let read = FileServices::decode(file.as_slice()).expect("decodes");
        assert_eq!(read.package.as_deref(), Some("sample.echo.v1"));
        assert_eq!(read.service.len(), 1);
        assert_eq!(read.service[0].name.as_deref(), Some("Echo"));
        assert!(
            read.service[0]
                .method
                .iter()
                .any(|m| m.name.as_deref() == Some("Unary"))
        );
    }

    #[test]
    fn merged_lists_have_no_duplicates() {
        let own = vec!["b.B".to_owned(), "a.A".to_owned()];
        let backends = BTreeSet::from(["a.A".to_owned(), "c.C".to_owned()]);
        assert_eq!(merge_services(own, backends), ["a.A", "b.B", "c.C"]);
    }
}
