//! Runs one codec direction over one bench body in a loop, for profilers
//! whose counts do not depend on the machine's load (the bench's CPU time
//! still does): `valgrind --tool=callgrind` counts instructions, and the
//! difference between two iteration counts is the cost of that many calls.
//!
//! `cargo build --release -p descriptors --example codec_loop`, then
//! `valgrind --tool=callgrind target/release/examples/codec_loop nested wire_to_json new 2000`
//! (shape: small, nested, repeated, sorted or echo; direction: json_to_wire
//! or wire_to_json; codec: new or old). `echo` is the gateway load bench's
//! 1.2 KiB `json-unary-nested` body (`sample.library.v1.AllTypes`, built as
//! `bench/src/scenarios.rs` builds it).

use std::path::PathBuf;

use descriptors::{
    JsonOptions, Registry,
    json::{json_to_proto, legacy, proto_to_json},
};

#[path = "common/bodies.rs"]
mod bodies;
use bodies::{everything_json, nested_json, registry};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, shape, direction, codec, iterations] = &args[..] else {
        eprintln!("usage: codec_loop SHAPE DIRECTION CODEC ITERATIONS");
        std::process::exit(2);
    };
    let iterations: usize = iterations.parse().expect("a count");
    let registry = if shape == "echo" {
        echo_registry()
    } else {
        registry()
    };
    let snapshot = registry.snapshot();
    let pool = snapshot.pool();
    let (name, json) = match shape.as_str() {
        "small" => ("example.library.v1.Book", bodies::small_json()),
        "nested" => ("example.types.v1.Nested", nested_json(5, 2)),
        "repeated" => ("example.types.v1.Everything", everything_json(52, 100)),
        // About 1.8 KiB with every object's keys in alphabetical order (as
        // serde_json writes a `Value`, and as the load bench's nested body
        // has them): mostly not field number order.
        "sorted" => (
            "example.types.v1.Everything",
            serde_json::from_str::<serde_json::Value>(&everything_json(4, 4))
                .expect("JSON")
                .to_string(),
        ),
        "echo" => ("sample.library.v1.AllTypes", echo_json(4)),
        _ => panic!("unknown shape {shape}"),
    };
    let desc = pool.get_message_by_name(name).expect("bench message");
    let opts = JsonOptions::default();
    let mut wire = Vec::new();
    json_to_proto(&desc, json.as_bytes(), &opts, &mut wire).expect("valid JSON");
    type Codec = fn(
        &prost_reflect::MessageDescriptor,
        &[u8],
        &JsonOptions,
        &mut Vec<u8>,
    ) -> Result<(), descriptors::DescriptorError>;
    let (run, input): (Codec, &[u8]) = match (direction.as_str(), codec.as_str()) {
        ("json_to_wire", "new") => (json_to_proto, json.as_bytes()),
        ("json_to_wire", "old") => (legacy::json_to_proto, json.as_bytes()),
        ("wire_to_json", "new") => (proto_to_json, &wire),
        ("wire_to_json", "old") => (legacy::proto_to_json, &wire),
        _ => panic!("unknown direction or codec"),
    };
    let mut out = Vec::with_capacity(json.len() * 2);
    for _ in 0..iterations {
        out.clear();
        run(&desc, std::hint::black_box(input), &opts, &mut out).expect("valid");
        std::hint::black_box(&out);
    }
}

/// A registry of the sample services' `library.proto` (the gateway bench's
/// `EchoTypes` method and its `AllTypes` message).
fn echo_registry() -> Registry {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::Compiler::new([root.join("../sample-services/proto"), root.join("../proto")])
        .expect("include paths exist")
        .include_imports(true)
        .open_files(["library.proto"])
        .expect("sample protos compile")
        .encode_file_descriptor_set();
    let registry = Registry::new();
    registry.put("echo", &fds).expect("sample protos register");
    registry
}

/// The bench's nested `EchoTypes` body with `books` books (4: 1,216 B), as
/// `nested_json` of `bench/src/scenarios.rs` builds it.
fn echo_json(books: usize) -> String {
    let books: Vec<serde_json::Value> = (1..=books)
        .map(|i| {
            serde_json::json!({
                "name": format!("shelves/1/books/{i}"),
                "title": format!("Benchmark volume {i}"),
                "author": "A. N. Author",
                "pages": 100 + i,
                "published": "2001-02-03T04:05:06Z",
                "tags": ["bench", "nested", "repeated"],
                "genre": "SCIENCE",
            })
        })
        .collect();
    serde_json::json!({
        "d": 3.5, "f": 1.25, "i32": -42, "i64": "-9000000000", "u32": 42, "u64": "18000000000",
        "s32": -7, "s64": "-70000000000", "fx32": 7, "fx64": "70000000000",
        "sfx32": -8, "sfx64": "-80000000000", "b": true,
        "s": "a string field of moderate length", "by": "AAECAwQFBgcICQoLDA0ODw==",
        "genre": "FICTION",
        "nested": { "name": "shelves/1", "theme": "science", "bookCount": "4" },
        "books": books,
        "nums": [1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
        "counts": { "alpha": "1", "beta": "2" },
        "ts": "2024-01-02T03:04:05Z",
        "dur": "1.500s",
        "snakeCaseField": "snake",
    })
    .to_string()
}
