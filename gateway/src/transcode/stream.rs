//! A server stream transcoded message by message: NDJSON (one object a
//! line, the default), SSE (`data: {...}`), or a JSON array streamed
//! element by element. Each message is sent as soon as it is decoded;
//! an error after the start ends the stream with a final error record,
//! never a silent cut.

use std::{
    future::poll_fn,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use balancer::body::UpstreamIncoming;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body::{Body, Frame};
use tokio::time::Sleep;

use balancer::{body::BoxError, grpc::frame::FrameDecoder};
use descriptors::{DescriptorError, HttpBinding, JsonOptions, MethodInfo, Snapshot, json};

use super::{
    Codec, FailureSlot, UpstreamStatus, count_error, reply_error_kind, spawn_pool_build, timed,
};
use crate::{
    access_log::BodyCounts,
    error::Termination,
    forward::Exchange,
    metrics::{TranscodeDirection, TranscodeErrorKind},
    respond::{Code, ResponseBody},
};

/// How a server stream is framed for an HTTP caller, chosen by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFormat {
    /// `application/x-ndjson`: one JSON object a line (the default).
    Ndjson,
    /// `text/event-stream`: `data: {...}` events, errors as `event: error`.
    Sse,
    /// `application/json`: one JSON array, streamed element by element.
    JsonArray,
}

impl StreamFormat {
    /// Picks the format from an `Accept` header.
    pub(crate) fn from_accept(accept: Option<&HeaderValue>) -> Self {
        let Some(a) = accept.and_then(|v| v.to_str().ok()) else {
            return Self::Ndjson;
        };
        let a = a.to_ascii_lowercase();
        if a.contains("text/event-stream") {
            Self::Sse
        } else if a.contains("application/x-ndjson") || a.contains("application/jsonl") {
            Self::Ndjson
        } else if a.contains("application/json") {
            Self::JsonArray
        } else {
            Self::Ndjson
        }
    }

    /// The response `content-type`.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Sse => "text/event-stream",
            Self::JsonArray => "application/json",
        }
    }
}

/// The response for a stream that ended at once without a message.
pub(super) fn empty_response(format: StreamFormat) -> Response<ResponseBody> {
    let body = match format {
        StreamFormat::JsonArray => Bytes::from_static(b"[]"),
        _ => Bytes::new(),
    };
    let mut r = Response::new(crate::respond::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

/// Everything a [`JsonStream`] is made of.
pub(super) struct JsonStreamParts {
    pub inner: UpstreamIncoming,
    pub exchange: Exchange,
    pub snapshot: Arc<Snapshot>,
    pub method: Arc<MethodInfo>,
    pub binding: Option<Arc<HttpBinding>>,
    pub opts: JsonOptions,
    pub max_message: usize,
    pub format: StreamFormat,
    pub deadline: Option<tokio::time::Instant>,
    pub failure: FailureSlot,
    pub codec: Codec,
    pub counts: Arc<BodyCounts>,
}

enum Event {
    /// Messages are in `scratch`, framed for the stream's format.
    Message,
    End(Option<(i32, String, Option<Vec<u8>>)>),
}

/// Most output bytes one chunk of a stream coalesces from the messages
/// already received.
const COALESCE_BYTES: usize = 16 * 1024;

/// The streaming response body.
pub(super) struct JsonStream {
    inner: Option<UpstreamIncoming>,
    exchange: Exchange,
    snapshot: Arc<Snapshot>,
    method: Arc<MethodInfo>,
    binding: Option<Arc<HttpBinding>>,
    opts: JsonOptions,
    decoder: FrameDecoder,
    format: StreamFormat,
    deadline: Option<Pin<Box<Sleep>>>,
    failure: FailureSlot,
    /// Messages sent so far.
    sent: u64,
    /// A first event read ahead of the response head.
    pending: Option<Event>,
    done: bool,
    scratch: Vec<u8>,
    /// A message whose conversion waits for the descriptor pool, being
    /// built on a blocking thread (a worker thread builds none).
    waiting: Option<(tokio::task::JoinHandle<()>, Bytes)>,
    codec: Codec,
    /// Messages decoded (metrics).
    counts: Arc<BodyCounts>,
}

impl JsonStream {
    pub(super) fn new(p: JsonStreamParts) -> Self {
        Self {
            inner: Some(p.inner),
            exchange: p.exchange,
            snapshot: p.snapshot,
            method: p.method,
            binding: p.binding,
            opts: p.opts,
            decoder: FrameDecoder::new(p.max_message),
            format: p.format,
            deadline: p.deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            failure: p.failure,
            sent: 0,
            pending: None,
            done: false,
            scratch: Vec::new(),
            waiting: None,
            codec: p.codec,
            counts: p.counts,
        }
    }

    /// Reads ahead to the first message; returns the status when the call
    /// failed before sending any.
    pub(super) async fn first_event(&mut self) -> Option<(i32, String, Option<Vec<u8>>)> {
        let ev = poll_fn(|cx| self.poll_event(cx)).await;
        match ev {
            Event::End(Some((code, message, details))) if code != 0 => {
                self.report(code);
                self.exchange.set_grpc_status(code);
                self.exchange
                    .set_http_status(Code::from_i32(code).http_status().as_u16());
                self.finish(Termination::Normal);
                Some((code, message, details))
            }
            ev => {
                self.pending = Some(ev);
                None
            }
        }
    }

    pub(super) fn log_start(&self) {
        self.exchange.log_start();
    }

    /// Reports the stream's final status to outlier detection.
    fn report(&self, code: i32) {
        self.exchange.upstream_status(Some(code));
    }

    fn finish(&mut self, termination: Termination) {
        self.done = true;
        self.inner = None;
        self.exchange.finish(termination);
    }

    /// Appends message `msg` to `scratch`, framed for the stream's format:
    /// [`Event::Message`], or the error that ends the stream (`scratch` as
    /// it was). `None` when the conversion needs the descriptor pool: it is
    /// being built on a blocking thread, and `msg` waits in `waiting` (once:
    /// a message back from waiting ends the stream instead).
    fn convert(&mut self, msg: Bytes, may_wait: bool) -> Option<Event> {
        let start = self.scratch.len();
        self.scratch.extend_from_slice(match self.format {
            StreamFormat::Ndjson => b"",
            StreamFormat::Sse => b"data: ",
            StreamFormat::JsonArray if self.sent == 0 => b"[",
            StreamFormat::JsonArray => b",",
        });
        if may_wait {
            // Counted once: a message back from waiting was counted then.
            self.counts.add_response_messages(1);
        }
        let res = timed(&self.codec, TranscodeDirection::ProtoToJson, || {
            descriptors::without_pool_builds(|| {
                json::response_to_json(
                    &self.method,
                    self.binding.as_deref(),
                    &msg,
                    &self.opts,
                    &mut self.scratch,
                )
            })
        });
        match res {
            Ok(()) => {
                self.scratch.extend_from_slice(match self.format {
                    StreamFormat::Ndjson => b"\n",
                    StreamFormat::Sse => b"\n\n",
                    StreamFormat::JsonArray => b"",
                });
                self.sent += 1;
                Some(Event::Message)
            }
            Err(DescriptorError::PoolNotBuilt) if may_wait => {
                self.scratch.truncate(start);
                self.waiting = Some((spawn_pool_build(&self.method), msg));
                None
            }
            Err(e) => {
                self.scratch.truncate(start);
                count_error(&self.codec, reply_error_kind(&e));
                tracing::debug!(error = %e, "Bad upstream message");
                Some(end(Code::Internal, super::unrenderable(&e)))
            }
        }
    }

    /// Converts the messages already received (none, or up to
    /// [`COALESCE_BYTES`] of output) after the one in `scratch`, so a burst
    /// goes out as one chunk; an event that ends the stream is kept for
    /// the next poll.
    fn coalesce(&mut self) {
        while self.scratch.len() < COALESCE_BYTES {
            match self.decoder.next_message() {
                Ok(Some(msg)) => match self.convert(msg, true) {
                    Some(Event::Message) => {}
                    Some(ev) => {
                        self.pending = Some(ev);
                        return;
                    }
                    None => return, // waits for the pool
                },
                // Errors are reported by the next `poll_event`.
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if let Some((build, _)) = &mut self.waiting {
                if Pin::new(build).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some((_, msg)) = self.waiting.take()
                    && let Some(ev) = self.convert(msg, false)
                {
                    return Poll::Ready(ev);
                }
            }
            match self.decoder.next_message() {
                Ok(Some(msg)) => match self.convert(msg, true) {
                    Some(ev) => return Poll::Ready(ev),
                    None => continue, // polls the build
                },
                Ok(None) => {}
                Err(e) => {
                    let (code, kind) = match e {
                        balancer::grpc::frame::FrameError::TooLarge { .. } => {
                            (Code::ResourceExhausted, TranscodeErrorKind::TooLarge)
                        }
                        _ => (Code::Internal, TranscodeErrorKind::BadReply),
                    };
                    count_error(&self.codec, kind);
                    return Poll::Ready(end(code, &e.to_string()));
                }
            }
            if let Some(d) = &mut self.deadline
                && d.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(end(Code::DeadlineExceeded, "deadline exceeded"));
            }
            let Some(inner) = &mut self.inner else {
                return Poll::Ready(Event::End(None));
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.decoder.push(&data);
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            let ev = match UpstreamStatus::from_headers(&t) {
                                Some(st) => Event::End(Some((st.code, st.message, st.details))),
                                None => {
                                    end(Code::Unknown, "upstream stream ended without a status")
                                }
                            };
                            return Poll::Ready(ev);
                        }
                    }
                },
                Poll::Ready(Some(Err(_))) => {
                    if let Some(e) = self.failure.get() {
                        return Poll::Ready(end(e.code(), &e.message()));
                    }
                    return Poll::Ready(end(Code::Unavailable, "upstream stream failed"));
                }
                Poll::Ready(None) => {
                    if let Some(e) = self.failure.get() {
                        return Poll::Ready(end(e.code(), &e.message()));
                    }
                    return Poll::Ready(end(
                        Code::Unknown,
                        "upstream stream ended without a status",
                    ));
                }
            }
        }
    }

    /// Formats one event as output bytes; None when nothing is to be sent.
    fn render(&mut self, ev: Event) -> Option<Bytes> {
        match ev {
            Event::Message => {
                if self.pending.is_none() {
                    self.coalesce();
                }
                let out = Bytes::copy_from_slice(&self.scratch);
                self.scratch.clear();
                self.exchange.add_bytes(out.len());
                Some(out)
            }
            Event::End(status) => {
                let mut out = BytesMut::new();
                let (code, message, details) =
                    status.unwrap_or((Code::Unknown as i32, String::new(), None));
                self.exchange.set_grpc_status(code);
                if code == 0 {
                    if self.format == StreamFormat::JsonArray {
                        out.put_slice(if self.sent == 0 { b"[]" } else { b"]" });
                    }
                } else {
                    let err = json::status_to_json(
                        self.snapshot.codec(),
                        code,
                        &message,
                        details.as_deref(),
                    );
                    let record = serde_json::json!({ "error": err }).to_string();
                    match self.format {
                        StreamFormat::Ndjson => {
                            out.put_slice(record.as_bytes());
                            out.put_u8(b'\n');
                        }
                        StreamFormat::Sse => {
                            out.put_slice(b"event: error\ndata: ");
                            out.put_slice(err.to_string().as_bytes());
                            out.put_slice(b"\n\n");
                        }
                        StreamFormat::JsonArray => {
                            out.put_u8(if self.sent == 0 { b'[' } else { b',' });
                            out.put_slice(record.as_bytes());
                            out.put_u8(b']');
                        }
                    }
                }
                let termination = if code == 0 {
                    Termination::Normal
                } else {
                    Termination::ServerData
                };
                self.report(code);
                self.exchange.add_bytes(out.len());
                self.finish(termination);
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }
}

fn end(code: Code, message: &str) -> Event {
    Event::End(Some((code as i32, message.to_string(), None)))
}

impl Body for JsonStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done && this.pending.is_none() {
                return Poll::Ready(None);
            }
            let ev = match this.pending.take() {
                Some(ev) => ev,
                None => match this.poll_event(cx) {
                    Poll::Ready(ev) => ev,
                    Poll::Pending => return Poll::Pending,
                },
            };
            if let Some(bytes) = this.render(ev) {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}
