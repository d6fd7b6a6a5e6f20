//! One upstream HTTP/2 connection, driven with the `h2` crate directly so
//! the balancer sees what the server allows: its SETTINGS_MAX_CONCURRENT_STREAMS
//! decides when the pool opens another connection instead of queueing
//! streams behind a full one. Also: the request pump (body frames out with
//! flow control and backpressure), the response body (flow-control credit
//! returned as data is read), and PING keep-alive.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::poll_fn;
use h2::{
    Ping, PingPong, Reason, RecvStream, SendStream,
    client::{self, SendRequest},
};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{Notify, oneshot},
};
use tracing::debug;

use crate::{
    body::{BoxError, UpstreamBody},
    endpoint::now_ms,
    stats::{ConnStats, FrameScan},
};

/// Settings of new upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct H2Settings {
    /// Initial stream window (bytes).
    pub stream_window: u32,
    /// Connection window (bytes).
    pub connection_window: u32,
    /// Largest frame accepted (bytes).
    pub max_frame_size: u32,
    /// Largest header list accepted (bytes).
    pub max_header_list_size: u32,
    /// Send a PING this often; none = no keep-alive.
    pub keepalive_interval: Option<Duration>,
    /// A PING unanswered this long closes the connection.
    pub keepalive_timeout: Duration,
    /// No stream open for this long closes the connection; none = never.
    pub idle_timeout: Option<Duration>,
}

/// `in_flight` of a connection closed for idleness: far above any stream
/// limit, so a racing `try_reserve` backs off.
const CLOSING: usize = usize::MAX / 2;

/// An open HTTP/2 connection to one endpoint.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams opened by us and not yet finished.
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to 0 (ms on the process clock).
    idle_since_ms: AtomicU64,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as last read.
    max_streams: AtomicUsize,
    /// Set when the connection ended or must take no new streams.
    closed: Arc<AtomicBool>,
    /// The pool's signal that a stream ended (requests may be waiting).
    freed: Arc<Notify>,
}

/// A stream admitted on a connection; dropping it frees the place.
pub struct StreamSlot {
    conn: Arc<H2Conn>,
}

/// Why a request failed on an h2 connection.
pub enum SendError {
    /// It never left: the connection was closing or gone (safe to retry).
    NotSent(h2::Error),
    /// It was sent and the exchange failed (reset, GOAWAY, I/O).
    Failed(h2::Error),
    /// The request body failed before the request went out (the client's
    /// fault, not the endpoint's).
    Body(BoxError),
}

/// Handshake with `settings` on `io`, wait for the server's SETTINGS (so
/// its stream limit is known before the first request), and spawn the task
/// that drives the connection (and closes it when idle too long). The
/// GOAWAY and RST_STREAM frames the server sends are counted in `stats`.
pub async fn handshake<T>(
    io: T,
    settings: H2Settings,
    addr: SocketAddr,
    freed: Arc<Notify>,
    stats: Arc<ConnStats>,
) -> Result<Arc<H2Conn>, h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Scanned {
        inner: io,
        scan: FrameScan::default(),
        stats,
    };
    let (send, mut conn) = client::Builder::new()
        .enable_push(false)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(settings.max_header_list_size)
        .handshake::<_, Bytes>(crate::coalesce::Coalesce::new(io))
        .await?;
    let mut ping = conn.ping_pong();
    if let Some(p) = ping.as_mut() {
        // The server's SETTINGS come before its answer to our first PING,
        // and h2 applies them as it reads them.
        let mut pong = Box::pin(p.ping(Ping::opaque()));
        poll_fn(|cx| {
            if let Poll::Ready(r) = pong.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            match Pin::new(&mut conn).poll(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Err(h2::Error::from(Reason::NO_ERROR))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
    }
    let max = send.current_max_send_streams();
    let h2conn = Arc::new(H2Conn {
        send,
        in_flight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(now_ms()),
        max_streams: AtomicUsize::new(max),
        closed: Arc::new(AtomicBool::new(false)),
        freed,
    });
    let done = h2conn.closed.clone();
    let weak = Arc::downgrade(&h2conn);
    tokio::spawn(async move {
        let keepalive = async {
            match (settings.keepalive_interval, ping) {
                (Some(every), Some(ping)) => {
                    keepalive(ping, every, settings.keepalive_timeout).await
                }
                _ => std::future::pending().await,
            }
        };
        let idle = async {
            match settings.idle_timeout {
                Some(limit) => close_when_idle(weak, limit).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = &mut conn => r,
            why = keepalive => {
                debug!(%addr, why, "Closing upstream connection");
                Ok(())
            }
            () = idle => {
                debug!(%addr, "Closing idle upstream connection");
                Ok(())
            }
        };
        done.store(true, Ordering::Release);
        if let Err(error) = result {
            debug!(%addr, %error, "Upstream connection ended");
        }
    });
    Ok(h2conn)
}

/// Returns once the connection has had no stream for `limit`, after
/// marking it closed so no new stream takes it (dropping the connection
/// future then closes the socket). Never returns while the pool's handle
/// is gone but streams remain: h2 ends the connection itself then.
async fn close_when_idle(conn: std::sync::Weak<H2Conn>, limit: Duration) {
    let limit_ms = limit.as_millis() as u64;
    loop {
        let wait_ms = {
            let Some(c) = conn.upgrade() else {
                return std::future::pending().await;
            };
            if c.in_flight.load(Ordering::Acquire) == 0 {
                let idle_ms = now_ms().saturating_sub(c.idle_since_ms.load(Ordering::Acquire));
                if idle_ms >= limit_ms && c.try_close_idle() {
                    return;
                }
                limit_ms.saturating_sub(idle_ms).max(1)
            } else {
                limit_ms
            }
        };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
}

/// PINGs every `every`; returns why when one is not answered in `timeout`.
async fn keepalive(mut ping: PingPong, every: Duration, timeout: Duration) -> &'static str {
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(timeout, ping.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "keep-alive PING failed",
            Err(_) => return "keep-alive PING timed out",
        }
    }
}

// === impl H2Conn ===

impl H2Conn {
    /// Whether the connection takes no new streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops new streams on this connection; open ones finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Streams open on this connection (by our count).
    pub fn in_flight(&self) -> usize {
        let n = self.in_flight.load(Ordering::Relaxed);
        if n >= CLOSING { 0 } else { n }
    }

    /// Closes the connection for new streams if it has none open (atomic
    /// with `try_reserve`).
    fn try_close_idle(&self) -> bool {
        let idle = self
            .in_flight
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if idle {
            self.close();
        }
        idle
    }

    /// A place for one more stream, if the server's limit allows it.
    pub fn try_reserve(self: &Arc<Self>) -> Option<StreamSlot> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= CLOSING {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if n < self.max_streams.load(Ordering::Relaxed) {
            return Some(StreamSlot { conn: self.clone() });
        }
        // Full by the last known limit: read it again (SETTINGS may have
        // raised it since).
        let max = self.send.current_max_send_streams();
        self.max_streams.store(max, Ordering::Relaxed);
        if n < max {
            return Some(StreamSlot { conn: self.clone() });
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Whether the server allows no stream at all (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS is 0).
    pub fn allows_no_stream(&self) -> bool {
        self.max_streams.load(Ordering::Relaxed) == 0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        // Before the count falls, so the idle check never pairs a 0 count
        // with an old time.
        self.conn.idle_since_ms.store(now_ms(), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.conn.freed.notify_one();
    }
}

impl StreamSlot {
    /// The connection this slot is on.
    pub fn conn(&self) -> &Arc<H2Conn> {
        &self.conn
    }
}

/// Body frames read before the request goes out, when they are already
/// there (each at most one downstream frame; h2 buffers what the window
/// does not admit yet).
const READY_FRAMES: usize = 4;

/// Sends `req` on the slot's connection and waits for the response head.
/// The request body goes out as the server takes it (in a task of its own
/// unless it is already complete); dropping the response stops it.
pub async fn send(
    slot: StreamSlot,
    req: Request<UpstreamBody>,
) -> Result<Response<H2Body>, SendError> {
    let (mut parts, mut body) = req.into_parts();
    // Connection-specific headers are not allowed in HTTP/2 (RFC 9113
    // section 8.2.2).
    crate::headers::strip_hop_by_hop(&mut parts.headers);
    let mut tx = slot.conn.send.clone();
    // Errors here mean the connection takes no new streams: not sent.
    tx = tx.ready().await.map_err(SendError::NotSent)?;
    // Read what the body already holds (a gRPC client's message and its
    // END_STREAM usually arrive together; a transcoded JSON call is one
    // frame), so the last frame carries END_STREAM and a body complete now
    // needs no pump task.
    let mut frames = Vec::new();
    let mut ended = body.is_end_stream();
    while !ended && frames.len() < READY_FRAMES {
        match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(Some(Ok(frame))) => {
                ended = frame.is_trailers() || body.is_end_stream();
                frames.push(frame);
            }
            Poll::Ready(None) => ended = true,
            Poll::Ready(Some(Err(e))) => return Err(SendError::Body(e)),
            Poll::Pending => break,
        }
    }
    let head = Request::from_parts(parts, ());
    let only_head = ended && frames.is_empty();
    let (response, mut stream) = tx
        .send_request(head, only_head)
        .map_err(SendError::NotSent)?;
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let mut cancel = None;
    if !only_head {
        let last = frames.len().saturating_sub(1);
        let mut more = true;
        for (i, frame) in frames.into_iter().enumerate() {
            more = send_frame(&mut stream, frame, ended && i == last);
            if !more {
                break;
            }
        }
        if more && !ended {
            cancel = Some(cancel_rx);
            tokio::spawn(pump(body, stream, cancel_tx));
        }
    }
    let response = response.await.map_err(|e| {
        if e.is_go_away() && e.is_remote() {
            // The server is going away: no new streams on this connection.
            slot.conn.close();
        }
        SendError::Failed(e)
    })?;
    let (parts, recv) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        H2Body {
            recv,
            data_done: false,
            _slot: slot,
            _cancel: cancel,
        },
    ))
}

/// Sends one body frame (the last one when `eos`); true while more may
/// follow, false once the request is finished (END_STREAM or trailers
/// sent) or the stream failed.
fn send_frame(stream: &mut SendStream<Bytes>, frame: Frame<Bytes>, eos: bool) -> bool {
    match frame.into_data() {
        Ok(data) => stream.send_data(data, eos).is_ok() && !eos,
        Err(frame) => {
            if let Ok(t) = frame.into_trailers() {
                let _ = stream.send_trailers(t);
            }
            false
        }
    }
}

/// Moves the request body to the stream frame by frame, reading the next
/// frame only once the server has window for it; resets the stream when
/// the body fails or the response side is dropped (client gone).
async fn pump(mut body: UpstreamBody, mut stream: SendStream<Bytes>, cancel: oneshot::Sender<()>) {
    let mut cancel = cancel;
    loop {
        // Wait for send window before taking more from the body.
        stream.reserve_capacity(1);
        let ready = poll_fn(|cx| {
            if cancel.poll_closed(cx).is_ready() {
                return Poll::Ready(Err(Reason::CANCEL));
            }
            if let Poll::Ready(r) = stream.poll_reset(cx) {
                return Poll::Ready(Err(r.unwrap_or(Reason::CANCEL)));
            }
            if stream.capacity() > 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(stream.poll_capacity(cx)) {
                Some(Ok(_)) => Poll::Ready(Ok(())),
                Some(Err(_)) | None => Poll::Ready(Err(Reason::CANCEL)),
            }
        })
        .await;
        if let Err(reason) = ready {
            stream.send_reset(reason);
            return;
        }
        let next = poll_fn(|cx| {
            if cancel.poll_closed(cx).is_ready() {
                return Poll::Ready(Err(Reason::CANCEL));
            }
            if let Poll::Ready(r) = stream.poll_reset(cx) {
                return Poll::Ready(Err(r.unwrap_or(Reason::CANCEL)));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await;
        match next {
            Err(reason) => {
                stream.send_reset(reason);
                return;
            }
            Ok(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(error))) => {
                debug!(%error, "Request body failed; resetting the upstream stream");
                stream.send_reset(Reason::CANCEL);
                return;
            }
            Ok(Some(Ok(frame))) => {
                let eos = body.is_end_stream();
                if !send_frame(&mut stream, frame, eos) {
                    return;
                }
            }
        }
    }
}

/// The server's side of a connection, its frame headers counted as they
/// pass ([`FrameScan`]); writes go through untouched.
struct Scanned<T> {
    inner: T,
    scan: FrameScan,
    stats: Arc<ConnStats>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Scanned<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            this.scan.scan(&buf.filled()[before..], &this.stats);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Scanned<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The body of an upstream h2 response. Holds the stream's place on its
/// connection until dropped.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    _slot: StreamSlot,
    /// Dropped with the body: tells the request pump to stop.
    _cancel: Option<oneshot::Receiver<()>>,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            // (h2 itself treats a reset after END_STREAM as a clean end.)
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
