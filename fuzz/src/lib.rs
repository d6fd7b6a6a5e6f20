//! Shared set-up of the fuzz targets: the hostile schema
//! (descriptors/tests/protos/example/hostile/v1/hostile.proto: recursion,
//! Any, Struct/Value, maps, oneofs, google.api.http rules) registered once,
//! and the gateway's two pure parsers compiled in from their sources.

use std::sync::{Arc, OnceLock};

use descriptors::{Registry, Snapshot, SourceFile, compile_protos};
use prost_reflect::MessageDescriptor;

/// balancer/src/grpc/frame.rs, as the balancer compiles it.
#[path = "../../balancer/src/grpc/frame.rs"]
pub mod grpc_frame;

/// balancer/src/grpc/timeout.rs, as the balancer compiles it.
#[path = "../../balancer/src/grpc/timeout.rs"]
pub mod grpc_timeout;

const HOSTILE_PROTO: &str =
    include_str!("../../descriptors/tests/protos/example/hostile/v1/hostile.proto");

/// The compiled hostile schema, as a binary FileDescriptorSet.
pub fn hostile_set() -> &'static [u8] {
    static SET: OnceLock<Vec<u8>> = OnceLock::new();
    SET.get_or_init(|| {
        compile_protos(&[SourceFile {
            path: "example/hostile/v1/hostile.proto".to_owned(),
            source: HOSTILE_PROTO.to_owned(),
        }])
        .expect("the hostile schema compiles")
    })
}

/// A snapshot with the hostile schema registered.
pub fn snapshot() -> Arc<Snapshot> {
    static SNAPSHOT: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let registry = Registry::new();
            registry
                .put("hostile", hostile_set())
                .expect("the hostile schema registers");
            registry.snapshot()
        })
        .clone()
}

/// `example.hostile.v1.Node`.
pub fn node() -> MessageDescriptor {
    snapshot()
        .pool()
        .get_message_by_name("example.hostile.v1.Node")
        .expect("Node is in the hostile schema")
}
