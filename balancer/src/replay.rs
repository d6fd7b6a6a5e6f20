//! A request body that can be sent again: it keeps a copy of what it has
//! sent, up to a limit, so a request refused by one endpoint (REFUSED_STREAM,
//! or a retryable status before any response message) can be replayed to
//! another. Once more than the limit was sent, or a replay started, older
//! copies cannot be polled (linkerd2-proxy's `ReplayBody`, simplified).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::{
    body::{BoxError, UpstreamBody},
    budget::{MemoryBudget, Reservation},
};

/// Default largest request kept for replay.
pub const DEFAULT_REPLAY_BYTES: usize = 64 * 1024;

struct State {
    inner: Option<UpstreamBody>,
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: usize,
    limit: usize,
    /// More than `limit` bytes went out: no replay possible.
    over: bool,
    /// The inner body ended (everything is in `frames`/`trailers`).
    ended: bool,
    /// Bumped by each replay; older bodies stop.
    generation: u32,
    /// The kept bytes, taken from the process-wide budget; when it has no
    /// room, the copy is given up (no replay) instead of kept.
    reservation: Option<Reservation>,
}

/// One copy of the request body.
pub struct ReplayBody {
    state: Arc<Mutex<State>>,
    generation: u32,
    /// Frames of `state.frames` already yielded by this copy.
    pos: usize,
    trailers_sent: bool,
}

/// A handle on the kept copy, to decide on and start replays.
#[derive(Clone)]
pub struct ReplayHandle {
    state: Arc<Mutex<State>>,
}

impl ReplayBody {
    /// Wraps `inner`, keeping up to `limit` bytes for replay, taken from
    /// `budget` when given.
    pub fn new(
        inner: UpstreamBody,
        limit: usize,
        budget: Option<&MemoryBudget>,
    ) -> (Self, ReplayHandle) {
        let ended = inner.is_end_stream();
        let body = Self {
            state: Arc::new(Mutex::new(State {
                inner: Some(inner),
                frames: Vec::new(),
                trailers: None,
                len: 0,
                limit,
                over: false,
                ended,
                generation: 0,
                reservation: budget.map(MemoryBudget::reserve_empty),
            })),
            generation: 0,
            pos: 0,
            trailers_sent: false,
        };
        let handle = ReplayHandle {
            state: body.state.clone(),
        };
        (body, handle)
    }
}

impl ReplayHandle {
    /// Whether a replay is possible: nothing beyond the limit was sent.
    pub fn can_replay(&self) -> bool {
        self.state.lock().map(|s| !s.over).unwrap_or(false)
    }

    /// Whether the whole body has been read (a complete request, e.g. a
    /// unary call's one message).
    pub fn is_complete(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.ended && !s.over)
            .unwrap_or(false)
    }

    /// A new copy that sends everything again; earlier copies stop.
    pub fn replay(&self) -> Option<ReplayBody> {
        let mut s = self.state.lock().ok()?;
        if s.over {
            return None;
        }
        s.generation += 1;
        Some(ReplayBody {
            state: self.state.clone(),
            generation: s.generation,
            pos: 0,
            trailers_sent: false,
        })
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut s) = this.state.lock() else {
            return Poll::Ready(Some(Err("replay body poisoned".into())));
        };
        if s.generation != this.generation {
            return Poll::Ready(Some(Err("request body replaced by a retry".into())));
        }
        if this.pos < s.frames.len() {
            let f = s.frames[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(f))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(inner) = s.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.inner = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !s.over {
                        let n = data.len();
                        let budgeted = s.reservation.as_mut().is_none_or(|r| r.grow(n));
                        if budgeted && s.len + n <= s.limit {
                            s.len += n;
                            s.frames.push(data.clone());
                            this.pos = s.frames.len();
                        } else {
                            s.over = true;
                            s.frames = Vec::new();
                            if let Some(r) = s.reservation.as_mut() {
                                r.release();
                            }
                            this.pos = 0;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    s.inner = None;
                    this.trailers_sent = true;
                }
                // Ended with this frame: say so now, so the frame goes out
                // with END_STREAM instead of an extra empty DATA frame
                // (which h2 peers budget as a possible flood).
                if !s.ended && s.inner.as_ref().is_some_and(Body::is_end_stream) {
                    s.ended = true;
                    s.inner = None;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.generation == self.generation
                && s.ended
                && self.pos >= s.frames.len()
                && (self.trailers_sent || s.trailers.is_none())
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn replays_what_was_sent() {
        let (first, handle) =
            ReplayBody::new(crate::body::full(Bytes::from_static(b"hello")), 16, None);
        let _second = handle.replay().expect("replayable");
        // The first copy is dead once a replay exists.
        assert!(first.collect().await.is_err());
        let third = handle.replay().expect("replayable");
        let got = third.collect().await.expect("body").to_bytes();
        assert_eq!(got.as_ref(), b"hello");
    }

    #[tokio::test]
    async fn over_the_limit_cannot_replay() {
        let (body, handle) =
            ReplayBody::new(crate::body::full(Bytes::from(vec![0u8; 100])), 16, None);
        assert!(handle.can_replay() && !handle.is_complete());
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!(got.len(), 100);
        assert!(!handle.can_replay());
        assert!(handle.replay().is_none());
        let (small, handle) =
            ReplayBody::new(crate::body::full(Bytes::from_static(b"x")), 16, None);
        let _ = small.collect().await;
        assert!(handle.is_complete());
    }

    #[tokio::test]
    async fn no_room_in_the_budget_means_no_copy() {
        let budget = MemoryBudget::new(10);
        let (body, handle) = ReplayBody::new(
            crate::body::full(Bytes::from_static(b"0123456789abc")),
            64,
            Some(&budget),
        );
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!(got.len(), 13, "the request itself goes through");
        assert!(!handle.can_replay());
        assert_eq!(budget.used(), 0);
        let (body, handle) = ReplayBody::new(
            crate::body::full(Bytes::from_static(b"01234")),
            64,
            Some(&budget),
        );
        let _ = body.collect().await;
        assert!(handle.is_complete());
        assert_eq!(budget.used(), 5, "kept while the copy lives");
        drop(handle);
        assert_eq!(budget.used(), 0);
    }
}
