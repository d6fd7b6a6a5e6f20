//! Admission order, the queue bound and the queue timeout.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::*;
use crate::config::LbPolicy;
use crate::endpoint::Endpoint;

fn set(n: u16) -> Arc<EndpointSet> {
    let eps = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([127, 0, 0, 1], 2000 + i));
            Arc::new(Endpoint::new(format!("e{i}"), addr, "h".into(), 1))
        })
        .collect();
    Arc::new(EndpointSet::new(LbPolicy::RoundRobin, eps))
}

fn name() -> ClusterName {
    ClusterName::new("c")
}

/// Frees a slot of endpoint `i` as a dropped [`Lease`] does.
fn free(queue: &Queue, set: &EndpointSet, i: usize) {
    set[i].release();
    queue.slot_freed();
}

#[tokio::test]
async fn takes_a_free_slot_at_once_and_skips_what_it_is_told() {
    let q = Queue::new(Some(1), 8, Duration::from_secs(5));
    let s = set(2);
    let a = q.admit(&name(), &s, &[], None).await.expect("slot");
    let b = q.admit(&name(), &s, &[a], None).await.expect("slot");
    assert_ne!(a, b);
    assert_eq!((s[0].in_flight(), s[1].in_flight()), (1, 1));
    // Every endpoint skipped: none eligible.
    let err = q.admit(&name(), &s, &[0, 1], None).await.unwrap_err();
    assert!(
        matches!(err, BalancerError::NoHealthyEndpoint { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn waiters_get_freed_slots_in_arrival_order() {
    let q = Arc::new(Queue::new(Some(1), 8, Duration::from_secs(5)));
    let s = set(1);
    q.admit(&name(), &s, &[], None).await.expect("slot");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut tasks = Vec::new();
    for n in 0..3 {
        let (q2, s2, tx) = (q.clone(), s.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let got = q2.admit(&name(), &s2, &[], None).await;
            let _ = tx.send((n, got.is_ok())).await;
        }));
        // Each waiter is in the queue before the next arrives.
        while q.waiting() < n + 1 {
            tokio::task::yield_now().await;
        }
    }
    for expected in 0..3 {
        free(&q, &s, 0);
        let (n, ok) = rx.recv().await.expect("a waiter got the slot");
        assert_eq!((n, ok), (expected, true), "FIFO");
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(q.waiting(), 0);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_a_wait_times_out() {
    let q = Arc::new(Queue::new(Some(1), 1, Duration::from_millis(100)));
    let s = set(1);
    q.admit(&name(), &s, &[], None).await.expect("slot");
    let waiter = {
        let (q, s) = (q.clone(), s.clone());
        tokio::spawn(async move { q.admit(&name(), &s, &[], None).await })
    };
    while q.waiting() < 1 {
        tokio::task::yield_now().await;
    }
    let err = q.admit(&name(), &s, &[], None).await.unwrap_err();
    assert!(matches!(err, BalancerError::QueueFull { .. }), "{err}");
    let err = waiter.await.expect("task").unwrap_err();
    match err {
        BalancerError::QueueTimeout { waited, .. } => {
            assert!(waited >= Duration::from_millis(100), "{waited:?}")
        }
        other => panic!("expected a queue timeout, got {other}"),
    }
    assert_eq!(q.waiting(), 0, "the timed-out waiter left the queue");
}

#[tokio::test]
async fn a_cancelled_wait_leaves_the_queue() {
    let q = Queue::new(Some(1), 1, Duration::from_secs(5));
    let s = set(1);
    q.admit(&name(), &s, &[], None).await.expect("slot");
    let c = name();
    let wait = tokio::time::timeout(Duration::from_millis(20), q.admit(&c, &s, &[], None));
    assert!(wait.await.is_err(), "still waiting when cancelled");
    assert_eq!(q.waiting(), 0);
    free(&q, &s, 0);
    q.admit(&name(), &s, &[], None).await.expect("slot again");
}
