//! The downstream request body on its way upstream, counted as it passes
//! (for the metrics): its bytes and, for gRPC, its messages, read from the
//! 5-byte frame headers without buffering.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use balancer::grpc::frame::FrameCounter;

use crate::access_log::BodyCounts;

/// `inner`, its bytes (and messages, with `frames`) added to `counts`.
pub(crate) struct CountedBody<B> {
    inner: B,
    counts: Arc<BodyCounts>,
    /// Set for gRPC: counts the messages.
    frames: Option<FrameCounter>,
}

impl<B> CountedBody<B> {
    /// Counts the bytes of `inner`, and its gRPC messages when `grpc`.
    pub(crate) fn new(inner: B, counts: Arc<BodyCounts>, grpc: bool) -> Self {
        Self {
            inner,
            counts,
            frames: grpc.then(FrameCounter::default),
        }
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &res
            && let Some(data) = frame.data_ref()
        {
            this.counts.add_request_bytes(data.len());
            if let Some(f) = &mut this.frames {
                this.counts.add_request_messages(f.feed(data));
            }
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
