//! JSON ⇄ protobuf throughput, the plan-driven codec (`json::*`, "new")
//! beside the prost-reflect one it replaced (`json::legacy`, "old"), in both
//! directions, for three shapes: a small message (~75 B), a deeply nested
//! one (recursive `Nested`, ~6 KiB) and a repeated-heavy one (`Everything`
//! with repeated messages, maps, strings and WKTs, ~16 KiB).
//!
//! Throughput is counted in JSON bytes both ways (the group name gives the
//! wire size too). Run with `cargo bench -p descriptors --bench json`.

use std::{hint::black_box, path::PathBuf};

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use descriptors::{
    JsonOptions, Registry,
    json::{json_to_proto, legacy, proto_to_json},
};
use prost_reflect::MessageDescriptor;

fn registry() -> Registry {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::Compiler::new([root.join("tests/protos"), root.join("../proto")])
        .expect("include paths exist")
        .include_imports(true)
        .open_files([
            "example/library/v1/library.proto",
            "example/types/v1/types.proto",
        ])
        .expect("test protos compile")
        .encode_file_descriptor_set();
    let registry = Registry::new();
    registry.put("bench", &fds).expect("test protos register");
    registry
}

fn small_json() -> String {
    r#"{"name":"shelves/1/books/2","author":"Le Guin","title":"Lathe","pages":387}"#.to_owned()
}

/// An `Everything` with nested messages, repeated messages, maps and WKTs.
fn large_json() -> String {
    let scalars = r#"{"fDouble":1.25,"fFloat":-2.5,"fInt32":-32,"fInt64":"-9007199254740993","fUint32":7,"fUint64":"18446744073709551615","fSint32":-7,"fSint64":"-8","fFixed32":9,"fFixed64":"10","fBool":true,"fString":"hello, world","fBytes":"AAEC/w=="}"#;
    let r_msg = vec![scalars; 52].join(",");
    let map: Vec<String> = (0..100).map(|i| format!(r#""key{i}":{i}"#)).collect();
    let strings: Vec<String> = (0..100).map(|i| format!(r#""value number {i}""#)).collect();
    let mut nested = r#"{"name":"leaf"}"#.to_owned();
    for depth in 0..8 {
        nested = format!(
            r#"{{"name":"level {depth}","child":{nested},"children":[{{"name":"a"}},{{"name":"b"}}]}}"#
        );
    }
    format!(
        r#"{{"scalars":{scalars},"rMsg":[{r_msg}],"mStrInt":{{{}}},"rString":[{}],"nested":{nested},"ts":"2017-01-15T01:30:15.010Z","dur":"3.5s","any":{{"@type":"type.googleapis.com/example.types.v1.Scalars","fInt32":5}}}}"#,
        map.join(","),
        strings.join(",")
    )
}

/// A `Nested` tree `depth` levels deep, `fanout` children per node.
fn nested_json(depth: usize, fanout: usize) -> String {
    if depth == 0 {
        return r#"{"name":"leaf"}"#.to_owned();
    }
    let child = nested_json(depth - 1, fanout);
    let children = vec![child.clone(); fanout].join(",");
    format!(r#"{{"name":"level {depth}","child":{child},"children":[{children}]}}"#)
}

type Codec = fn(
    &MessageDescriptor,
    &[u8],
    &JsonOptions,
    &mut Vec<u8>,
) -> Result<(), descriptors::DescriptorError>;

fn bench_message(c: &mut Criterion, shape: &str, desc: &MessageDescriptor, json: &str) {
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

fn json(c: &mut Criterion) {
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
    bench_message(c, "repeated", &everything, &large_json());
}

criterion_group!(benches, json);
criterion_main!(benches);
