//! Counters the balancer keeps for the gateway's metrics, read at scrape
//! time: relaxed atomics bumped where the event happens, and
//! [`AtomicHistogram`], a fixed array of atomic bucket counters. Nothing
//! here takes a lock, so recording costs an atomic addition or two.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds of the queue wait histogram, in seconds (`+Inf` implicit).
pub const QUEUE_WAIT_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One endpoint's connection events.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// New connections tried (TCP connect onwards).
    pub(crate) connect_attempts: AtomicU64,
    /// Of those, the ones that failed (TCP, TLS, HTTP handshake, timeout).
    pub(crate) connect_failures: AtomicU64,
    /// GOAWAY frames received.
    pub(crate) goaways_received: AtomicU64,
    /// RST_STREAM frames received with an error code other than NO_ERROR.
    pub(crate) resets_received: AtomicU64,
}

impl ConnStats {
    /// New connections tried.
    pub fn connect_attempts(&self) -> u64 {
        self.connect_attempts.load(Relaxed)
    }

    /// New connections that failed.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Relaxed)
    }

    /// GOAWAY frames received from the server.
    pub fn goaways_received(&self) -> u64 {
        self.goaways_received.load(Relaxed)
    }

    /// RST_STREAM frames received from the server (NO_ERROR ones aside).
    pub fn resets_received(&self) -> u64 {
        self.resets_received.load(Relaxed)
    }
}

/// A histogram of fixed buckets, each an atomic counter (not cumulative),
/// with the sum in integer units (nanoseconds, or whole counts).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Observations per bucket; the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of the observations, in units of `unit`.
    sum: AtomicU64,
    /// What one unit of `sum` is worth (1e-9 for nanoseconds).
    unit: f64,
}

/// What [`AtomicHistogram::snapshot`] reads: per-bucket counts (upper
/// bound, count; not cumulative), the count and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, observations in this bucket)`, the last one `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

impl AtomicHistogram {
    /// Durations, bucketed in seconds by `bounds`.
    pub fn seconds(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1e-9)
    }

    /// Whole counts, bucketed by `bounds`.
    pub fn counts(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1.0)
    }

    fn new(bounds: &'static [f64], unit: f64) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            unit,
        }
    }

    fn bucket(&self, v: f64) -> &AtomicU64 {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        &self.buckets[i]
    }

    /// Counts a duration (a histogram made by [`Self::seconds`]).
    pub fn observe_duration(&self, d: Duration) {
        self.bucket(d.as_secs_f64()).fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if nanos > 0 {
            self.sum.fetch_add(nanos, Relaxed);
        }
    }

    /// Counts a whole number (a histogram made by [`Self::counts`]).
    pub fn observe_count(&self, n: u64) {
        self.bucket(n as f64).fetch_add(1, Relaxed);
        if n > 0 {
            self.sum.fetch_add(n, Relaxed);
        }
    }

    /// The numbers now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum.load(Relaxed) as f64 * self.unit,
        }
    }
}

/// Reads HTTP/2 frame headers as the server's bytes pass (after TLS, on
/// the way into `h2`), counting GOAWAY and RST_STREAM frames without
/// buffering: only a frame header (9 bytes) and an RST_STREAM's error code
/// (4 bytes) are kept across reads. The server's side of a connection is
/// frames from its first byte (its preface is a SETTINGS frame).
#[derive(Debug, Default)]
pub(crate) struct FrameScan {
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    kind: u8,
    code: [u8; 4],
    code_len: usize,
}

const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_GOAWAY: u8 = 0x7;

impl FrameScan {
    /// Scans the next bytes read from the server.
    pub(crate) fn scan(&mut self, mut buf: &[u8], stats: &ConnStats) {
        while !buf.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(buf.len());
                if self.kind == FRAME_RST_STREAM && self.code_len < 4 {
                    let take = (4 - self.code_len).min(n);
                    self.code[self.code_len..self.code_len + take].copy_from_slice(&buf[..take]);
                    self.code_len += take;
                    if self.code_len == 4 && u32::from_be_bytes(self.code) != 0 {
                        stats.resets_received.fetch_add(1, Relaxed);
                    }
                }
                self.payload_left -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (9 - self.head_len).min(buf.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&buf[..n]);
            self.head_len += n;
            buf = &buf[n..];
            if self.head_len == 9 {
                self.head_len = 0;
                self.payload_left =
                    u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
                self.kind = self.head[3];
                self.code_len = 0;
                if self.kind == FRAME_GOAWAY {
                    stats.goaways_received.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        static B: [f64; 3] = [1.0, 2.0, 5.0];
        let h = AtomicHistogram::counts(&B);
        for n in [0, 1, 2, 3, 7] {
            h.observe_count(n);
        }
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(1.0, 2), (2.0, 1), (5.0, 1), (f64::INFINITY, 1)]
        );
        assert_eq!((s.count, s.sum), (5, 13.0));
        let d = AtomicHistogram::seconds(&QUEUE_WAIT_BUCKETS_SECONDS);
        d.observe_duration(Duration::from_millis(3));
        let s = d.snapshot();
        assert_eq!(s.count, 1);
        assert!((s.sum - 0.003).abs() < 1e-12);
        assert_eq!(s.buckets[4], (0.005, 1));
    }

    #[test]
    fn frame_scan_counts_goaway_and_error_resets_across_reads() {
        let stats = ConnStats::default();
        let mut scan = FrameScan::default();
        let mut wire = Vec::new();
        // SETTINGS (empty), DATA (3 bytes), RST_STREAM(CANCEL),
        // RST_STREAM(NO_ERROR), GOAWAY (8 bytes).
        wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&[0, 0, 3, 0, 0, 0, 0, 0, 1, b'a', b'b', b'c']);
        wire.extend_from_slice(&[0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 8]);
        wire.extend_from_slice(&[0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
        wire.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // One byte at a time, then all at once: the same counts.
        for b in &wire {
            scan.scan(std::slice::from_ref(b), &stats);
        }
        scan.scan(&wire, &stats);
        assert_eq!(stats.resets_received(), 2);
        assert_eq!(stats.goaways_received(), 2);
    }
}
