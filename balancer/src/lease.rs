//! In-flight accounting and outcome reporting for one exchange: a
//! [`Lease`] is a slot taken on an endpoint (see `queue`); while it lives
//! the endpoint counts one stream in flight (what `least_request`
//! compares and `max_requests_per_endpoint` bounds), and through it the
//! caller reports how the exchange ended ([`Outcome`]) to outlier
//! detection. [`LeasedBody`] does both for any response body: it keeps the
//! lease until the body ends and reports what the body showed, so every
//! protocol's response path can feed outlier detection the same way
//! (streams included: load counts until end-of-stream, STYLE H11).
//!
//! What counts, in one table:
//!
//! | the exchange | reported as |
//! |---|---|
//! | gRPC: trailers (or a trailers-only head) with `grpc-status` | `Outcome::Status(code)` |
//! | gRPC: trailers (or a trailers-only head) without it | `Outcome::Failed` |
//! | the body failed (reset, I/O) | `Outcome::Failed` |
//! | the body ended without trailers; plain HTTP's end | nothing |
//! | dropped before the end (the client went away) | nothing |
//!
//! (What `gateway::proxy` reports by hand for gRPC and plain HTTP today.)
//!
//! Only a lease's first report counts, and a lease dropped without one
//! counts for nothing: neither a client that went away nor a caller that
//! never learned the outcome says anything about the server.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::{
    body::BoxError, cluster::Cluster, config::ClusterName, endpoint::Endpoint,
    headers::grpc_status, outlier::Outcome,
};

/// A taken slot on an endpoint; dropping it frees the slot. Keep it for as
/// long as the stream lives (until the response body ends), so the
/// endpoint's in-flight count covers streams as well as unary calls.
///
/// Report how the exchange ended with [`Lease::record`] (or
/// [`Lease::record_status`]) once, when the response ends: only the first
/// report counts. A lease dropped without a report counts for nothing in
/// outlier detection (neither success nor failure): that is a client that
/// went away, or a caller that never learned the outcome, and neither
/// says anything about the server. The slot is freed either way.
pub struct Lease {
    cluster: Arc<Cluster>,
    endpoint: Arc<Endpoint>,
    recorded: AtomicBool,
}

/// A response body that keeps its [`Lease`] until it ends and reports the
/// outcome it shows: the `grpc-status` of its trailers, or a failure when
/// the body fails; the lease is released at the end of the stream (or
/// when the body is dropped, reporting nothing).
pub struct LeasedBody<B> {
    inner: B,
    lease: Option<Lease>,
    /// gRPC: trailers carry the outcome.
    grpc: bool,
}

// === impl Lease ===

impl Lease {
    /// The lease of a slot already taken on `endpoint`.
    pub(crate) fn new(cluster: Arc<Cluster>, endpoint: Arc<Endpoint>) -> Self {
        Self {
            cluster,
            endpoint,
            recorded: AtomicBool::new(false),
        }
    }

    /// The endpoint serving the request.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterName {
        self.cluster.name()
    }

    /// Reports how the exchange ended, for outlier detection: the final
    /// gRPC status, or None when the stream failed (reset, I/O). Same as
    /// [`Lease::record`] with `Outcome::from(status)`.
    pub fn record_status(&self, status: Option<i32>) {
        self.record(Outcome::from(status));
    }

    /// Reports how the exchange ended, for outlier detection. Only the
    /// first report of a lease counts; see [`Lease`] for a lease dropped
    /// without one.
    pub fn record(&self, outcome: Outcome) {
        if self.recorded.swap(true, Relaxed) {
            return;
        }
        self.cluster.record_outcome(&self.endpoint, outcome);
    }

    /// Whether an outcome was reported.
    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Relaxed)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.release();
        self.cluster.queue().slot_freed();
    }
}

// === impl LeasedBody ===

impl<B: Body> LeasedBody<B> {
    /// Wraps a gRPC response body. `head` is the response head: a
    /// trailers-only answer (body already at its end) reports its status
    /// at once.
    pub fn grpc(head: &HeaderMap, inner: B, lease: Lease) -> Self {
        let mut this = Self {
            inner,
            lease: Some(lease),
            grpc: true,
        };
        if this.inner.is_end_stream() {
            this.end(Some(Outcome::from(grpc_status(head))));
        }
        this
    }

    /// Wraps a plain HTTP response body: only a failure is reported.
    pub fn http(inner: B, lease: Lease) -> Self {
        Self {
            inner,
            lease: Some(lease),
            grpc: false,
        }
    }

    /// The lease, until the body ends.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    fn end(&mut self, outcome: Option<Outcome>) {
        if let Some(lease) = self.lease.take()
            && let Some(outcome) = outcome
        {
            lease.record(outcome);
        }
    }
}

impl<B> Body for LeasedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    let grpc = this.grpc;
                    this.end(grpc.then(|| Outcome::from(grpc_status(trailers))));
                } else if this.inner.is_end_stream() {
                    this.end(None);
                }
            }
            Some(Err(_)) => this.end(Some(Outcome::Failed)),
            None => this.end(None),
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
