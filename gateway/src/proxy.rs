//! The request service: classify -> deny rules -> route -> forward through
//! the cluster -> stream the response back, frame by frame, with trailers.
//! JSON requests take the same route selection and cluster after
//! `transcode` has turned them into gRPC calls. Everything the gateway
//! answers itself goes through `respond`.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;
use tracing::debug;

use balancer::{
    Cluster, Clusters, HeaderMatch, Lease, Route, RouteTable, UpstreamResponse,
    body::BoxError,
    body::UpstreamBody,
    cluster::ErrorChain,
    headers::{GRPC_TIMEOUT, strip_hop_by_hop},
};
use descriptors::Registry;

use crate::{
    access_log::{AccessLog, LogGuard, LogRecord, Phase, capture},
    classify::{Protocol, classify},
    cors::Cors,
    error::Termination,
    grpc_timeout,
    respond::{GatewayError, ResponseBody},
    transcode::{self, TranscodeSettings},
};

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
pub struct ConnCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The listener.
    pub listener: Arc<ListenerCtx>,
    /// Downstream address.
    pub peer: SocketAddr,
}

/// Handles one request; never fails (errors become responses).
pub async fn handle(conn: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let listener = &conn.listener;
    crate::edge::set_forwarded(
        req.headers_mut(),
        conn.peer,
        &listener.trusted_proxies,
        listener.tls,
    );
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
    };
    let result = match protocol {
        Protocol::Grpc => forward_grpc(&conn, req, &mut rec, started).await,
        Protocol::GrpcWeb { .. } => Err(GatewayError::GrpcWebDisabled),
        Protocol::Http => {
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
                Err(_) => {
                    let e = GatewayError::EscapedSlash;
                    rec.termination = e.termination();
                    let resp = e.into_response(protocol);
                    rec.status = resp.status().as_u16();
                    rec.total = started.elapsed();
                    log.emit(&rec, Phase::End);
                    return resp;
                }
            }
            if let Some(cors) = &conn.shared.cors
                && req.method() == Method::OPTIONS
                && let Some(resp) = cors.preflight(req.headers())
            {
                rec.status = resp.status().as_u16();
                rec.total = started.elapsed();
                log.emit(&rec, Phase::End);
                return resp;
            }
            if is_plain_http(&conn, &req) {
                Box::pin(forward_plain(&conn, req, &mut rec, started)).await
            } else {
                Box::pin(transcode::forward_json(&conn, req, &mut rec, started)).await
            }
        }
    };
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

/// The route and cluster for a gRPC method path, after deny rules. The
/// first matching route's policy (deny rules, timeouts) applies to every
/// request, bound or not. A method whose descriptor set is bound to a
/// cluster (`?cluster=` on upload, or fetched by reflection) goes there
/// unless a route names its path for another cluster: bindings that would
/// do that are refused when registered (`check_binding`), and should one
/// slip through, the routes win.
pub(crate) fn select_route<'a>(
    conn: &'a ConnCtx,
    grpc_path: &str,
    headers: &HeaderMap,
    binding: Option<&str>,
    rec: &mut LogRecord,
) -> Result<(Option<&'a Route>, &'a Arc<Cluster>), GatewayError> {
    if let Some(m) = conn
        .listener
        .deny_unless
        .iter()
        .find(|m| !m.matches(headers))
    {
        debug!(header = %m.name(), "Denied by listener rule");
        return Err(GatewayError::Denied);
    }
    let shared = &conn.shared;
    let route = shared.routes.route(grpc_path, headers);
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
        (None, Some(route)) => match shared.clusters.get(&route.cluster) {
            Some(cluster) => cluster,
            None => return Err(GatewayError::Internal),
        },
        (None, None) => {
            return Err(GatewayError::UnknownMethod {
                path: grpc_path.to_string(),
            });
        }
    };
    rec.cluster = Some(cluster.name().as_arc());
    Ok((route, cluster))
}

/// Refuses a descriptor set bound to `cluster` when a route names one of
/// its methods for another cluster: a binding (an upload's `?cluster=`, or
/// a reflection-fed set) must not take traffic away from the routes.
pub fn check_binding(routes: &RouteTable, cluster: &str, methods: &[String]) -> Result<(), String> {
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

/// The call's deadline: the request's `grpc-timeout` (or `default`), capped
/// by the route's timeout; rewrites the header to what goes upstream.
pub(crate) fn deadline(
    headers: &mut HeaderMap,
    route: Option<&Route>,
    default: Option<Duration>,
    started: Instant,
) -> Option<tokio::time::Instant> {
    let client = headers
        .get(GRPC_TIMEOUT)
        .and_then(grpc_timeout::parse)
        .or(default);
    let timeout = match (client, route.and_then(|r| r.timeout)) {
        (Some(c), Some(r)) => Some(c.min(r)),
        (c, r) => c.or(r),
    };
    if let Some(t) = timeout {
        // What is left after the time already spent here.
        headers.insert(
            GRPC_TIMEOUT,
            grpc_timeout::encode(t.saturating_sub(started.elapsed())),
        );
    }
    timeout.map(|t| tokio::time::Instant::from_std(started + t))
}

/// Sends through the cluster within the deadline.
pub(crate) async fn send(
    cluster: &Arc<Cluster>,
    req: Request<UpstreamBody>,
    deadline: Option<tokio::time::Instant>,
) -> Result<UpstreamResponse, GatewayError> {
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d, cluster.send(req)).await {
            Ok(r) => r,
            Err(_) => {
                return Err(GatewayError::Deadline);
            }
        },
        None => cluster.send(req).await,
    };
    result.map_err(|e| {
        debug!(cluster = %cluster.name(), error = %ErrorChain(&e), "Upstream request failed");
        GatewayError::from_balancer(&e)
    })
}

/// Fills the log record from the upstream response head.
pub(crate) fn record_response(
    rec: &mut LogRecord,
    up: &UpstreamResponse,
    cluster: &Cluster,
    started: Instant,
) {
    let ep = up.lease.endpoint();
    rec.server = Some(ep.name.clone());
    rec.queue = up.timings.queue;
    rec.connect = up.timings.connect;
    rec.response = Some(started.elapsed());
    rec.retries = up.attempts.saturating_sub(1);
    rec.status = up.response.status().as_u16();
    rec.server_in_flight = ep.in_flight();
    rec.cluster_queued = cluster.queued();
    rec.grpc_status = grpc_status(up.response.headers());
}

async fn forward_grpc(
    conn: &ConnCtx,
    req: Request<Incoming>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    if req.version() != Version::HTTP_2 {
        return Err(GatewayError::GrpcNeedsHttp2);
    }
    let reflection = conn.listener.reflection;
    if reflection != crate::config::ReflectionMode::Passthrough
        && crate::reflection::is_reflection_path(req.uri().path())
    {
        // Served by the gateway itself, for every registered service (and,
        // merging, every service the backends list).
        if let Some(m) = conn
            .listener
            .deny_unless
            .iter()
            .find(|m| !m.matches(req.headers()))
        {
            debug!(header = %m.name(), "Denied by listener rule");
            return Err(GatewayError::Denied);
        }
        let upstreams = (reflection == crate::config::ReflectionMode::Merge)
            .then(|| crate::reflection::Upstreams::new(conn.shared.clone(), req.headers()));
        let resp = Box::pin(crate::reflection::serve(
            conn.shared.registry.clone(),
            upstreams,
            req,
        ))
        .await;
        rec.status = resp.status().as_u16();
        rec.total = started.elapsed();
        rec.cluster = Some("<gateway>".into());
        conn.shared.access_log.emit(rec, Phase::End);
        return Ok(resp);
    }
    let snapshot = conn.shared.registry.snapshot();
    let binding = snapshot.cluster_for(req.uri().path());
    let (route, cluster) = select_route(conn, req.uri().path(), req.headers(), binding, rec)?;
    let (mut parts, body) = req.into_parts();
    let deadline = deadline(&mut parts.headers, route, None, started);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let idle = route
        .and_then(|r| r.idle_timeout)
        .map(|t| Idle::new(t, started));
    let body = match &idle {
        Some(idle) => balancer::body::boxed(ActivityBody {
            inner: body,
            last: idle.last.clone(),
            started,
        }),
        None => balancer::body::boxed(body),
    };
    let up = send(cluster, Request::from_parts(parts, body), deadline).await?;
    record_response(rec, &up, cluster, started);
    let (mut parts, body) = up.response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rec.response_captures = capture(&parts.headers, &conn.listener.capture_response);
    let log = &conn.shared.access_log;
    log.debug_headers("response headers", &parts.headers);
    if conn.listener.log_at_start {
        rec.total = started.elapsed();
        log.emit(rec, Phase::Start);
    }
    let body = observe(
        body,
        up.lease,
        rec,
        log,
        deadline,
        idle,
        started,
        Some(&parts.headers),
    );
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Wraps an upstream response body for its way downstream (see
/// [`ObservedBody`]). For gRPC, `grpc_head` holds the response head, whose
/// `grpc-status` settles a trailers-only answer at once; without it the
/// exchange is plain HTTP, whose failures mid-body are errors.
#[allow(clippy::too_many_arguments)]
fn observe(
    body: balancer::body::UpstreamIncoming,
    lease: Lease,
    rec: &LogRecord,
    log: &AccessLog,
    deadline: Option<tokio::time::Instant>,
    idle: Option<Idle>,
    started: Instant,
    grpc_head: Option<&HeaderMap>,
) -> ObservedBody {
    let ended = body.is_end_stream();
    if ended && let Some(head) = grpc_head {
        lease.record_status(grpc_status(head));
    }
    let mut body = ObservedBody {
        inner: Some(body),
        lease: Some(lease),
        guard: LogGuard::new(rec.clone(), log.clone(), started),
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        idle,
        state: State::Streaming,
        grpc: grpc_head.is_some(),
    };
    if ended {
        // Trailers-only (or an empty body): the head goes out with
        // END_STREAM, so the body must say it has ended already; a body
        // that ends only when polled makes hyper add an empty DATA frame
        // with END_STREAM, which C-core clients (grpcio, grpc C++)
        // read as a broken stream.
        body.finish(Termination::Normal);
        body.state = State::Done;
    }
    body
}

/// Whether an HTTP request goes to a plain HTTP cluster as it is: no
/// registered method or REST rule takes it, and the first route matching
/// its path and headers leads to an `http1`/`http2` cluster.
fn is_plain_http(conn: &ConnCtx, req: &Request<Incoming>) -> bool {
    let shared = &conn.shared;
    let path = req.uri().path();
    let Some(route) = shared.routes.route(path, req.headers()) else {
        return false;
    };
    let plain = shared
        .clusters
        .get(&route.cluster)
        .is_some_and(|c| c.protocol() != balancer::config::UpstreamProtocol::Grpc);
    if !plain {
        return false;
    }
    let snapshot = shared.registry.snapshot();
    snapshot.match_http(req.method(), path).is_none()
        && !(req.method() == Method::POST && snapshot.method(path).is_some())
}

/// Proxies an HTTP request to a plain HTTP cluster (HTTP/1.1 or HTTP/2
/// upstream, whatever the downstream spoke), streaming both bodies.
async fn forward_plain(
    conn: &ConnCtx,
    req: Request<Incoming>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (route, cluster) = select_route(conn, req.uri().path(), req.headers(), None, rec)?;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if cluster.protocol() == balancer::config::UpstreamProtocol::Http2 {
        // HTTP/2 carries the host in :authority.
        if parts.uri.authority().is_none()
            && let Some(host) = parts.headers.remove(header::HOST)
            && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
        {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.authority = Some(authority);
            uri.scheme = Some(http::uri::Scheme::HTTP);
            parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
        }
        parts.version = Version::HTTP_2;
    }
    let deadline = route
        .and_then(|r| r.timeout)
        .map(|t| tokio::time::Instant::from_std(started + t));
    let up = send(
        cluster,
        Request::from_parts(parts, balancer::body::boxed(body)),
        deadline,
    )
    .await?;
    record_response(rec, &up, cluster, started);
    let (mut parts, body) = up.response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rec.response_captures = capture(&parts.headers, &conn.listener.capture_response);
    let log = &conn.shared.access_log;
    log.debug_headers("response headers", &parts.headers);
    if conn.listener.log_at_start {
        rec.total = started.elapsed();
        log.emit(rec, Phase::Start);
    }
    let body = observe(body, up.lease, rec, log, deadline, None, started, None);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

pub(crate) use balancer::headers::grpc_status;

enum State {
    Streaming,
    /// Sent the final trailers; next poll ends the stream.
    Ending,
    Done,
}

/// The upstream response body on its way downstream: counts bytes, reads
/// the final `grpc-status` from the trailers, enforces the deadline, keeps
/// the endpoint slot until the end, and logs once when done or dropped (a
/// drop before the end means the client went away; dropping `inner` then
/// resets the upstream stream).
struct ObservedBody {
    inner: Option<balancer::body::UpstreamIncoming>,
    lease: Option<Lease>,
    guard: LogGuard,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<Idle>,
    state: State,
    /// gRPC ends a failed stream with a status in trailers; plain HTTP has
    /// no such word, so the failure goes to hyper as a body error, which
    /// resets the HTTP/2 stream or closes the HTTP/1.1 connection before
    /// the last chunk: the client sees a broken response, not a short one.
    grpc: bool,
}

/// The stream idle timeout: when nothing moved either way for `limit`.
struct Idle {
    limit: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last frame either way.
    last: Arc<AtomicU64>,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(limit: Duration, started: Instant) -> Self {
        Self {
            limit,
            started,
            last: Arc::new(AtomicU64::new(0)),
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }

    /// Whether the stream has been idle too long; re-arms the timer when
    /// something moved since it was set.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let last = self.started + Duration::from_millis(self.last.load(Relaxed));
            let due = last + self.limit;
            if Instant::now() >= due {
                return true;
            }
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(due));
        }
    }
}

/// The downstream request body on its way upstream, noting activity for
/// the idle timeout.
struct ActivityBody {
    inner: Incoming,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl Body for ActivityBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &res {
            self.last
                .store(self.started.elapsed().as_millis() as u64, Relaxed);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ObservedBody {
    fn finish(&mut self, termination: Termination) {
        self.lease = None;
        self.inner = None;
        self.guard.finish(termination);
        self.state = State::Ending;
    }

    /// Ends the stream early: gRPC trailers with the error's status, or
    /// for plain HTTP an error.
    fn fail(&mut self, e: GatewayError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.grpc {
            let mut t = HeaderMap::new();
            crate::respond::insert_grpc_status(&mut t, e.code(), &e.message());
            self.guard.rec.grpc_status = Some(e.code() as i32);
            self.finish(e.termination());
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        self.finish(e.termination());
        self.state = State::Done;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.state {
            State::Streaming => {}
            State::Ending => {
                this.state = State::Done;
                return Poll::Ready(None);
            }
            State::Done => return Poll::Ready(None),
        }
        if let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            // Past the deadline mid-stream: end it for the client; dropping
            // `inner` resets the upstream stream.
            return this.fail(GatewayError::DeadlineMidStream);
        }
        if let Some(idle) = &mut this.idle
            && idle.expired(cx)
        {
            return this.fail(GatewayError::StreamIdle);
        }
        let Some(inner) = &mut this.inner else {
            this.finish(Termination::Normal);
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(idle) = &this.idle {
                    idle.touch();
                }
                if let Some(data) = frame.data_ref() {
                    this.guard.rec.bytes += data.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.guard.log().debug_headers("response trailers", t);
                    if let Some(code) = grpc_status(t) {
                        this.guard.rec.grpc_status = Some(code);
                    }
                    if let Some(lease) = &this.lease {
                        lease.record_status(grpc_status(t));
                    }
                    // Trailers end the stream; hyper may not poll again.
                    this.finish(Termination::Normal);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                debug!(error = %ErrorChain(error.as_ref()), "Upstream stream failed");
                if let Some(lease) = &this.lease {
                    lease.record_status(None);
                }
                this.fail(GatewayError::UpstreamStreamFailed)
            }
            None => {
                this.finish(Termination::Normal);
                this.state = State::Done;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Ending => false,
            State::Streaming => self.inner.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.state, &self.inner) {
            (State::Streaming, Some(inner)) => inner.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}
