//! A client-streaming request body given as NDJSON: each line is turned
//! into one gRPC message as soon as it has arrived (over HTTP/2 or chunked
//! HTTP/1.1), so the upstream sees messages while the client is still
//! sending. A bad line fails the call with INVALID_ARGUMENT.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::linger::FrontBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use balancer::body::BoxError;
use descriptors::{DescriptorError, JsonOptions, MethodInfo, json};

use super::{
    Codec, FailureSlot, count_error, invalid, request_error_kind, spawn_pool_build, timed,
    too_large,
};
use balancer::grpc::frame as grpc_frame;

use crate::{
    access_log::BodyCounts,
    limits::Reservation,
    metrics::{TranscodeDirection, TranscodeErrorKind},
};

pub(super) struct NdjsonBody {
    inner: FrontBody,
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    method: std::sync::Arc<MethodInfo>,
    opts: JsonOptions,
    max_line: usize,
    failure: FailureSlot,
    eof: bool,
    scratch: Vec<u8>,
    /// `buf`'s bytes, taken from the buffered-bytes budget.
    held: Reservation,
    codec: Codec,
    /// Bytes received and messages built (metrics).
    counts: std::sync::Arc<BodyCounts>,
    /// A line waiting for the descriptor pool, built on a blocking thread
    /// (a type the codec leaves to prost-reflect; never built on the
    /// connection's worker).
    waiting: Option<(tokio::task::JoinHandle<()>, BytesMut)>,
}

/// What became of one line.
enum Line {
    Message(Bytes),
    Blank,
    /// Set aside in `waiting`.
    Waiting,
}

impl NdjsonBody {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        inner: FrontBody,
        method: std::sync::Arc<MethodInfo>,
        opts: JsonOptions,
        max_line: usize,
        failure: FailureSlot,
        held: Reservation,
        codec: Codec,
        counts: std::sync::Arc<BodyCounts>,
    ) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            scanned: 0,
            method,
            opts,
            max_line,
            failure,
            eof: false,
            scratch: Vec::new(),
            held,
            codec,
            counts,
            waiting: None,
        }
    }

    fn fail(&self, e: crate::respond::GatewayError) -> BoxError {
        let msg = e.message();
        let _ = self.failure.set(e);
        msg.into()
    }

    /// Converts one line. When it needs the descriptor pool, the pool is
    /// built on a blocking thread and the line waits (once: a line back
    /// from waiting fails instead).
    fn convert(&mut self, line: BytesMut, may_wait: bool) -> Result<Line, BoxError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(Line::Blank);
        }
        self.scratch.clear();
        let (method, opts, scratch) = (&*self.method, &self.opts, &mut self.scratch);
        let built = timed(&self.codec, TranscodeDirection::JsonToProto, || {
            descriptors::without_pool_builds(|| {
                json::request_to_proto(method, &line, opts, scratch)
            })
        });
        match built {
            Ok(()) => {}
            Err(DescriptorError::PoolNotBuilt) if may_wait => {
                self.waiting = Some((spawn_pool_build(&self.method), line));
                return Ok(Line::Waiting);
            }
            Err(e) => {
                count_error(&self.codec, request_error_kind(&e));
                return Err(self.fail(invalid(&e)));
            }
        }
        self.counts.add_request_messages(1);
        Ok(Line::Message(grpc_frame::encode(&self.scratch)))
    }
}

impl Body for NdjsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some((mut build, line)) = this.waiting.take() {
                if Pin::new(&mut build).poll(cx).is_pending() {
                    this.waiting = Some((build, line));
                    return Poll::Pending;
                }
                match this.convert(line, false) {
                    Ok(Line::Message(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                    Ok(Line::Blank | Line::Waiting) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            if let Some(pos) = this.buf[this.scanned..].iter().position(|b| *b == b'\n') {
                let line = this.buf.split_to(this.scanned + pos + 1);
                this.scanned = 0;
                this.held.set(this.buf.len());
                match this.convert(line, true) {
                    Ok(Line::Message(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                    Ok(Line::Blank | Line::Waiting) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            this.scanned = this.buf.len();
            if this.buf.len() > this.max_line {
                count_error(&this.codec, TranscodeErrorKind::TooLarge);
                let e = this.fail(too_large("NDJSON line", this.max_line));
                return Poll::Ready(Some(Err(e)));
            }
            if this.eof {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let line = this.buf.split();
                this.scanned = 0;
                match this.convert(line, true) {
                    Ok(Line::Message(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                    Ok(Line::Blank) => return Poll::Ready(None),
                    Ok(Line::Waiting) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.counts.add_request_bytes(data.len());
                        if !this.held.grow(data.len()) {
                            let e = this.fail(crate::limits::over_budget());
                            return Poll::Ready(Some(Err(e)));
                        }
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.eof = true,
            }
        }
    }
}
