//! The retry decision table and the budget.

use std::{io, net::SocketAddr, time::Duration};

use super::*;
use crate::config::ClusterName;

const UNAVAILABLE: i32 = 14;
const INTERNAL: i32 = 13;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

fn h2_error(reason: h2::Reason) -> crate::body::BoxError {
    Box::new(h2::Error::from(reason))
}

fn policy(statuses: &[&str], max_attempts: u32, connect_attempts: u32) -> RetryPolicy {
    let cfg = RetryConfig {
        statuses: statuses.iter().map(|s| s.to_string()).collect(),
        max_attempts,
        ..RetryConfig::default()
    };
    RetryPolicy::new(Some(&cfg), connect_attempts)
}

fn progress(attempt: u32, others_untried: bool, request_complete: bool) -> Progress {
    Progress {
        attempt,
        others_untried,
        request_complete,
    }
}

#[test]
fn which_errors_are_retried_and_why() {
    let cluster = || ClusterName::new("c");
    let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
    let table: Vec<(BalancerError, Option<RetryReason>)> = vec![
        (
            BalancerError::Connect {
                addr: addr(),
                source: io(),
            },
            Some(RetryReason::Connect),
        ),
        (
            BalancerError::ConnectTimeout {
                addr: addr(),
                after: Duration::from_secs(1),
            },
            Some(RetryReason::Connect),
        ),
        (
            BalancerError::Tls {
                addr: addr(),
                source: io(),
            },
            Some(RetryReason::Connect),
        ),
        (
            BalancerError::Handshake {
                addr: addr(),
                source: Box::new(io()),
            },
            Some(RetryReason::Connect),
        ),
        (
            BalancerError::ConnectFailedMeanwhile { addr: addr() },
            Some(RetryReason::Connect),
        ),
        (
            BalancerError::NotSent {
                addr: addr(),
                source: Box::new(io()),
            },
            Some(RetryReason::NotSent),
        ),
        (
            BalancerError::Upstream {
                addr: addr(),
                source: h2_error(h2::Reason::REFUSED_STREAM),
            },
            Some(RetryReason::Refused),
        ),
        // Sent and processed (or unknown): never again.
        (
            BalancerError::Upstream {
                addr: addr(),
                source: h2_error(h2::Reason::INTERNAL_ERROR),
            },
            None,
        ),
        (
            BalancerError::Upstream {
                addr: addr(),
                source: Box::new(io()),
            },
            None,
        ),
        (
            BalancerError::NoHealthyEndpoint { cluster: cluster() },
            None,
        ),
        (BalancerError::QueueFull { cluster: cluster() }, None),
        (
            BalancerError::QueueTimeout {
                cluster: cluster(),
                waited: Duration::from_secs(1),
            },
            None,
        ),
        (BalancerError::BadRequest("x".into()), None),
    ];
    for (error, reason) in &table {
        assert_eq!(RetryReason::of(error), *reason, "{error}");
        assert_eq!(error.is_retryable(), reason.is_some(), "{error}");
    }
}

#[test]
fn who_is_at_fault() {
    use crate::error::Fault;
    let cluster = ClusterName::new("c");
    assert_eq!(
        BalancerError::QueueFull {
            cluster: cluster.clone()
        }
        .fault(),
        Fault::Overload
    );
    assert_eq!(
        BalancerError::ConnectTimeout {
            addr: addr(),
            after: Duration::ZERO
        }
        .fault(),
        Fault::Timeout
    );
    assert_eq!(
        BalancerError::NoHealthyEndpoint { cluster }.fault(),
        Fault::Upstream
    );
    assert_eq!(
        BalancerError::BadRequest("x".into()).fault(),
        Fault::Internal
    );
}

#[test]
fn connect_failures_go_to_another_endpoint_up_to_max_connect_attempts() {
    let p = policy(&[], 2, 3);
    let no_budget = || panic!("connect retries spend no budget");
    assert!(p.allows(RetryReason::Connect, progress(1, true, false), no_budget));
    assert!(p.allows(RetryReason::Connect, progress(2, true, false), no_budget));
    assert!(!p.allows(RetryReason::Connect, progress(3, true, false), no_budget));
    // Every endpoint tried: stop.
    assert!(!p.allows(RetryReason::Connect, progress(1, false, false), no_budget));
}

#[test]
fn not_sent_may_go_to_the_same_endpoint() {
    let p = policy(&[], 2, 3);
    let no_budget = || panic!("not-sent retries spend no budget");
    assert!(p.allows(RetryReason::NotSent, progress(1, false, false), no_budget));
    assert!(p.allows(RetryReason::NotSent, progress(2, false, true), no_budget));
    assert!(!p.allows(RetryReason::NotSent, progress(3, true, true), no_budget));
}

#[test]
fn refused_streams_are_retried_at_least_once_within_the_budget() {
    // max_attempts = 1 still allows one retry of a refused stream.
    let p = policy(&[], 1, 3);
    assert!(p.allows(RetryReason::Refused, progress(1, false, false), || true));
    assert!(!p.allows(RetryReason::Refused, progress(2, true, true), || true));
    assert!(!p.allows(RetryReason::Refused, progress(1, true, true), || false));
    let p = policy(&[], 3, 3);
    assert!(p.allows(RetryReason::Refused, progress(2, true, true), || true));
    assert!(!p.allows(RetryReason::Refused, progress(3, true, true), || true));
}

#[test]
fn statuses_are_retried_only_when_listed_complete_and_elsewhere() {
    let p = policy(&["UNAVAILABLE"], 2, 3);
    let ok = progress(1, true, true);
    assert!(p.allows(RetryReason::Status(UNAVAILABLE), ok, || true));
    // Not in the list.
    assert!(!p.allows(RetryReason::Status(INTERNAL), ok, || true));
    // Out of attempts.
    assert!(!p.allows(
        RetryReason::Status(UNAVAILABLE),
        progress(2, true, true),
        || true
    ));
    // The request is not kept whole (still streaming, or over the buffer).
    assert!(!p.allows(
        RetryReason::Status(UNAVAILABLE),
        progress(1, true, false),
        || true
    ));
    // No other endpoint to try.
    assert!(!p.allows(
        RetryReason::Status(UNAVAILABLE),
        progress(1, false, true),
        || true
    ));
    // Budget spent.
    assert!(!p.allows(RetryReason::Status(UNAVAILABLE), ok, || false));
    // Nothing listed by default.
    let p = RetryPolicy::new(None, 3);
    assert!(!p.allows(RetryReason::Status(UNAVAILABLE), ok, || true));
}

#[test]
fn reasons_say_what_a_retry_takes() {
    use RetryReason::*;
    assert!(!Connect.replays_body() && !Connect.spends_budget() && Connect.skips_endpoint());
    assert!(NotSent.replays_body() && !NotSent.spends_budget() && !NotSent.skips_endpoint());
    assert!(Refused.replays_body() && Refused.spends_budget() && Refused.skips_endpoint());
    assert!(Status(14).replays_body() && Status(14).spends_budget() && Status(14).skips_endpoint());
}

#[test]
fn the_budget_is_a_share_of_active_requests_with_a_floor() {
    // 20 % of active requests, at least 3.
    let p = RetryPolicy::new(None, 3);
    let b = RetryBudget::default();
    let active: Vec<_> = (0..20).map(|_| b.active()).collect();
    let mut retrying = Vec::new();
    while b.allows(&p) {
        retrying.push(b.retrying());
    }
    assert_eq!(retrying.len(), 4, "20 % of 20");
    drop(active);
    drop(retrying.pop());
    // Below the floor: 3 retries with (almost) nothing active.
    assert!(!b.allows(&p), "3 retrying, floor 3");
    drop(retrying.pop());
    assert!(b.allows(&p));
    drop(retrying);
    let floor: Vec<_> = (0..3).map(|_| b.retrying()).collect();
    assert!(!b.allows(&p));
    drop(floor);
    assert!(b.allows(&p));
}
