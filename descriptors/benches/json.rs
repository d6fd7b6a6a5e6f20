//! JSON ⇄ protobuf throughput for a small (~64 B) and a large (~16 KiB,
//! nested and repeated) message.
//!
//! Run with `cargo bench -p descriptors --bench json`.

use std::{hint::black_box, path::PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use descriptors::{
    JsonOptions, Registry,
    json::{json_to_proto, proto_to_json},
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

fn bench_message(c: &mut Criterion, name: &str, desc: &MessageDescriptor, json: &str) {
    let opts = JsonOptions::default();
    let mut proto = Vec::new();
    json_to_proto(desc, json.as_bytes(), &opts, &mut proto).expect("bench JSON is valid");

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(json.len() as u64));
    let mut out = Vec::with_capacity(json.len() * 2);
    group.bench_function("json_to_proto", |b| {
        b.iter(|| {
            out.clear();
            json_to_proto(desc, black_box(json.as_bytes()), &opts, &mut out).expect("valid");
            black_box(&out);
        });
    });
    group.bench_function("proto_to_json", |b| {
        b.iter(|| {
            out.clear();
            proto_to_json(desc, black_box(&proto), &opts, &mut out).expect("valid");
            black_box(&out);
        });
    });
    group.finish();
}

fn json(c: &mut Criterion) {
    let registry = registry();
    let snapshot = registry.snapshot();
    let pool = snapshot.pool();
    let book = pool
        .get_message_by_name("example.library.v1.Book")
        .expect("Book exists");
    let everything = pool
        .get_message_by_name("example.types.v1.Everything")
        .expect("Everything exists");
    let small = small_json();
    let large = large_json();
    bench_message(c, &format!("small_{}B", small.len()), &book, &small);
    bench_message(c, &format!("large_{}B", large.len()), &everything, &large);
}

criterion_group!(benches, json);
criterion_main!(benches);
