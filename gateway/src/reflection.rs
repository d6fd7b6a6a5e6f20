//! gRPC server reflection, both ways (gRPC's `doc/server-reflection.md`,
//! `grpc/reflection/v1/reflection.proto` and its wire-identical predecessor
//! `v1alpha`):
//!
//! - [`serve`]: the gateway answers `grpc.reflection.v1.ServerReflection` and
//!   `grpc.reflection.v1alpha.ServerReflection` itself, from the descriptor
//!   registry, so `grpcurl list` / `describe` work against the front listener.
//!   With [`Upstreams`], what the registry cannot answer is asked of the
//!   backends through the routes, and their services join the list.
//! - [`fetch_descriptor_set`]: asks a backend for everything it serves and
//!   assembles one encoded `FileDescriptorSet`, to be registered like an upload.
//!
//! File descriptors travel as the exact bytes the registry (or the backend)
//! holds: decoding them into `prost_types` and re-encoding would drop
//! extension options such as `google.api.http`.

mod client;
mod server;
mod upstream;
mod wire;

pub use client::{ReflectionError, fetch_descriptor_set};
pub use server::{is_reflection_path, serve};
pub use upstream::{
    BACKEND_TIMEOUT, MAX_ANSWER_BYTES, MAX_CLUSTERS_ASKED, QUESTION_TIMEOUT, Upstreams,
};
