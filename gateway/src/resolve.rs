//! Resolve once: from the classified request head to everything the rest of
//! the pipeline needs, decided in one place: which adapter serves it (the
//! [`Target`]: native gRPC, JSON/REST, plain HTTP, or reflection answered
//! here), the gRPC method from one registry snapshot, the one matching route
//! (its policy: deny rules, timeouts), and the cluster. The listener's and
//! the route's deny rules are applied here for every request, bound or not.

use std::sync::Arc;

use http::{HeaderMap, Method, request::Parts};
use tracing::debug;

use balancer::{Cluster, Route, RouteTable, config::UpstreamProtocol};
use descriptors::{HttpMatch, MethodInfo, Snapshot};

use crate::{
    access_log::LogRecord, classify::Protocol, config::ReflectionMode, error::GatewayError,
    proxy::ConnCtx,
};

/// Which adapter serves a request.
pub(crate) enum Target {
    /// Native gRPC, passed through frame by frame.
    Grpc,
    /// gRPC server reflection, answered by the gateway (`merge`: asking the
    /// backends what the registry lacks).
    Reflection {
        /// Whether backends are asked too.
        merge: bool,
    },
    /// JSON/REST, transcoded to a gRPC call of `method`.
    Json {
        /// The registry snapshot the method came from (the reply is
        /// rendered with the same descriptors).
        snapshot: Arc<Snapshot>,
        /// The method.
        method: Arc<MethodInfo>,
        /// The `google.api.http` rule that matched; none for the default
        /// `POST /pkg.Service/Method` route.
        rule: Option<HttpMatch>,
    },
    /// Plain HTTP to an `http1`/`http2` cluster, as it is.
    Plain,
}

/// A request resolved: its adapter, route and cluster.
pub(crate) struct Resolved<'a> {
    /// The adapter.
    pub target: Target,
    /// The first matching route (its timeouts apply), if any.
    pub route: Option<&'a Route>,
    /// Where it goes; none for what the gateway answers itself.
    pub cluster: Option<&'a Arc<Cluster>>,
}

/// Resolves a request head of `protocol`; the chosen cluster goes into the
/// log record.
pub(crate) fn resolve<'a>(
    conn: &'a ConnCtx,
    protocol: Protocol,
    head: &Parts,
    rec: &mut LogRecord,
) -> Result<Resolved<'a>, GatewayError> {
    let listener = &conn.listener;
    let path = head.uri.path();
    // One registry snapshot for the whole resolution.
    let snapshot = conn.shared.registry.snapshot();
    if matches!(protocol, Protocol::Grpc | Protocol::GrpcWeb { .. }) {
        // Named before any refusal, so a refused call is counted under
        // its method too.
        rec.grpc_method = grpc_method(conn, &snapshot, path);
    }
    if let Some(m) = listener
        .deny_unless
        .iter()
        .find(|m| !m.matches(&head.headers))
    {
        debug!(header = %m.name(), "Denied by listener rule");
        return Err(GatewayError::Denied);
    }
    match protocol {
        Protocol::GrpcWeb { .. } => Err(GatewayError::GrpcWebDisabled),
        Protocol::Grpc => {
            if head.version != http::Version::HTTP_2 {
                return Err(GatewayError::GrpcNeedsHttp2);
            }
            if listener.reflection != ReflectionMode::Passthrough
                && crate::reflection::is_reflection_path(path)
            {
                rec.cluster = Some("<gateway>".into());
                return Ok(Resolved {
                    target: Target::Reflection {
                        merge: listener.reflection == ReflectionMode::Merge,
                    },
                    route: None,
                    cluster: None,
                });
            }
            let (route, cluster) =
                pick(conn, path, &head.headers, snapshot.cluster_for(path), rec)?;
            Ok(Resolved {
                target: Target::Grpc,
                route,
                cluster: Some(cluster),
            })
        }
        Protocol::Http => {
            let rule = snapshot.match_http(&head.method, path);
            let method = match &rule {
                Some(m) => Some(m.method.clone()),
                None if head.method == Method::POST => snapshot.method(path).cloned(),
                None => None,
            };
            if let Some(method) = method {
                rec.grpc_method = Some(method.grpc_path.as_str().into());
                let binding = snapshot.cluster_for(&method.grpc_path);
                let (route, cluster) = pick(conn, &method.grpc_path, &head.headers, binding, rec)?;
                return Ok(Resolved {
                    target: Target::Json {
                        snapshot: snapshot.clone(),
                        method,
                        rule,
                    },
                    route,
                    cluster: Some(cluster),
                });
            }
            // No registered method takes it: a plain HTTP cluster may.
            let plain = conn.shared.routes.route(path, &head.headers).filter(|r| {
                conn.shared
                    .clusters
                    .get(&r.cluster)
                    .is_some_and(|c| c.protocol() != UpstreamProtocol::Grpc)
            });
            match plain {
                Some(_) => {
                    let (route, cluster) = pick(conn, path, &head.headers, None, rec)?;
                    Ok(Resolved {
                        target: Target::Plain,
                        route,
                        cluster: Some(cluster),
                    })
                }
                None => Err(GatewayError::NoHttpRoute {
                    method: head.method.to_string(),
                    path: path.to_string(),
                }),
            }
        }
    }
}

/// The route and cluster for `path`, after the route's deny rules. The
/// first matching route's policy (deny rules, timeouts) applies to every
/// request, bound or not. A method whose descriptor set is bound to a
/// cluster (`?cluster=` on upload, or fetched by reflection) goes there
/// unless a route names its path for another cluster: bindings that would
/// do that are refused when registered ([`check_binding`]), and should one
/// slip through, the routes win.
fn pick<'a>(
    conn: &'a ConnCtx,
    path: &str,
    headers: &HeaderMap,
    binding: Option<&str>,
    rec: &mut LogRecord,
) -> Result<(Option<&'a Route>, &'a Arc<Cluster>), GatewayError> {
    let shared = &conn.shared;
    let route = shared.routes.route(path, headers);
    rec.route = route.map(|r| r.name.clone());
    if let Some(route) = route
        && let Some(m) = route.denied_by(headers)
    {
        debug!(route = %route.name, header = %m.name(), "Denied by route rule");
        return Err(GatewayError::Denied);
    }
    let bound = binding
        .filter(|_| route.is_none_or(|r| !r.is_path_specific()))
        .and_then(|b| shared.clusters.get_str(b));
    let cluster = match (bound, route) {
        (Some(cluster), _) => cluster,
        (None, Some(route)) => shared
            .clusters
            .get(&route.cluster)
            .ok_or(GatewayError::Internal)?,
        (None, None) => {
            return Err(GatewayError::UnknownMethod {
                path: path.to_string(),
            });
        }
    };
    rec.cluster = Some(cluster.name().as_arc());
    Ok((route, cluster))
}

/// The gRPC method of `path` for the log record and the metrics: only a
/// method registered in the descriptor registry or named by a route (so a
/// client cannot make up label values).
fn grpc_method(conn: &ConnCtx, snapshot: &Snapshot, path: &str) -> Option<Arc<str>> {
    let registered = snapshot.method(path).is_some();
    (registered || conn.shared.routes.names_method(path)).then(|| path.into())
}

/// Refuses a descriptor set bound to `cluster` when a route names one of
/// its methods for another cluster: a binding (an upload's `?cluster=`, or
/// a reflection-fed set) must not take traffic away from the routes.
pub(crate) fn check_binding(
    routes: &RouteTable,
    cluster: &str,
    methods: &[String],
) -> Result<(), String> {
    for m in methods {
        if let Some(route) = routes.claimed_elsewhere(m, cluster) {
            return Err(format!(
                "method {m} is routed to cluster `{}` by route `{}`; it cannot be bound to cluster `{cluster}` (change the route, or upload the set without a cluster)",
                route.cluster, route.name
            ));
        }
    }
    Ok(())
}
