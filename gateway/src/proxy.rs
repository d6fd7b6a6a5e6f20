//! The request pipeline, one orchestrator for every entry protocol:
//! edge (forwarding headers, path normalization) -> classify -> CORS
//! preflight -> resolve once (method, route, policy, cluster) -> the
//! protocol adapter (native gRPC, JSON/REST, plain HTTP; reflection answered
//! here) -> respond. Everything the gateway answers itself is a
//! [`GatewayError`], rendered by `respond` from the one error table, and
//! logged here; adapters log the exchanges they forward when they end.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::linger::FrontBody;
use http::{HeaderName, Method, Request, Response, header};
use tracing::debug;

use balancer::{Clusters, HeaderMatch, RouteTable};
use descriptors::Registry;

use crate::{
    access_log::{AccessLog, LogRecord, Phase, capture},
    adapter,
    classify::{Protocol, classify},
    cors::Cors,
    error::Termination,
    forward::{self, Relay},
    resolve::{Target, resolve},
    respond::{GatewayError, ResponseBody},
    transcode::{self, TranscodeSettings},
};

pub(crate) use crate::resolve::check_binding;

/// State shared by every connection of every listener.
pub struct Shared {
    /// Routing rules.
    pub routes: RouteTable,
    /// Backend clusters.
    pub clusters: Clusters,
    /// Access log.
    pub access_log: AccessLog,
    /// Registered descriptor sets (JSON transcoding).
    pub registry: Arc<Registry>,
    /// JSON transcoding settings.
    pub transcode: TranscodeSettings,
    /// CORS policy for HTTP callers, if any.
    pub cors: Option<Cors>,
    /// Buffered-bytes budget and body read timeouts.
    pub limits: crate::limits::Limits,
    /// Request tracing, when on.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
}

/// Per-listener policy.
pub struct ListenerCtx {
    /// Name in logs.
    pub name: Arc<str>,
    /// Conditions every request must meet.
    pub deny_unless: Vec<HeaderMatch>,
    /// Request headers to capture.
    pub capture_request: Vec<(HeaderName, usize)>,
    /// Response headers to capture.
    pub capture_response: Vec<(HeaderName, usize)>,
    /// Log at the response head too.
    pub log_at_start: bool,
    /// Whether the listener speaks TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// Peers whose forwarding headers are kept.
    pub trusted_proxies: Vec<crate::edge::IpNet>,
    /// Merge repeated slashes in HTTP paths.
    pub merge_slashes: bool,
    /// Escaped slashes in HTTP paths.
    pub escaped_slashes: crate::edge::EscapedSlashes,
    /// Who answers gRPC server reflection.
    pub reflection: crate::config::ReflectionMode,
}

/// Per-connection context.
pub(crate) struct ConnCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The listener.
    pub listener: Arc<ListenerCtx>,
    /// Downstream address.
    pub peer: SocketAddr,
    /// Its forwarding headers, built once.
    pub forwarded: crate::edge::PeerHeaders,
}

/// Handles one request; never fails (errors become responses).
pub(crate) async fn handle(
    conn: Arc<ConnCtx>,
    mut req: Request<FrontBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let listener = &conn.listener;
    conn.forwarded
        .apply(req.headers_mut(), &listener.trusted_proxies);
    let trace = conn
        .shared
        .tracer
        .as_ref()
        .map(|t| t.start(req.headers_mut()));
    let protocol = classify(req.headers());
    let log = &conn.shared.access_log;
    log.debug_headers("request headers", req.headers());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut rec = LogRecord {
        client: conn.peer,
        accepted: SystemTime::now(),
        listener: conn.listener.name.clone(),
        cluster: None,
        server: None,
        queue: Duration::ZERO,
        connect: None,
        response: None,
        total: Duration::ZERO,
        status: 0,
        grpc_status: None,
        bytes: 0,
        request_captures: capture(req.headers(), &conn.listener.capture_request),
        response_captures: Vec::new(),
        termination: Termination::Normal,
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        version: req.version(),
        protocol: protocol.as_str(),
        retries: 0,
        server_in_flight: 0,
        cluster_queued: 0,
        route: None,
        grpc_method: None,
        counts: Arc::default(),
        trace,
    };
    // Boxed: the pipeline's state (several KiB) is allocated once instead of
    // being copied with this future each time hyper and tokio move it.
    let result = Box::pin(pipeline(&conn, protocol, req, &mut rec, started)).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            debug!(error = ?err, "Answered by the gateway");
            rec.termination = err.termination();
            rec.grpc_status = Some(err.code() as i32);
            let resp = err.into_response(protocol);
            rec.status = resp.status().as_u16();
            rec.total = started.elapsed();
            log.debug_headers("response headers", resp.headers());
            log.emit(&rec, Phase::End);
            resp
        }
    };
    if protocol == Protocol::Http
        && let (Some(cors), Some(origin)) = (&conn.shared.cors, origin)
    {
        cors.apply(&origin, resp.headers_mut());
    }
    resp
}

/// The stages after classification; see the module docs.
async fn pipeline(
    conn: &Arc<ConnCtx>,
    protocol: Protocol,
    mut req: Request<FrontBody>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    let listener = &conn.listener;
    if protocol == Protocol::Http {
        // Routes and rules see the path the backend will.
        match crate::edge::normalize_path(
            req.uri().path(),
            listener.merge_slashes,
            listener.escaped_slashes,
        ) {
            Ok(None) => {}
            Ok(Some(path)) => {
                if let Some(uri) = crate::edge::with_path(req.uri(), &path) {
                    *req.uri_mut() = uri;
                }
            }
            Err(_) => return Err(GatewayError::EscapedSlash),
        }
        if let Some(cors) = &conn.shared.cors
            && req.method() == Method::OPTIONS
            && let Some(resp) = cors.preflight(req.headers())
        {
            rec.status = resp.status().as_u16();
            rec.total = started.elapsed();
            conn.shared.access_log.emit(rec, Phase::End);
            return Ok(resp);
        }
    }
    let (head, body) = req.into_parts();
    let resolved = resolve(conn, protocol, &head, rec)?;
    let req = Request::from_parts(head, body);
    let route = resolved.route;
    match (resolved.target, resolved.cluster) {
        (Target::Reflection { merge }, _) => {
            let upstreams = merge
                .then(|| crate::reflection::Upstreams::new(conn.shared.clone(), req.headers()));
            let resp = Box::pin(crate::reflection::serve(
                conn.shared.registry.clone(),
                upstreams,
                req,
            ))
            .await;
            rec.status = resp.status().as_u16();
            rec.total = started.elapsed();
            conn.shared.access_log.emit(rec, Phase::End);
            Ok(resp)
        }
        (Target::Grpc, Some(cluster)) => {
            let out = adapter::grpc::outbound(req, route, started, rec.counts.clone());
            forward::relay(conn, cluster, out, Relay::Grpc, rec, started).await
        }
        (Target::Plain, Some(cluster)) => {
            let out = adapter::plain::outbound(
                req,
                route,
                cluster.protocol(),
                started,
                rec.counts.clone(),
            );
            Box::pin(forward::relay(
                conn,
                cluster,
                out,
                Relay::Http,
                rec,
                started,
            ))
            .await
        }
        (
            Target::Json {
                snapshot,
                method,
                rule,
            },
            Some(cluster),
        ) => {
            let call = transcode::JsonCall {
                route,
                cluster,
                snapshot,
                method,
                rule,
            };
            Box::pin(transcode::forward_json(conn, call, req, rec, started)).await
        }
        (_, None) => Err(GatewayError::Internal),
    }
}
