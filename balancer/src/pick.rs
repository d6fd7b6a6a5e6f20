//! Picking an endpoint: a [`Picker`] compiled once per cluster (weighted
//! schedule, consistent-hash ring), used over the endpoint list with atomics
//! only.
//!
//! - `round_robin`: smooth weighted round robin (nginx's order, precomputed).
//! - `random`: weighted random.
//! - `least_request`: power of two choices among weighted-random samples;
//!   fewer in-flight streams per unit of weight wins.
//! - `hash`: consistent hashing (a ring of virtual nodes per endpoint,
//!   proportional to weight) of a request header; adding or removing one of
//!   n servers moves about 1/n of the keys.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use rand::Rng;

use crate::{config::LbPolicy, endpoint::Endpoint};

/// Longest precomputed schedule; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 16 * 1024;
/// Virtual nodes on the hash ring per unit of weight.
const VNODES_PER_WEIGHT: u32 = 100;

/// What a pick found.
pub enum Pick {
    /// This endpoint, with a slot already taken.
    Picked(usize),
    /// Eligible endpoints exist but all are at their limit.
    AllFull,
    /// No endpoint is eligible.
    NoneEligible,
}

/// The compiled pick policy of one cluster.
#[derive(Debug)]
pub struct Picker {
    policy: LbPolicy,
    schedule: Vec<u32>,
    ring: Vec<(u64, u32)>,
    cursor: AtomicUsize,
}

impl Picker {
    /// Compiles the policy for endpoints with these weights and ring keys
    /// (a stable identity per endpoint, e.g. its configured address).
    pub fn new(policy: LbPolicy, weights: &[u32], keys: &[String]) -> Self {
        let schedule = smooth_wrr(&scale(weights));
        let mut ring = Vec::new();
        if policy == LbPolicy::Hash {
            for (i, (w, key)) in weights.iter().zip(keys).enumerate() {
                for v in 0..w.saturating_mul(VNODES_PER_WEIGHT) {
                    ring.push((hash64(format!("{key}#{v}").as_bytes()), i as u32));
                }
            }
            ring.sort_unstable();
        }
        Self {
            policy,
            schedule,
            ring,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks an eligible endpoint not in `skip`, taking one of its slots.
    /// `key` is the hashed header's value for `hash` clusters.
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        limit: Option<u32>,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Pick {
        let n = endpoints.len();
        if n == 0 || self.schedule.is_empty() {
            return Pick::NoneEligible;
        }
        let usable = |i: usize| !skip.contains(&i) && endpoints[i].is_eligible();
        let len = self.schedule.len();
        let mut any_eligible = false;
        match self.policy {
            LbPolicy::Hash if key.is_some() && !self.ring.is_empty() => {
                let h = hash64(key.unwrap_or_default());
                let start = self.ring.partition_point(|(v, _)| *v < h);
                // Walk the ring to the first usable endpoint; each endpoint
                // is tried once.
                let mut tried = 0usize;
                let mut seen = vec![false; n];
                for k in 0..self.ring.len() {
                    let i = self.ring[(start + k) % self.ring.len()].1 as usize;
                    if seen[i] {
                        continue;
                    }
                    seen[i] = true;
                    tried += 1;
                    if usable(i) {
                        any_eligible = true;
                        if endpoints[i].try_acquire(limit) {
                            return Pick::Picked(i);
                        }
                    }
                    if tried == n {
                        break;
                    }
                }
                return if any_eligible {
                    Pick::AllFull
                } else {
                    Pick::NoneEligible
                };
            }
            LbPolicy::LeastRequest if n > 1 => {
                let mut rng = rand::rng();
                let a = self.schedule[rng.random_range(0..len)] as usize;
                // A second, distinct endpoint, weighted: a random start in
                // the schedule, then the first entry that is not `a`.
                let from = rng.random_range(0..len);
                let b = (0..len)
                    .map(|k| self.schedule[(from + k) % len] as usize)
                    .find(|i| *i != a)
                    .unwrap_or(a);
                let load = |i: usize| {
                    u64::from(endpoints[i].in_flight()) * 1000
                        / u64::from(endpoints[i].weight.max(1))
                };
                let (first, second) = if load(a) <= load(b) { (a, b) } else { (b, a) };
                tracing::trace!(a.load = load(a), b.load = load(b), chosen = first, "P2C");
                for i in [first, second] {
                    if usable(i) {
                        any_eligible = true;
                        if endpoints[i].try_acquire(limit) {
                            return Pick::Picked(i);
                        }
                    }
                }
            }
            _ => {}
        }
        let start = match self.policy {
            LbPolicy::Random | LbPolicy::LeastRequest => rand::rng().random_range(0..len),
            LbPolicy::RoundRobin | LbPolicy::Hash => self.cursor.fetch_add(1, Relaxed),
        };
        for k in 0..len {
            let i = self.schedule[(start + k) % len] as usize;
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
}

/// Scales weights so their sum fits the schedule (each stays at least 1).
fn scale(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total <= MAX_SCHEDULE {
        return weights.to_vec();
    }
    weights
        .iter()
        .map(|w| ((u64::from(*w) * MAX_SCHEDULE / total).max(1)) as u32)
        .collect()
}

/// nginx's smooth weighted round robin, unrolled into a schedule: weights
/// 5,1,1 give a a b a c a a (spread out, not a a a a a b c).
fn smooth_wrr(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// FNV-1a with a SplitMix64 finalizer: stable across processes and
/// versions (std's hasher is not), well spread.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().expect("addr");
                Arc::new(Endpoint::new(format!("s{i}"), addr, "127.0.0.1".into(), *w))
            })
            .collect()
    }

    fn picker(policy: LbPolicy, e: &[Arc<Endpoint>]) -> Picker {
        let w: Vec<u32> = e.iter().map(|e| e.weight).collect();
        let k: Vec<String> = e.iter().map(|e| e.addr.to_string()).collect();
        Picker::new(policy, &w, &k)
    }

    fn picked(p: Pick) -> Option<usize> {
        match p {
            Pick::Picked(i) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let e = eps(&[1, 1, 1]);
        let p = picker(LbPolicy::RoundRobin, &e);
        let got: Vec<_> = (0..6)
            .map(|_| picked(p.pick(&e, None, &[], None)))
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2].map(Some));
        e[1].set_healthy(false);
        let got: Vec<_> = (0..4)
            .map(|_| picked(p.pick(&e, None, &[], None)))
            .collect();
        assert!(got.iter().all(|i| *i != Some(1)), "{got:?}");
    }

    #[test]
    fn smooth_weighted_order() {
        assert_eq!(smooth_wrr(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        let e = eps(&[3, 1]);
        let p = picker(LbPolicy::RoundRobin, &e);
        let got: Vec<_> = (0..8)
            .filter_map(|_| picked(p.pick(&e, None, &[], None)))
            .collect();
        assert_eq!(got.iter().filter(|i| **i == 0).count(), 6);
        let scaled: u64 = scale(&[1000; 100]).iter().map(|w| u64::from(*w)).sum();
        assert!(
            scaled <= MAX_SCHEDULE && scaled > MAX_SCHEDULE * 99 / 100,
            "{scaled}"
        );
        assert_eq!(scale(&[1, 1000]), [1, 1000]);
    }

    #[test]
    fn weighted_random_within_tolerance() {
        let e = eps(&[1, 3]);
        let p = picker(LbPolicy::Random, &e);
        let mut counts = [0u32; 2];
        for _ in 0..8000 {
            let i = picked(p.pick(&e, None, &[], None)).expect("pick");
            counts[i] += 1;
            e[i].release();
        }
        let share = f64::from(counts[1]) / 8000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }

    #[test]
    fn limit_and_skip() {
        let e = eps(&[1, 1]);
        let p = picker(LbPolicy::RoundRobin, &e);
        assert_eq!(picked(p.pick(&e, Some(1), &[], None)), Some(0));
        assert_eq!(picked(p.pick(&e, Some(1), &[], None)), Some(1));
        assert!(matches!(p.pick(&e, Some(1), &[], None), Pick::AllFull));
        e[0].release();
        assert_eq!(picked(p.pick(&e, Some(1), &[], None)), Some(0));
        assert!(matches!(
            picker(LbPolicy::Random, &e).pick(&e, None, &[0, 1], None),
            Pick::NoneEligible
        ));
    }

    #[test]
    fn least_request_prefers_idle() {
        let e = eps(&[1, 1]);
        let p = picker(LbPolicy::LeastRequest, &e);
        for _ in 0..5 {
            e[0].try_acquire(None);
        }
        for _ in 0..20 {
            assert_eq!(picked(p.pick(&e, None, &[], None)), Some(1));
            e[1].release();
        }
    }

    #[test]
    fn hash_is_sticky_and_moves_about_one_nth() {
        let e4 = eps(&[1, 1, 1, 1]);
        let p4 = picker(LbPolicy::Hash, &e4);
        let keys: Vec<String> = (0..4000).map(|i| format!("user-{i}")).collect();
        let owner = |p: &Picker, e: &[Arc<Endpoint>], k: &str| {
            let i = picked(p.pick(e, None, &[], Some(k.as_bytes()))).expect("pick");
            e[i].release();
            e[i].addr
        };
        let before: Vec<_> = keys.iter().map(|k| owner(&p4, &e4, k)).collect();
        // Sticky.
        assert!(
            keys.iter()
                .zip(&before)
                .all(|(k, o)| owner(&p4, &e4, k) == *o)
        );
        // Balanced: each server owns 25 % +- 7 %.
        for ep in &e4 {
            let n = before.iter().filter(|o| **o == ep.addr).count();
            assert!((750..1250).contains(&n), "{n}");
        }
        // Add a fifth server: about 1/5 of the keys move, all to it.
        let e5 = eps(&[1, 1, 1, 1, 1]);
        let p5 = picker(LbPolicy::Hash, &e5);
        let after: Vec<_> = keys.iter().map(|k| owner(&p5, &e5, k)).collect();
        let moved: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(_, b)| *b)
            .collect();
        let share = moved.len() as f64 / keys.len() as f64;
        assert!((0.13..0.27).contains(&share), "{share}");
        assert!(moved.iter().all(|b| *b == e5[4].addr));
        // An ineligible owner: the next one on the ring takes its keys.
        e4[0].set_healthy(false);
        assert!(keys.iter().all(|k| owner(&p4, &e4, k) != e4[0].addr));
    }
}
