//! JSON ⇄ protobuf throughput, the plan-driven codec (`json::*`, "new")
//! beside the prost-reflect one it replaced (`json::legacy`, "old"), in both
//! directions, for three shapes: a small message (~75 B), a deeply nested
//! one (recursive `Nested`, ~6 KiB) and a repeated-heavy one (`Everything`
//! with repeated messages, maps, strings and WKTs, ~16 KiB).
//!
//! Throughput is counted in JSON bytes both ways (the group name gives the
//! wire size too), per second of the benchmark thread's CPU time
//! (`common/cpu_time.rs`: steady on a shared, noisy machine); `BENCH_CLOCK=wall`
//! measures wall-clock time instead. Run with
//! `cargo bench -p descriptors --bench json` (a filter such as
//! `-- wire_to_json` picks directions or shapes).

use std::hint::black_box;

use std::time::Duration;

use criterion::{
    Criterion, Throughput,
    measurement::{Measurement, WallTime},
};
use descriptors::{
    JsonOptions,
    json::{json_to_proto, legacy, proto_to_json},
};
use prost_reflect::MessageDescriptor;

#[path = "common/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

#[path = "../examples/common/bodies.rs"]
mod bodies;
use bodies::{everything_json, nested_json, registry, small_json};

type Codec = fn(
    &MessageDescriptor,
    &[u8],
    &JsonOptions,
    &mut Vec<u8>,
) -> Result<(), descriptors::DescriptorError>;

fn bench_message<M: Measurement>(
    c: &mut Criterion<M>,
    shape: &str,
    desc: &MessageDescriptor,
    json: &str,
) {
    let opts = JsonOptions::default();
    let mut proto = Vec::new();
    json_to_proto(desc, json.as_bytes(), &opts, &mut proto).expect("bench JSON is valid");
    // The new codec's output is the old one's message (checked by tests/it/differential.rs).
    let mut rendered = Vec::new();
    proto_to_json(desc, &proto, &opts, &mut rendered).expect("renders");

    let name = format!("{shape}_{}B_json_{}B_wire", json.len(), proto.len());
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(20);
    let mut out = Vec::with_capacity(json.len() * 2);
    let directions: [(&str, Codec, &[u8]); 4] = [
        ("json_to_wire/new", json_to_proto, json.as_bytes()),
        ("json_to_wire/old", legacy::json_to_proto, json.as_bytes()),
        ("wire_to_json/new", proto_to_json, &proto),
        ("wire_to_json/old", legacy::proto_to_json, &proto),
    ];
    for (id, codec, input) in directions {
        group.bench_function(id, |b| {
            b.iter(|| {
                out.clear();
                codec(desc, black_box(input), &opts, &mut out).expect("valid");
                black_box(&out);
            });
        });
    }
    group.finish();
}

fn json<M: Measurement>(c: &mut Criterion<M>) {
    let registry = registry();
    let snapshot = registry.snapshot();
    let pool = &*snapshot.pool();
    let book = pool
        .get_message_by_name("example.library.v1.Book")
        .expect("Book exists");
    let everything = pool
        .get_message_by_name("example.types.v1.Everything")
        .expect("Everything exists");
    let nested = pool
        .get_message_by_name("example.types.v1.Nested")
        .expect("Nested exists");
    bench_message(c, "small", &book, &small_json());
    bench_message(c, "nested", &nested, &nested_json(5, 2));
    bench_message(c, "repeated", &everything, &everything_json(52, 100));
}

fn run<M: Measurement>(measurement: M) {
    let mut c = Criterion::default()
        .with_measurement(measurement)
        .configure_from_args();
    json(&mut c);
    c.final_summary();
}

fn main() {
    if std::env::var("BENCH_CLOCK").is_ok_and(|clock| clock == "wall") {
        run(WallTime);
    } else {
        run(CpuTime);
    }
}
