//! Runs one codec direction over one bench body in a loop, for profilers
//! whose counts do not depend on the machine's load (the bench's CPU time
//! still does): `valgrind --tool=callgrind` counts instructions, and the
//! difference between two iteration counts is the cost of that many calls.
//!
//! `cargo build --release -p descriptors --example codec_loop`, then
//! `valgrind --tool=callgrind target/release/examples/codec_loop nested wire_to_json new 2000`
//! (shape: small, nested, repeated or sorted; direction: json_to_wire or
//! wire_to_json; codec: new or old).

use descriptors::{
    JsonOptions,
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
    let registry = registry();
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
