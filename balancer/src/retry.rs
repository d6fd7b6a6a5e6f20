//! Retries: the compiled [`RetryPolicy`], the cluster's [`RetryBudget`], and
//! the decision whether a failed attempt may be tried again.
//!
//! A request is only tried again when the endpoint cannot have acted on it
//! (STYLE H5, Pingora's `RetryType`): no byte left (connect, TLS or
//! handshake failure; connection closed before sending), or the server
//! said it did not process the stream (REFUSED_STREAM, below a graceful
//! GOAWAY's last stream: RFC 9113 section 8.7); plus, by configuration, a
//! trailers-only answer with a listed status for a request kept whole.
//! Which errors are retryable is [`BalancerError::is_retryable`]; this
//! module decides whether the limits allow it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::{
    config::{RetryConfig, grpc_code_by_name},
    error::BalancerError,
};

/// Retry settings, compiled.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    /// Trailers-only statuses that may be retried (`retry.statuses`).
    statuses: Vec<i32>,
    /// Attempts at most for status and not-processed retries
    /// (`retry.max_attempts`; at least 2 for not-processed streams).
    attempts: u32,
    /// Attempts at most when no byte was sent (`max_connect_attempts`).
    connect_attempts: u32,
    budget_percent: u32,
    min_concurrency: u32,
    /// Largest request kept for replay (`retry.max_buffered_bytes`).
    pub(crate) buffer: usize,
}

/// Why a finished attempt may be tried again; each reason has its own
/// limits ([`RetryPolicy::allows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    /// No connection could be had (connect refused or timed out, TLS or
    /// HTTP/2 handshake failed, or another request's connect failed): no
    /// byte was sent. Another endpoint is tried.
    Connect,
    /// The connection closed before the request went out: any endpoint,
    /// this one included (on a new connection).
    NotSent,
    /// The server did not process the stream (REFUSED_STREAM, graceful
    /// GOAWAY): another endpoint, within the retry budget.
    Refused,
    /// A trailers-only answer with this status, for a request kept whole:
    /// another endpoint, within the retry budget, if the status is listed.
    Status(i32),
}

/// Where the request stands when an attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Attempts made so far, this one included (1-based).
    pub(crate) attempt: u32,
    /// Whether an endpoint remains that was not tried yet, besides the
    /// one of this attempt.
    pub(crate) others_untried: bool,
    /// Whether the whole request body is kept for replay (it ended within
    /// the replay buffer).
    pub(crate) request_complete: bool,
}

/// Requests and retries in progress on one cluster: retries stay under a
/// share of active requests, so a failing cluster sees no retry storm
/// (Envoy's retry budget, linkerd2-proxy's `TpsBudget` in spirit).
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    active: AtomicUsize,
    retrying: AtomicUsize,
    /// Retries made since start (metrics).
    retries: AtomicU64,
    /// Retries the budget refused since start (metrics).
    exhausted: AtomicU64,
}

/// Counts one thing (an active request, a retrying request) for as long
/// as it lives.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Compiles `cfg` (none: the safe defaults) and `max_connect_attempts`.
    pub(crate) fn new(cfg: Option<&RetryConfig>, connect_attempts: u32) -> Self {
        let d = RetryConfig::default();
        let c = cfg.unwrap_or(&d);
        Self {
            statuses: c
                .statuses
                .iter()
                .filter_map(|s| grpc_code_by_name(s))
                .collect(),
            attempts: c.max_attempts,
            connect_attempts,
            budget_percent: c.budget_percent,
            min_concurrency: c.min_retry_concurrency,
            buffer: c.max_buffered_bytes,
        }
    }

    /// Whether an attempt that ended for `reason` may be tried again, with
    /// the budget's answer in `budget_allows` (asked only for the reasons
    /// that spend it). Replaying the body may still fail afterwards (the
    /// copy was given up), which ends the request as well.
    pub(crate) fn allows(
        &self,
        reason: RetryReason,
        p: Progress,
        budget_allows: impl FnOnce() -> bool,
    ) -> bool {
        match reason {
            RetryReason::Connect => p.attempt < self.connect_attempts && p.others_untried,
            RetryReason::NotSent => p.attempt < self.connect_attempts,
            RetryReason::Refused => p.attempt < self.attempts.max(2) && budget_allows(),
            RetryReason::Status(code) => {
                self.statuses.contains(&code)
                    && p.attempt < self.attempts
                    && p.request_complete
                    && p.others_untried
                    && budget_allows()
            }
        }
    }
}

// === impl RetryReason ===

impl RetryReason {
    /// The reason a failed attempt may be retried, for the errors
    /// [`BalancerError::is_retryable`] accepts; None for every other error.
    pub(crate) fn of(error: &BalancerError) -> Option<Self> {
        if !error.is_retryable() {
            return None;
        }
        Some(match error {
            BalancerError::NotSent { .. } => Self::NotSent,
            BalancerError::Upstream { .. } => Self::Refused,
            _ => Self::Connect,
        })
    }

    /// Whether the retry sends the request body again (a connect failure
    /// never took it).
    pub(crate) fn replays_body(self) -> bool {
        !matches!(self, Self::Connect)
    }

    /// Whether the retry holds a slot of the retry budget (bytes may have
    /// reached the server, so the server is loaded by it).
    pub(crate) fn spends_budget(self) -> bool {
        matches!(self, Self::Refused | Self::Status(_))
    }

    /// Whether the endpoint of this attempt is skipped by the next pick.
    pub(crate) fn skips_endpoint(self) -> bool {
        !matches!(self, Self::NotSent)
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// Counts a request as active until the guard drops.
    pub(crate) fn active(&self) -> Counted<'_> {
        Counted::new(&self.active)
    }

    /// Counts a request as retrying until the guard drops.
    pub(crate) fn retrying(&self) -> Counted<'_> {
        Counted::new(&self.retrying)
    }

    /// Whether one more retry fits: retries in progress stay under
    /// `budget_percent` of active requests (at least `min_concurrency`).
    /// A refusal is counted (metrics).
    pub(crate) fn allows(&self, policy: &RetryPolicy) -> bool {
        let active = self.active.load(Relaxed);
        let allowed =
            (active * policy.budget_percent as usize / 100).max(policy.min_concurrency as usize);
        let ok = self.retrying.load(Relaxed) < allowed;
        if !ok {
            self.exhausted.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Counts a retry about to be made.
    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Retries made since start.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Retries the budget refused since start.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Relaxed)
    }
}

// === impl Counted ===

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        Self(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
