//! The request service: classify -> deny rules -> route -> forward through
//! the cluster -> stream the response back, frame by frame, with trailers.
//! Everything the gateway answers itself goes through `respond`.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;
use tracing::debug;

use balancer::{Clusters, HeaderMatch, Lease, RouteTable, body::BoxError, cluster::ErrorChain};

use crate::{
    access_log::{AccessLog, LogRecord, Phase, capture},
    classify::{Protocol, classify},
    grpc_timeout,
    respond::{Code, GatewayError, ResponseBody},
};

/// State shared by every connection of every listener.
pub struct Shared {
    /// Routing rules.
    pub routes: RouteTable,
    /// Backend clusters.
    pub clusters: Clusters,
    /// Access log.
    pub access_log: AccessLog,
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
pub async fn handle(conn: Arc<ConnCtx>, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let protocol = classify(req.headers());
    let log = &conn.shared.access_log;
    log.debug_headers("request headers", req.headers());
    let mut rec = LogRecord {
        client: conn.peer,
        accepted: SystemTime::now(),
        listener: conn.listener.name.clone(),
        cluster: None,
        server: None,
        queue: Default::default(),
        connect: None,
        response: None,
        total: Default::default(),
        status: 0,
        grpc_status: None,
        bytes: 0,
        request_captures: capture(req.headers(), &conn.listener.capture_request),
        response_captures: Vec::new(),
        termination: "--",
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
    match forward(&conn, req, protocol, &mut rec, started).await {
        Ok(resp) => resp,
        Err(err) => {
            debug!(code = ?err.code, message = %err.message, "Answered by the gateway");
            rec.termination = err.termination;
            let resp = err.clone().into_response(protocol);
            rec.status = resp.status().as_u16();
            if protocol != Protocol::Http {
                rec.grpc_status = Some(err.code as i32);
            }
            rec.total = started.elapsed();
            log.debug_headers("response headers", resp.headers());
            log.emit(&rec, Phase::End);
            resp
        }
    }
}

async fn forward(
    conn: &ConnCtx,
    req: Request<Incoming>,
    protocol: Protocol,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    match protocol {
        Protocol::Grpc => {}
        Protocol::GrpcWeb { .. } => {
            return Err(GatewayError::new(
                Code::Unimplemented,
                "gRPC-Web is not enabled",
                "PR",
            ));
        }
        Protocol::Http => {
            return Err(GatewayError::new(
                Code::NotFound,
                format!("no route for {} {}", req.method(), req.uri().path()),
                "PR",
            ));
        }
    }
    if req.version() != Version::HTTP_2 {
        return Err(GatewayError::new(
            Code::Internal,
            "gRPC requires HTTP/2",
            "PR",
        ));
    }
    if let Some(m) = conn
        .listener
        .deny_unless
        .iter()
        .find(|m| !m.matches(req.headers()))
    {
        debug!(header = %m.name(), "Denied by listener rule");
        return Err(GatewayError::new(
            Code::PermissionDenied,
            "request denied",
            "PR",
        ));
    }
    let shared = &conn.shared;
    let path = req.uri().path();
    let Some(route) = shared.routes.route(path, req.headers()) else {
        return Err(GatewayError::new(
            Code::Unimplemented,
            format!("unknown method {path}"),
            "PR",
        ));
    };
    if let Some(m) = route.denied_by(req.headers()) {
        debug!(route = %route.name, header = %m.name(), "Denied by route rule");
        return Err(GatewayError::new(
            Code::PermissionDenied,
            "request denied",
            "PR",
        ));
    }
    rec.cluster = Some(route.cluster.to_string());
    let Some(cluster) = shared.clusters.get(&route.cluster) else {
        return Err(GatewayError::new(Code::Internal, "internal error", "PR"));
    };

    let (mut parts, body) = req.into_parts();
    // The call's deadline: the client's grpc-timeout, capped by the route's.
    let client_timeout = parts
        .headers
        .get("grpc-timeout")
        .and_then(grpc_timeout::parse);
    let timeout = match (client_timeout, route.timeout) {
        (Some(c), Some(r)) if r < c => {
            parts
                .headers
                .insert("grpc-timeout", grpc_timeout::encode(r));
            Some(r)
        }
        (None, Some(r)) => {
            parts
                .headers
                .insert("grpc-timeout", grpc_timeout::encode(r));
            Some(r)
        }
        (c, _) => c,
    };
    let deadline = timeout.map(|t| tokio::time::Instant::from_std(started + t));
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let upstream_req = Request::from_parts(parts, balancer::body::boxed(body));

    let send = cluster.send(upstream_req);
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d, send).await {
            Ok(r) => r,
            Err(_) => {
                return Err(GatewayError::new(
                    Code::DeadlineExceeded,
                    "deadline exceeded",
                    "sH",
                ));
            }
        },
        None => send.await,
    };
    let up = match result {
        Ok(up) => up,
        Err(e) => {
            debug!(cluster = %route.cluster, error = %ErrorChain(&e), "Upstream request failed");
            return Err(GatewayError::from_balancer(&e));
        }
    };

    let (mut parts, body) = up.response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let ep = up.lease.endpoint();
    rec.server = Some(ep.name.clone());
    rec.queue = up.timings.queue;
    rec.connect = up.timings.connect;
    rec.response = Some(started.elapsed());
    rec.retries = up.attempts.saturating_sub(1);
    rec.status = parts.status.as_u16();
    rec.server_in_flight = ep.in_flight();
    rec.cluster_queued = cluster.queued();
    rec.grpc_status = grpc_status(&parts.headers);
    rec.response_captures = capture(&parts.headers, &conn.listener.capture_response);
    shared
        .access_log
        .debug_headers("response headers", &parts.headers);
    if conn.listener.log_at_start {
        rec.total = started.elapsed();
        shared.access_log.emit(rec, Phase::Start);
    }
    let body = ObservedBody {
        inner: Some(body),
        lease: Some(up.lease),
        rec: rec.clone(),
        log: shared.access_log.clone(),
        started,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        state: State::Streaming,
        logged: false,
    };
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Removes connection-specific headers (RFC 9110 section 7.6.1) and
/// anything the `connection` header names; `te: trailers` stays.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(s) = conn.to_str()
    {
        for name in s.split(',') {
            h.remove(name.trim());
        }
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(name);
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

enum State {
    Streaming,
    /// Sent synthetic trailers; next poll ends the stream.
    Ending,
    Done,
}

/// The upstream response body on its way downstream: counts bytes, reads
/// the final `grpc-status` from the trailers, enforces the deadline, keeps
/// the endpoint slot until the end, and logs once when done or dropped (a
/// drop before the end means the client went away; dropping `inner` then
/// resets the upstream stream).
struct ObservedBody {
    inner: Option<Incoming>,
    lease: Option<Lease>,
    rec: LogRecord,
    log: AccessLog,
    started: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    state: State,
    logged: bool,
}

impl ObservedBody {
    fn finish(&mut self, termination: &'static str) {
        if self.logged {
            return;
        }
        self.logged = true;
        self.state = State::Done;
        self.lease = None;
        self.rec.termination = termination;
        self.rec.total = self.started.elapsed();
        self.log.emit(&self.rec, Phase::End);
    }

    fn synthetic_trailers(
        &mut self,
        code: Code,
        message: &str,
        termination: &'static str,
    ) -> Frame<Bytes> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from(code as i32));
        if let Ok(v) = HeaderValue::from_str(message) {
            t.insert("grpc-message", v);
        }
        self.rec.grpc_status = Some(code as i32);
        self.finish(termination);
        self.state = State::Ending;
        Frame::trailers(t)
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
            // Past the deadline mid-stream: end it for the client; the
            // upstream stream is reset when `inner` is dropped.
            this.inner = None;
            let t = this.synthetic_trailers(Code::DeadlineExceeded, "deadline exceeded", "sD");
            return Poll::Ready(Some(Ok(t)));
        }
        let Some(inner) = &mut this.inner else {
            this.finish("--");
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.rec.bytes += data.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.log.debug_headers("response trailers", t);
                    if let Some(code) = grpc_status(t) {
                        this.rec.grpc_status = Some(code);
                    }
                    // Trailers end the stream; hyper may not poll again.
                    this.finish("--");
                    this.state = State::Ending;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                debug!(error = %ErrorChain(&error), "Upstream stream failed");
                let t = this.synthetic_trailers(Code::Unavailable, "upstream stream failed", "SD");
                Poll::Ready(Some(Ok(t)))
            }
            None => {
                this.finish("--");
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
            || (matches!(self.state, State::Streaming)
                && self.inner.as_ref().is_none_or(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Streaming => self
                .inner
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
            _ => SizeHint::with_exact(0),
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or reset).
        self.finish("CD");
    }
}
