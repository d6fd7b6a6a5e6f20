//! Picking an endpoint: one [`Picker::pick`] per iteration, for each policy
//! over 2, 10 and 100 healthy endpoints with mixed weights (1, 2, 3, 1, ...).
//!
//! The endpoints and the picker are built exactly as a cluster's
//! `EndpointSet` builds them (`Endpoint::new` with static 127.0.0.1
//! addresses, `Picker::new` with the weights and the addresses as ring
//! keys); nothing connects. There is no per-endpoint limit, so each pick
//! only adds to the endpoint's in-flight count (no release: that belongs to
//! the cluster's `Lease`); for `least_request` the counts grow evenly, and
//! its load comparison costs the same at any count.
//!
//! Run with `cargo bench -p balancer --bench pick`.

use std::{hint::black_box, net::SocketAddr, sync::Arc};

use balancer::{
    LbPolicy,
    endpoint::Endpoint,
    pick::{Pick, Picker},
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Endpoint counts measured.
const SIZES: [usize; 3] = [2, 10, 100];
/// Distinct hash keys cycled through by the `hash` policy.
const HASH_KEYS: usize = 1024;

/// `n` healthy endpoints on 127.0.0.1 with weights 1, 2, 3, 1, 2, 3, ...
fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let port = 10_000 + u16::try_from(i).expect("few endpoints");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let weight = 1 + (i % 3) as u32;
            Arc::new(Endpoint::new(
                format!("s{i}"),
                addr,
                "127.0.0.1".to_owned(),
                weight,
            ))
        })
        .collect()
}

/// The picker a cluster compiles for these endpoints (as `EndpointSet`).
fn picker(policy: LbPolicy, endpoints: &[Arc<Endpoint>]) -> Picker {
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
    let keys: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
    Picker::new(policy, &weights, &keys)
}

fn picked(pick: Pick) -> Option<usize> {
    match pick {
        Pick::Picked(i) => Some(i),
        Pick::AllFull | Pick::NoneEligible => None,
    }
}

fn pick(c: &mut Criterion) {
    let policies = [
        ("round_robin", LbPolicy::RoundRobin),
        ("random", LbPolicy::Random),
        ("least_request", LbPolicy::LeastRequest),
        ("hash", LbPolicy::Hash),
    ];
    // Values of the hashed header (e.g. a user id), cycled through so the
    // ring walk does not always start at the same place.
    let keys: Vec<String> = (0..HASH_KEYS).map(|k| format!("user-{k}")).collect();
    for (name, policy) in policies {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in SIZES {
            let eps = endpoints(n);
            let picker = picker(policy, &eps);
            assert!(
                picked(picker.pick(&eps, None, &[], Some(b"user-0"))).is_some(),
                "{name} picks from {n} endpoints"
            );
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                if policy == LbPolicy::Hash {
                    let mut k = 0usize;
                    b.iter(|| {
                        k = (k + 1) % HASH_KEYS;
                        let key = black_box(keys[k].as_bytes());
                        picked(picker.pick(black_box(&eps), None, &[], Some(key)))
                    });
                } else {
                    b.iter(|| picked(picker.pick(black_box(&eps), None, &[], None)));
                }
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
