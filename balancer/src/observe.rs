//! A caller's view of the attempts of [`Cluster::send`](crate::Cluster::send):
//! put an [`Observer`] in the request's extensions and it is told when each
//! attempt goes to an endpoint (and may add headers to that attempt alone,
//! such as a trace context naming the attempt) and how each attempt that is
//! not the answer ended. The balancer never waits on it.

use std::{sync::Arc, time::Instant};

use http::HeaderMap;

use crate::error::BalancerError;

/// What the caller of `send` wants to know about its attempts.
pub trait AttemptObserver: Send + Sync {
    /// Attempt `n` (from 1), begun at `started` (its queue wait and connect
    /// included), is about to be sent to `endpoint` with `headers`.
    fn sending(&self, n: u32, started: Instant, endpoint: &str, headers: &mut HeaderMap);

    /// Attempt `n`, begun at `started`, is not the answer: it failed, or
    /// its trailers-only status is retried on.
    fn ended(&self, n: u32, started: Instant, outcome: AttemptOutcome<'_>);
}

/// How an attempt that is not the answer ended.
#[derive(Debug, Clone, Copy)]
pub enum AttemptOutcome<'a> {
    /// A trailers-only answer with this gRPC status, discarded for a retry.
    Status(i32),
    /// It failed.
    Error(&'a BalancerError),
}

/// The observer of one request, carried in its extensions (never sent).
#[derive(Clone)]
pub struct Observer(pub Arc<dyn AttemptObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}
