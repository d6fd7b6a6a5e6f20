//! Counters of the application services' calls (CodenameCreator, Echo and LibraryService;
//! health and reflection are not counted, so background health checks don't disturb tests).

use std::{
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

/// Live counters of a [`SampleServer`](crate::SampleServer)'s CodenameCreator, Echo and
/// LibraryService calls.
///
/// A call lasts from the moment the server starts handling its request until its response
/// stream ended (trailers sent) or was dropped.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls started.
    pub requests: AtomicU64,
    /// Calls that ended because the client went away (stream reset, connection closed) before
    /// the response was complete, whether unary, `Slow` or streaming.
    pub cancelled: AtomicU64,
    /// `Slow` calls answered with DEADLINE_EXCEEDED because the `grpc-timeout` passed.
    pub deadline_exceeded: AtomicU64,
    /// Calls in flight now.
    pub in_flight: AtomicU64,
    /// Highest number of calls that were in flight at once.
    pub max_in_flight: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Notified (`notify_waiters`) after any counter changed; prefer [`Stats::wait_until`].
    pub changed: Notify,
}

// === impl Stats ===

impl Stats {
    /// Waits until `done` holds, re-checking after every change (no polling, no sleeps).
    ///
    /// Wrap it in `tokio::time::timeout` in tests.
    pub async fn wait_until(&self, done: impl Fn(&Stats) -> bool) {
        loop {
            let mut changed = pin!(self.changed.notified());
            // Register before checking so a change between check and await is not missed.
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// Shorthand for `open_connections` with sequentially consistent ordering.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// Shorthand for `connections` with sequentially consistent ordering.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Shorthand for `requests` with sequentially consistent ordering.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Shorthand for `cancelled` with sequentially consistent ordering.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Shorthand for `deadline_exceeded` with sequentially consistent ordering.
    pub fn deadline_exceeded(&self) -> u64 {
        self.deadline_exceeded.load(Ordering::SeqCst)
    }

    /// Shorthand for `in_flight` with sequentially consistent ordering.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Shorthand for `max_in_flight` with sequentially consistent ordering.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn record_deadline_exceeded(&self) {
        self.deadline_exceeded.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// Accounts for one call: started on creation; counted as cancelled if dropped before
/// [`CallGuard::finish`].
#[derive(Debug)]
pub(crate) struct CallGuard {
    stats: Arc<Stats>,
    finished: bool,
}

// === impl CallGuard ===

impl CallGuard {
    pub(crate) fn start(stats: Arc<Stats>) -> Self {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let in_flight = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        stats.changed.notify_waiters();
        Self {
            stats,
            finished: false,
        }
    }

    /// The response was complete (or failed on the server's side): not a cancel.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // in_flight first, so a test that saw `cancelled` change also sees the call gone.
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_in_flight_and_cancels() {
        let stats = Arc::new(Stats::default());
        let mut a = CallGuard::start(stats.clone());
        let b = CallGuard::start(stats.clone());
        assert_eq!(
            (stats.requests(), stats.in_flight(), stats.max_in_flight()),
            (2, 2, 2)
        );
        a.finish();
        drop(a);
        drop(b);
        assert_eq!((stats.in_flight(), stats.max_in_flight()), (0, 2));
        assert_eq!(stats.cancelled(), 1);
    }
}
