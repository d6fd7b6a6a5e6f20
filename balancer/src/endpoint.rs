//! One upstream server: its address, connection pools (one per worker
//! thread, [`crate::worker`]) and live state
//! (health, back-off after failed connects, in-flight streams, totals).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::upstream::ConnPool;

/// A server of a cluster.
pub struct Endpoint {
    /// Name in logs (HAProxy's server name).
    pub name: Arc<str>,
    /// Resolved address.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, for requests that arrive without one.
    pub(crate) authority: Option<http::uri::Authority>,
    /// Host part of the configured address (TLS name by default).
    pub host: String,
    /// Relative weight.
    pub weight: u32,
    /// Connections by worker slot, each made on first use.
    pools: Box<[OnceLock<ConnPool>]>,
    /// Connection events of every pool (for the metrics).
    conn_stats: Arc<crate::stats::ConnStats>,
    in_flight: AtomicU32,
    total: AtomicU64,
    failures: AtomicU64,
    /// State from active health checks (true until a check says otherwise).
    healthy: AtomicBool,
    /// Out of rotation until this time (ms on the process clock) after a
    /// failed connect.
    down_until_ms: AtomicU64,
    connect_failures: AtomicU32,
    /// Out of rotation until this time after an outlier ejection.
    ejected_until_ms: AtomicU64,
    /// Ejections so far (each lasts longer).
    ejections: AtomicU32,
    /// Consecutive failed exchanges (outlier detection).
    consecutive_failures: AtomicU32,
    /// The last active health check's result.
    last_check: Mutex<Option<String>>,
    /// Stops this endpoint's health checks.
    stop: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// Removed from its cluster (DNS): draining, never picked again.
    retired: AtomicBool,
}

/// Milliseconds since the first call, on a monotonic clock.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

// === impl Endpoint ===

impl Endpoint {
    /// Makes an endpoint in the up state.
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr, host: String, weight: u32) -> Self {
        Self {
            name: name.into(),
            addr,
            authority: http::uri::Authority::try_from(addr.to_string()).ok(),
            host,
            weight,
            pools: (0..crate::worker::slots())
                .map(|_| OnceLock::new())
                .collect(),
            conn_stats: Arc::default(),
            in_flight: AtomicU32::new(0),
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            down_until_ms: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_check: Mutex::new(None),
            stop: Mutex::new(None),
            retired: AtomicBool::new(false),
        }
    }

    /// Whether new requests may go here now.
    pub fn is_eligible(&self) -> bool {
        if !self.healthy.load(Relaxed) || self.retired.load(Relaxed) {
            return false;
        }
        let now = now_ms();
        now >= self.down_until_ms.load(Relaxed) && now >= self.ejected_until_ms.load(Relaxed)
    }

    pub(crate) fn set_stop(&self, token: tokio_util::sync::CancellationToken) {
        if let Ok(mut g) = self.stop.lock() {
            *g = Some(token);
        }
    }

    /// Takes the endpoint out of its cluster: no new streams, health
    /// checks stop; streams in flight finish.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Relaxed);
        if let Ok(mut g) = self.stop.lock()
            && let Some(t) = g.take()
        {
            t.cancel();
        }
    }

    /// Ejected by outlier detection right now.
    pub fn is_ejected(&self) -> bool {
        now_ms() < self.ejected_until_ms.load(Relaxed)
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// The last active health check's result ("ok" or why it failed).
    pub fn last_check(&self) -> Option<String> {
        self.last_check.lock().ok().and_then(|g| g.clone())
    }

    pub(crate) fn set_last_check(&self, result: String) {
        if let Ok(mut g) = self.last_check.lock() {
            *g = Some(result);
        }
    }

    /// Counts one exchange for outlier detection; returns the number of
    /// consecutive failures (0 after a success).
    pub(crate) fn record_exchange(&self, failed: bool) -> u32 {
        if failed {
            self.consecutive_failures.fetch_add(1, Relaxed) + 1
        } else {
            if self.consecutive_failures.load(Relaxed) != 0 {
                self.consecutive_failures.store(0, Relaxed);
            }
            0
        }
    }

    /// Ejects for `base` times the number of ejections so far, capped.
    pub(crate) fn eject(&self, base: Duration, max: Duration) -> Duration {
        let n = self.ejections.fetch_add(1, Relaxed) + 1;
        let time = base.saturating_mul(n).min(max);
        self.ejected_until_ms
            .store(now_ms() + time.as_millis() as u64, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        time
    }

    /// Health-check state.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Sets the health-check state; returns the previous one.
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.swap(up, Relaxed)
    }

    /// Streams in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Connections open to this endpoint (HTTP/2, or HTTP/1.1 for `http1`
    /// clusters).
    pub fn connections(&self) -> usize {
        self.pools
            .iter()
            .filter_map(OnceLock::get)
            .map(|p| p.connections() + p.h1_connections())
            .sum()
    }

    /// Open HTTP/2 connections, every worker's.
    pub(crate) fn h2_connections(&self) -> usize {
        self.pools
            .iter()
            .filter_map(OnceLock::get)
            .map(ConnPool::connections)
            .sum()
    }

    /// The connections of this thread's worker (slot 0 off the workers).
    pub(crate) fn pool(&self) -> &ConnPool {
        let slot = crate::worker::slot().min(self.pools.len() - 1);
        self.pools[slot].get_or_init(|| ConnPool::with_stats(self.conn_stats.clone()))
    }

    /// Takes one h2 connection out of use, in whichever pool holds it.
    pub(crate) fn invalidate_conn(&self, conn: &Arc<crate::h2conn::H2Conn>) {
        for pool in self.pools.iter().filter_map(OnceLock::get) {
            pool.invalidate_conn(conn);
        }
    }

    /// Requests sent here since start.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Failed attempts (connect or exchange) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Connects tried and failed, GOAWAYs and stream resets received
    /// (for the metrics).
    pub fn connection_stats(&self) -> &crate::stats::ConnStats {
        &self.conn_stats
    }

    /// Takes a slot if fewer than `limit` streams are in flight.
    pub(crate) fn try_acquire(&self, limit: Option<u32>) -> bool {
        match limit {
            None => {
                self.in_flight.fetch_add(1, Relaxed);
                true
            }
            Some(max) => self
                .in_flight
                .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok(),
        }
    }

    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    pub(crate) fn record_sent(&self) {
        self.total.fetch_add(1, Relaxed);
    }

    /// Takes the endpoint out of rotation for a back-off that doubles with
    /// each consecutive failed connect, from `base` up to `max`.
    pub(crate) fn record_connect_failure(&self, base: Duration, max: Duration) -> Duration {
        self.failures.fetch_add(1, Relaxed);
        let n = self.connect_failures.fetch_add(1, Relaxed).min(16);
        let backoff = base.saturating_mul(1 << n).min(max);
        self.down_until_ms
            .store(now_ms() + backoff.as_millis() as u64, Relaxed);
        backoff
    }

    pub(crate) fn record_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// A connection worked: clear the back-off.
    pub(crate) fn record_connect_success(&self) {
        if self.connect_failures.load(Relaxed) != 0 {
            self.connect_failures.store(0, Relaxed);
            self.down_until_ms.store(0, Relaxed);
        }
    }
}
