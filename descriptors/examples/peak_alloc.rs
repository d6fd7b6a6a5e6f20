//! Peak heap allocation of transcoding one body, in both directions, as
//! the gateway calls the codec (`gateway/src/transcode/mod.rs`: the output
//! buffer sized from the input, `len` for JSON -> wire, `2 * len + 16` for
//! wire -> JSON), the output buffer counted. A counting global allocator
//! (`peak_alloc`: `unsafe_code` is forbidden here, so the `GlobalAlloc`
//! impl comes from that crate) gives the most bytes live at once during
//! the call, above what was live before it; a `realloc` counts the old and
//! the new block together, as when it moves.
//!
//! `cargo run --release -p descriptors --example peak_alloc`
//!
//! The bound the codec is held to: at most 3x the body, the JSON body of
//! the HTTP request or reply (wire -> JSON is also shown against the wire
//! message it reads: the JSON alone is 2-2.7x that for these shapes).

use descriptors::{
    JsonOptions,
    json::{json_to_proto, proto_to_json},
};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[path = "common/bodies.rs"]
mod bodies;
use bodies::{everything_json, nested_json, registry, small_json};

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_of(f: impl FnOnce()) -> usize {
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    f();
    ALLOC.peak_usage().saturating_sub(before)
}

fn main() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let pool = snapshot.pool();
    let message = |name: &str| pool.get_message_by_name(name).expect("test message");
    let shapes = [
        ("small", message("example.library.v1.Book"), small_json()),
        (
            "nested",
            message("example.types.v1.Nested"),
            nested_json(5, 2),
        ),
        (
            "16 KiB",
            message("example.types.v1.Everything"),
            everything_json(50, 100),
        ),
        (
            "1 MiB",
            message("example.types.v1.Everything"),
            everything_json(3_400, 6_800),
        ),
    ];
    let opts = JsonOptions::default();
    println!(
        "{:<8} {:>10} {:>10} {:>13} {:>7} {:>13} {:>7} {:>7}",
        "shape", "body B", "wire B", "JSON->wire B", "x body", "wire->JSON B", "x body", "x wire"
    );
    for (shape, desc, json) in shapes {
        let mut wire = Vec::new();
        json_to_proto(&desc, json.as_bytes(), &opts, &mut wire).expect("valid JSON");
        // Warm: plans compiled, codec registered.
        proto_to_json(&desc, &wire, &opts, &mut Vec::new()).expect("renders");
        let to_wire = peak_of(|| {
            let mut out = Vec::with_capacity(json.len());
            json_to_proto(&desc, json.as_bytes(), &opts, &mut out).expect("valid JSON");
            std::hint::black_box(&out);
        });
        let to_json = peak_of(|| {
            let mut out = Vec::with_capacity(wire.len() * 2 + 16);
            proto_to_json(&desc, &wire, &opts, &mut out).expect("renders");
            std::hint::black_box(&out);
        });
        println!(
            "{:<8} {:>10} {:>10} {:>13} {:>7.2} {:>13} {:>7.2} {:>7.2}",
            shape,
            json.len(),
            wire.len(),
            to_wire,
            to_wire as f64 / json.len() as f64,
            to_json,
            to_json as f64 / json.len() as f64,
            to_json as f64 / wire.len() as f64,
        );
    }
}
