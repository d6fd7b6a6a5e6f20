//! One downstream connection before and around hyper: the first-bytes
//! check (RFC 9113 §3.4: after the 24-byte preface the client's first frame
//! must be SETTINGS), the IO that replays the bytes read for it, and the
//! per-connection stream accounting used for the idle timeout and for
//! premature-reset protection (as Envoy's
//! `overload.premature_reset_*`).
//!
//! Everything HTTP/2 after the first frame header is hyper's and h2's; the
//! only frames written here are the server's empty SETTINGS and a GOAWAY
//! (PROTOCOL_ERROR) when the first frame is not SETTINGS.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::Notify,
};
use tokio_rustls::server::TlsStream;

use crate::metrics::ListenerMetrics;

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame header length.
const FRAME_HEADER_LEN: usize = 9;
/// Frame type SETTINGS (RFC 9113 §6.5).
const FRAME_SETTINGS: u8 = 0x4;
/// An empty SETTINGS frame (the server's preface) followed by GOAWAY with
/// last stream 0 and PROTOCOL_ERROR (0x1), RFC 9113 §6.8.
const SETTINGS_THEN_GOAWAY_PROTOCOL_ERROR: [u8; 26] = [
    0,
    0,
    0,
    FRAME_SETTINGS,
    0,
    0,
    0,
    0,
    0, // empty SETTINGS
    0,
    0,
    8,
    0x7,
    0,
    0,
    0,
    0,
    0, // GOAWAY header, length 8, stream 0
    0,
    0,
    0,
    0, // last stream id 0
    0,
    0,
    0,
    1, // PROTOCOL_ERROR
];

/// A downstream byte stream: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: the rustls state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the client's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstBytes {
    /// The HTTP/2 preface followed by a SETTINGS frame header.
    Http2,
    /// Anything else that is not the HTTP/2 preface (an HTTP/1.1 request,
    /// or garbage hyper will refuse).
    Other,
}

/// Why a connection ended before hyper saw it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrefaceError {
    /// The client closed before sending enough to decide.
    #[error("closed before the first request")]
    Closed,
    /// Read error.
    #[error("read: {0}")]
    Io(#[from] io::Error),
    /// The preface was followed by a frame other than SETTINGS; GOAWAY
    /// PROTOCOL_ERROR was sent.
    #[error("first frame after the preface is type {0:#x}, not SETTINGS")]
    NotSettings(u8),
}

/// Whether a connection ended because the client broke HTTP: a request
/// hyper could not parse (HTTP/1.1), or an HTTP/2 error the gateway's side
/// detected (PROTOCOL_ERROR, FRAME_SIZE_ERROR, ...: a GOAWAY it sent), as
/// opposed to I/O errors, timeouts and the client's own GOAWAY or reset.
pub(crate) fn is_protocol_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_too_large() || h.is_parse_version_h2())
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return !h2.is_io()
                && !h2.is_remote()
                && h2
                    .reason()
                    .is_some_and(|r| r != h2::Reason::NO_ERROR && r != h2::Reason::CANCEL);
        }
        cur = e.source();
    }
    false
}

/// Reads the client's first bytes: enough to tell the HTTP/2 preface from
/// anything else and, for HTTP/2, the first frame header, which must be
/// SETTINGS (answered with GOAWAY PROTOCOL_ERROR otherwise). Returns what
/// was read, to be replayed to hyper through [`Rewind`]. The caller bounds
/// the time this takes.
pub(crate) async fn read_first_bytes<T>(io: &mut T) -> Result<(FirstBytes, Bytes), PrefaceError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    const NEED: usize = H2_PREFACE.len() + FRAME_HEADER_LEN;
    let mut buf = BytesMut::with_capacity(NEED);
    loop {
        // Only ever reads up to what is needed to decide; hyper reads the rest.
        let mut limited = (&mut *io).take((NEED - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(PrefaceError::Closed);
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok((FirstBytes::Other, buf.freeze()));
        }
        if buf.len() == NEED {
            let kind = buf[H2_PREFACE.len() + 3];
            if kind != FRAME_SETTINGS {
                // Best effort: the connection is closed either way.
                let _ = io.write_all(&SETTINGS_THEN_GOAWAY_PROTOCOL_ERROR).await;
                let _ = io.shutdown().await;
                return Err(PrefaceError::NotSettings(kind));
            }
            return Ok((FirstBytes::Http2, buf.freeze()));
        }
    }
}

pin_project! {
    /// An IO that first replays bytes already read from it (as hyper-util's
    /// `Rewind`), then reads from the inner stream.
    pub struct Rewind<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

// === impl Rewind ===

impl<T> Rewind<T> {
    /// Replays `prefix` before reading `inner`.
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project! {
    /// An IO that counts the bytes read and written in its listener's
    /// metrics (one relaxed atomic add per read or write call, on the
    /// connection's shard).
    pub struct Counted<T> {
        #[pin]
        inner: T,
        metrics: Arc<ListenerMetrics>,
        conn: u64,
    }
}

// === impl Counted ===

impl<T> Counted<T> {
    /// Counts `inner`'s bytes in `metrics`, as connection `conn` (its
    /// accept order).
    pub(crate) fn new(inner: T, metrics: Arc<ListenerMetrics>, conn: u64) -> Self {
        Self {
            inner,
            metrics,
            conn,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.metrics.received(*this.conn, n);
        }
        res
    }
}

impl<T: AsyncWrite> Counted<T> {
    fn count(&self, res: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = res {
            self.metrics.sent(self.conn, *n);
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = self.as_mut().project().inner.poll_write(cx, buf);
        self.count(&res);
        res
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        self.count(&res);
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

// === impl Stream ===

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Premature-reset policy of a listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrematureReset {
    /// A stream ended by the client within this time is premature.
    pub min_stream_lifetime: Duration,
    /// Streams a connection must have had before the check applies; 0 = off.
    pub total_stream_count: u64,
}

/// Live state of one downstream connection, shared between its task, its
/// streams and the listener (which may ask an idle one to close).
pub(crate) struct ConnState {
    /// Accept order; lower is older.
    pub id: u64,
    /// Streams (HTTP/2) or requests (HTTP/1.1) whose response has not ended.
    open: AtomicUsize,
    /// Streams opened so far.
    streams: AtomicU64,
    /// Streams the client ended within the minimum lifetime.
    premature: AtomicU64,
    /// Too many premature resets: the connection should close.
    tripped: AtomicBool,
    /// The listener asked this connection to close (listener full).
    shed: AtomicBool,
    /// When `open` last went to 0, in ms since `born` (read lazily by the
    /// idle timer: no wake-up per request).
    idle_since_ms: AtomicU64,
    born: Instant,
    /// Woken when a close is requested (shed, premature resets).
    changed: Notify,
    policy: PrematureReset,
    /// The listener's counters (requests in flight).
    metrics: Arc<ListenerMetrics>,
}

// === impl ConnState ===

impl ConnState {
    /// A new connection with accept order `id`, counting its requests in
    /// flight in `metrics`.
    pub(crate) fn new(id: u64, policy: PrematureReset, metrics: Arc<ListenerMetrics>) -> Self {
        Self {
            id,
            open: AtomicUsize::new(0),
            streams: AtomicU64::new(0),
            premature: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            born: Instant::now(),
            changed: Notify::new(),
            policy,
            metrics,
        }
    }

    /// Streams open now.
    pub(crate) fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a new stream until the returned guard drops.
    pub(crate) fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.metrics.request_started(self.id);
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard {
            conn: self.clone(),
            opened: Instant::now(),
            finished: AtomicBool::new(false),
        }
    }

    /// Asks the connection to close if it has no open stream; true if it
    /// was idle (and not already asked).
    pub(crate) fn shed_if_idle(&self) -> bool {
        if self.open_streams() != 0 || self.shed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.changed.notify_one();
        true
    }

    /// The listener asked this connection to close.
    pub(crate) fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// More than half of at least `total_stream_count` streams were
    /// premature resets.
    pub(crate) fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// (streams opened, premature resets) so far.
    pub(crate) fn reset_counts(&self) -> (u64, u64) {
        (
            self.streams.load(Ordering::Relaxed),
            self.premature.load(Ordering::Relaxed),
        )
    }

    /// When the connection last had no open stream (its accept time if it
    /// never had one); meaningful while `open_streams() == 0`.
    pub(crate) fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Waits for a close request (shed, premature resets). Cancel-safe (a
    /// notification is kept as a permit).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn stream_closed(&self, premature: bool) {
        self.metrics.request_ended(self.id);
        if premature {
            let premature = self.premature.fetch_add(1, Ordering::Relaxed) + 1;
            let total = self.streams.load(Ordering::Relaxed);
            let min = self.policy.total_stream_count;
            if min > 0
                && total >= min
                && premature * 2 > total
                && !self.tripped.swap(true, Ordering::AcqRel)
            {
                self.changed.notify_one();
            }
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = self.born.elapsed().as_millis() as u64;
            self.idle_since_ms.store(ms, Ordering::Release);
        }
    }
}

/// One open stream; dropping it closes the stream in the count. A stream
/// dropped before its response ended, sooner than the minimum lifetime
/// after it opened, was reset by the client: a premature reset.
pub(crate) struct StreamGuard {
    conn: Arc<ConnState>,
    opened: Instant,
    finished: AtomicBool,
}

impl StreamGuard {
    fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let premature = !self.finished.load(Ordering::Relaxed)
            && self.opened.elapsed() < self.conn.policy.min_stream_lifetime;
        self.conn.stream_closed(premature);
    }
}

pin_project! {
    /// A response body that holds its stream's [`StreamGuard`] until it
    /// ends or is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: StreamGuard,
    }
}

// === impl TrackedBody ===

impl<B> TrackedBody<B> {
    /// Ties `guard` to `inner`.
    pub(crate) fn new(inner: B, guard: StreamGuard) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        // The end (trailers are last; hyper need not poll past them), or
        // an error of ours (not a client reset).
        let end = match &res {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Pending => false,
        };
        if end {
            this.guard.finish();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            // hyper may send END_STREAM without polling an empty body.
            self.guard.finish();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first(bytes: &[u8]) -> (Result<(FirstBytes, Bytes), PrefaceError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(bytes).await.expect("write");
        drop(client.shutdown().await);
        let res = read_first_bytes(&mut server).await;
        drop(server);
        let mut written = Vec::new();
        let _ = client.read_to_end(&mut written).await;
        (res, written)
    }

    #[tokio::test]
    async fn first_bytes() {
        let mut settings = H2_PREFACE.to_vec();
        settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (res, written) = first(&settings).await;
        let (kind, replay) = res.expect("h2");
        assert_eq!(kind, FirstBytes::Http2);
        assert_eq!(&replay[..], &settings[..]);
        assert!(written.is_empty());

        let (res, _) = first(b"GET / HTTP/1.1\r\n").await;
        let (kind, replay) = res.expect("h1");
        assert_eq!(kind, FirstBytes::Other);
        assert_eq!(&replay[..], b"GET / HTTP/1.1\r\n");

        let mut headers = H2_PREFACE.to_vec();
        headers.extend_from_slice(&[0, 0, 5, 1, 4, 0, 0, 0, 1]);
        let (res, written) = first(&headers).await;
        assert!(matches!(res, Err(PrefaceError::NotSettings(1))), "{res:?}");
        assert_eq!(written, SETTINGS_THEN_GOAWAY_PROTOCOL_ERROR);

        let (res, _) = first(&H2_PREFACE[..10]).await;
        assert!(matches!(res, Err(PrefaceError::Closed)), "{res:?}");
    }

    #[test]
    fn premature_resets_trip_past_half() {
        let conn = Arc::new(ConnState::new(
            0,
            PrematureReset {
                min_stream_lifetime: Duration::from_secs(60),
                total_stream_count: 4,
            },
            Arc::default(),
        ));
        for _ in 0..2 {
            let g = conn.open_stream();
            g.finish();
        }
        for _ in 0..2 {
            drop(conn.open_stream());
        }
        // 2 of 4: not more than half.
        assert!(!conn.is_tripped());
        drop(conn.open_stream());
        assert!(conn.is_tripped());
        assert_eq!(conn.open_streams(), 0);
        assert_eq!(conn.reset_counts(), (5, 3));
    }
}
