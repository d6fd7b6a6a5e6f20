//! Picking an endpoint: pure functions over a cluster's endpoint list.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use rand::Rng;

use crate::{config::LbPolicy, endpoint::Endpoint};

/// What a pick found.
pub enum Pick {
    /// This endpoint, with a slot already taken.
    Picked(usize),
    /// Eligible endpoints exist but all are at their limit.
    AllFull,
    /// No endpoint is eligible.
    NoneEligible,
}

/// Picks an eligible endpoint not in `skip`, taking one of its slots.
pub fn pick(
    policy: LbPolicy,
    endpoints: &[Arc<Endpoint>],
    cursor: &AtomicUsize,
    limit: Option<u32>,
    skip: &[usize],
) -> Pick {
    let n = endpoints.len();
    if n == 0 {
        return Pick::NoneEligible;
    }
    let usable = |i: usize| !skip.contains(&i) && endpoints[i].is_eligible();
    if policy == LbPolicy::LeastRequest && n > 1 {
        let mut rng = rand::rng();
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        let (first, second) = if endpoints[a].in_flight() <= endpoints[b].in_flight() {
            (a, b)
        } else {
            (b, a)
        };
        tracing::trace!(
            a = endpoints[a].in_flight(),
            b = endpoints[b].in_flight(),
            chosen = first,
            "P2C"
        );
        for i in [first, second] {
            if usable(i) && endpoints[i].try_acquire(limit) {
                return Pick::Picked(i);
            }
        }
    }
    let start = match policy {
        LbPolicy::RoundRobin => cursor.fetch_add(1, Relaxed),
        LbPolicy::Random | LbPolicy::LeastRequest => rand::rng().random_range(0..n),
    };
    let mut any_eligible = false;
    for k in 0..n {
        let i = (start + k) % n;
        if !usable(i) {
            continue;
        }
        any_eligible = true;
        if endpoints[i].try_acquire(limit) {
            return Pick::Picked(i);
        }
    }
    if any_eligible {
        Pick::AllFull
    } else {
        Pick::NoneEligible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().expect("addr");
                Arc::new(Endpoint::new(format!("s{i}"), addr, "127.0.0.1".into(), 1))
            })
            .collect()
    }

    fn picked(p: Pick) -> Option<usize> {
        match p {
            Pick::Picked(i) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let e = eps(3);
        let c = AtomicUsize::new(0);
        let got: Vec<_> = (0..6)
            .map(|_| picked(pick(LbPolicy::RoundRobin, &e, &c, None, &[])))
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2].map(Some));
        e[1].set_healthy(false);
        let got: Vec<_> = (0..4)
            .map(|_| picked(pick(LbPolicy::RoundRobin, &e, &c, None, &[])))
            .collect();
        assert!(got.iter().all(|i| *i != Some(1)), "{got:?}");
    }

    #[test]
    fn limit_and_skip() {
        let e = eps(2);
        let c = AtomicUsize::new(0);
        assert_eq!(
            picked(pick(LbPolicy::RoundRobin, &e, &c, Some(1), &[])),
            Some(0)
        );
        assert_eq!(
            picked(pick(LbPolicy::RoundRobin, &e, &c, Some(1), &[])),
            Some(1)
        );
        assert!(matches!(
            pick(LbPolicy::RoundRobin, &e, &c, Some(1), &[]),
            Pick::AllFull
        ));
        e[0].release();
        assert_eq!(
            picked(pick(LbPolicy::RoundRobin, &e, &c, Some(1), &[])),
            Some(0)
        );
        assert!(matches!(
            pick(LbPolicy::Random, &e, &c, None, &[0, 1]),
            Pick::NoneEligible
        ));
    }

    #[test]
    fn least_request_prefers_idle() {
        let e = eps(2);
        let c = AtomicUsize::new(0);
        for _ in 0..5 {
            e[0].try_acquire(None);
        }
        for _ in 0..20 {
            assert_eq!(
                picked(pick(LbPolicy::LeastRequest, &e, &c, None, &[])),
                Some(1)
            );
            e[1].release();
        }
    }
}
