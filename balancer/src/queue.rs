//! Admission: a request takes a slot on an endpoint under the per-endpoint
//! stream limit (`max_requests_per_endpoint`, HAProxy's `maxconn`), or
//! waits in the cluster's bounded FIFO queue (`max_queue`) for at most
//! `queue_timeout_ms` until one frees up (linkerd2-proxy's `QueueConfig`:
//! bounded, fail fast). A taken slot is a [`Lease`]; it is the in-flight
//! count of its endpoint (what `least_request` compares) until dropped,
//! and the handle through which the response's [`Outcome`] reaches
//! outlier detection.

use std::{
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    cluster::{Cluster, EndpointSet},
    config::ClusterName,
    endpoint::Endpoint,
    error::BalancerError,
    outlier::Outcome,
    pick::Pick,
};

/// The admission state of one cluster.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Streams in flight per endpoint at most.
    limit: Option<u32>,
    /// Requests that may wait at once.
    max_queue: usize,
    /// Longest wait.
    timeout: Duration,
    /// Requests waiting now.
    waiting: AtomicUsize,
    /// Woken (one waiter, in FIFO order) when a slot frees up.
    slot_freed: Notify,
}

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

/// Leaves the waiting count when dropped (the wait may be cancelled).
struct Waiting<'a>(&'a AtomicUsize);

// === impl Queue ===

impl Queue {
    /// Admission with at most `limit` streams per endpoint, `max_queue`
    /// waiting requests, each waiting `timeout` at most.
    pub(crate) fn new(limit: Option<u32>, max_queue: usize, timeout: Duration) -> Self {
        Self {
            limit,
            max_queue,
            timeout,
            waiting: AtomicUsize::new(0),
            slot_freed: Notify::new(),
        }
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// Takes a slot on an eligible endpoint of `set` not in `skip`
    /// (returns its index), waiting in the bounded queue when all are full.
    pub(crate) async fn admit(
        &self,
        cluster: &ClusterName,
        set: &EndpointSet,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Result<usize, BalancerError> {
        match set.pick(self.limit, skip, key) {
            Pick::Picked(index) => Ok(index),
            Pick::NoneEligible => Err(BalancerError::NoHealthyEndpoint {
                cluster: cluster.clone(),
            }),
            // The waiting state lives on the heap, so the common path's
            // future stays small.
            Pick::AllFull => Box::pin(self.wait(cluster, set, skip, key)).await,
        }
    }

    /// The queue: waits, in FIFO order of wake-ups, for a slot to free up.
    async fn wait(
        &self,
        cluster: &ClusterName,
        set: &EndpointSet,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Result<usize, BalancerError> {
        if self.waiting.fetch_add(1, Relaxed) >= self.max_queue {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(BalancerError::QueueFull {
                cluster: cluster.clone(),
            });
        }
        let _waiting = Waiting(&self.waiting);
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.timeout);
        loop {
            // Register for a wake-up before looking, so a slot freed in
            // between is not missed.
            let mut freed = pin!(self.slot_freed.notified());
            freed.as_mut().enable();
            match set.pick(self.limit, skip, key) {
                Pick::Picked(i) => return Ok(i),
                Pick::NoneEligible => {
                    return Err(BalancerError::NoHealthyEndpoint {
                        cluster: cluster.clone(),
                    });
                }
                Pick::AllFull => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(BalancerError::QueueTimeout {
                    cluster: cluster.clone(),
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// A slot was freed: wake the first waiter, if any.
    pub(crate) fn slot_freed(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.slot_freed.notify_one();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
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

#[cfg(test)]
mod tests;
