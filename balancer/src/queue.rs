//! Admission: a request takes a slot on an endpoint under the per-endpoint
//! stream limit (`max_requests_per_endpoint`, HAProxy's `maxconn`), or
//! waits in the cluster's bounded FIFO queue (`max_queue`) for at most
//! `queue_timeout_ms` until one frees up (linkerd2-proxy's `QueueConfig`:
//! bounded, fail fast). A taken slot becomes a [`Lease`](crate::Lease),
//! whose drop frees it and wakes the next waiter ([`Queue::slot_freed`]).

use std::{
    pin::pin,
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    cluster::EndpointSet,
    config::ClusterName,
    error::BalancerError,
    pick::Pick,
    stats::{AtomicHistogram, HistogramSnapshot, QUEUE_WAIT_BUCKETS_SECONDS},
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
    /// How long admitted (or timed-out) requests waited; 0 when a slot
    /// was free at once.
    waited: AtomicHistogram,
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
            waited: AtomicHistogram::seconds(&QUEUE_WAIT_BUCKETS_SECONDS),
        }
    }

    /// The wait histogram now.
    pub(crate) fn wait_histogram(&self) -> HistogramSnapshot {
        self.waited.snapshot()
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
            Pick::Picked(index) => {
                self.waited.observe_duration(Duration::ZERO);
                Ok(index)
            }
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
        let result = self.wait_from(start, cluster, set, skip, key).await;
        if matches!(result, Ok(_) | Err(BalancerError::QueueTimeout { .. })) {
            self.waited.observe_duration(start.elapsed());
        }
        result
    }

    async fn wait_from(
        &self,
        start: Instant,
        cluster: &ClusterName,
        set: &EndpointSet,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Result<usize, BalancerError> {
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

#[cfg(test)]
mod tests;
