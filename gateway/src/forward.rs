//! Forwarding through the balancer, the pipeline's side of every adapter:
//! the call's deadline, `send` within it, `relay` (send an adapter's
//! [`Outbound`] and pass the answer back as it is), the log record filled
//! from the response head, and the bodies that carry a response downstream
//! ([`ObservedBody`]: deadline, stream idle timeout, final `grpc-status`,
//! the endpoint lease, the access-log line) and a request upstream
//! ([`ActivityBody`]: activity for the idle timeout).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use crate::linger::FrontBody;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tracing::debug;

use balancer::{
    Cluster, Lease, Route, UpstreamResponse,
    body::{BoxError, UpstreamBody},
    cluster::ErrorChain,
    grpc::timeout as grpc_timeout,
    headers::{GRPC_TIMEOUT, strip_hop_by_hop},
};

use crate::{
    access_log::{AccessLog, LogGuard, LogRecord, Phase, capture},
    error::Termination,
    proxy::ConnCtx,
    respond::GatewayError,
    respond::ResponseBody,
};

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
        // What is left after the time already spent here: a new value on
        // every call, so HPACK sends it never-indexed (sensitive) rather
        // than churning the connection's dynamic table.
        let mut left = grpc_timeout::encode(t.saturating_sub(started.elapsed()));
        left.set_sensitive(true);
        headers.insert(GRPC_TIMEOUT, left);
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
        debug!(cluster = %cluster.name(), fault = ?e.fault(), error = %ErrorChain(&e), "Upstream request failed");
        GatewayError::from_balancer(&e)
    })
}

/// What an adapter hands the pipeline to send: the upstream request, the
/// call's deadline and the stream idle timeout.
pub(crate) struct Outbound {
    /// The upstream request.
    pub request: Request<UpstreamBody>,
    /// When the whole call must be over.
    pub deadline: Option<tokio::time::Instant>,
    /// The route's stream idle timeout, with the request body feeding it.
    pub idle: Option<Idle>,
}

/// How an answer relayed as it is ends when something fails mid-stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relay {
    /// gRPC: trailers with the status (a trailers-only head settles it at once).
    Grpc,
    /// Plain HTTP: a broken response (stream reset, connection closed).
    Http,
}

/// Sends an adapter's request within its deadline and relays the answer
/// as it is: the log record filled from the head (captures, debug
/// headers, the `log_at_start` line), the body observed to its end.
pub(crate) async fn relay(
    conn: &ConnCtx,
    cluster: &Arc<Cluster>,
    out: Outbound,
    kind: Relay,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    let up = send(cluster, traced(out.request, rec), out.deadline).await?;
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
    let grpc_head = (kind == Relay::Grpc).then_some(&parts.headers);
    let body = observe(
        body,
        up.lease,
        rec,
        log,
        out.deadline,
        out.idle,
        started,
        grpc_head,
    );
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// The pipeline's bookkeeping of one forwarded call, for an adapter that
/// reads the answer before answering (JSON): the endpoint lease (its
/// outcome feeds outlier detection; the slot is held until the exchange
/// ends) and the access-log line, written once when the exchange ends, or
/// when it is dropped before (the client went away).
pub(crate) struct Exchange {
    lease: Option<Lease>,
    guard: LogGuard,
}

/// An upstream answer with its exchange.
pub(crate) struct Answer {
    /// The response head.
    pub head: http::response::Parts,
    /// The response body.
    pub body: balancer::body::UpstreamIncoming,
    /// The bookkeeping to report to.
    pub exchange: Exchange,
}

/// Sends `request` within `deadline` and hands the answer back with its
/// exchange; the log record is filled from the head (captures, debug
/// headers).
pub(crate) async fn call(
    conn: &ConnCtx,
    cluster: &Arc<Cluster>,
    request: Request<UpstreamBody>,
    deadline: Option<tokio::time::Instant>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Answer, GatewayError> {
    let up = send(cluster, traced(request, rec), deadline).await?;
    record_response(rec, &up, cluster, started);
    let log = &conn.shared.access_log;
    log.debug_headers("response headers", up.response.headers());
    rec.response_captures = capture(up.response.headers(), &conn.listener.capture_response);
    let (head, body) = up.response.into_parts();
    Ok(Answer {
        head,
        body,
        exchange: Exchange {
            lease: Some(up.lease),
            guard: LogGuard::new(rec.clone(), log.clone(), started),
        },
    })
}

/// The request with the call's trace as the observer of its attempts
/// (each gets its own span and `traceparent`).
fn traced(mut request: Request<UpstreamBody>, rec: &LogRecord) -> Request<UpstreamBody> {
    if let Some(t) = &rec.trace {
        request
            .extensions_mut()
            .insert(balancer::Observer(t.clone()));
    }
    request
}

// === impl Exchange ===

impl Exchange {
    /// Reports the upstream's final gRPC status (None: not a gRPC answer,
    /// or the stream failed) to outlier detection; the first report counts.
    pub(crate) fn upstream_status(&self, status: Option<i32>) {
        if let Some(lease) = &self.lease {
            lease.record_status(status);
        }
    }

    /// The final gRPC status the caller is told.
    pub(crate) fn set_grpc_status(&mut self, code: i32) {
        self.guard.rec.grpc_status = Some(code);
    }

    /// The HTTP status the caller is told.
    pub(crate) fn set_http_status(&mut self, status: u16) {
        self.guard.rec.status = status;
    }

    /// Counts response body bytes sent downstream.
    pub(crate) fn add_bytes(&mut self, n: usize) {
        self.guard.rec.bytes += n as u64;
    }

    /// Writes the start line of a long stream (`log_at_start`).
    pub(crate) fn log_start(&self) {
        let mut rec = self.guard.rec.clone();
        rec.total = self.guard.elapsed();
        self.guard.log().emit(&rec, crate::access_log::Phase::Start);
    }

    /// Notes a transcoding step that began at `began` in the call's trace.
    pub(crate) fn transcoded(&self, step: &'static str, began: Instant) {
        if let Some(t) = &self.guard.rec.trace {
            t.transcoded(step, began);
        }
    }

    /// Frees the endpoint slot (the answer is read).
    pub(crate) fn release(&mut self) {
        self.lease = None;
    }

    /// Ends the exchange: frees the endpoint slot, writes the log line.
    pub(crate) fn finish(&mut self, termination: Termination) {
        self.lease = None;
        self.guard.finish(termination);
    }
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

/// Wraps an upstream response body for its way downstream (see
/// [`ObservedBody`]). For gRPC, `grpc_head` holds the response head, whose
/// `grpc-status` settles a trailers-only answer at once; without it the
/// exchange is plain HTTP, whose failures mid-body are errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn observe(
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
        messages: balancer::grpc::frame::FrameCounter::default(),
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
pub(crate) struct ObservedBody {
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
    /// Counts the gRPC messages passing (metrics).
    messages: balancer::grpc::frame::FrameCounter,
}

/// The stream idle timeout: when nothing moved either way for `limit`.
pub(crate) struct Idle {
    limit: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last frame either way.
    last: Arc<AtomicU64>,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    pub(crate) fn new(limit: Duration, started: Instant) -> Self {
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
pub(crate) struct ActivityBody {
    inner: FrontBody,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl ActivityBody {
    /// Wraps `inner`, noting its frames as activity for `idle`.
    pub(crate) fn new(inner: FrontBody, idle: &Idle) -> Self {
        Self {
            inner,
            last: idle.last.clone(),
            started: idle.started,
        }
    }
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
                    if this.grpc {
                        let n = this.messages.feed(data);
                        this.guard.rec.counts.add_response_messages(n);
                    }
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
