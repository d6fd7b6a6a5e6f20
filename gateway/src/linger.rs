//! The request body as the pipeline takes it: hyper's, read on for a while
//! when it is dropped unfinished. A response can end before its request
//! does (an error answered at once, a backend's early reply). Dropping the
//! rest makes HTTP/2 reset the stream, and h2 counts the client's frames
//! that arrive after that as errors of its own, closing the connection
//! with GOAWAY `ENHANCE_YOUR_CALM` after 1,024 of them (hyperium/h2#856); on
//! HTTP/1.1 it makes hyper close the connection. Reading and discarding the
//! rest, up to [`LINGER_BYTES`] or [`LINGER_TIME`], ends the stream the
//! ordinary way instead (nginx's lingering close).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Most bytes read and discarded after a drop.
pub(crate) const LINGER_BYTES: usize = 256 * 1024;
/// Longest wait for the rest of a dropped body.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(1);

/// A client's request body.
pub(crate) type FrontBody = Lingering<Incoming>;

/// `B`, drained in a task of its own when dropped before its end.
pub(crate) struct Lingering<B: Body + Unpin + Send + 'static> {
    inner: Option<B>,
}

impl<B: Body + Unpin + Send + 'static> Lingering<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self { inner: Some(inner) }
    }
}

impl<B: Body + Unpin + Send + 'static> Body for Lingering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B: Body + Unpin + Send + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads `body` to its end, discarding it, within the linger bounds.
async fn drain<B: Body + Unpin>(mut body: B) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.remaining());
            }
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}
