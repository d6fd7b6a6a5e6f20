//! Descriptor registry and JSON ⇄ protobuf codec for the gateway.
//!
//! - [`registry`]: named descriptor sets uploaded by operators, validated and
//!   swapped in atomically as immutable [`Snapshot`]s.
//! - [`index`]: `/pkg.Service/Method` → [`MethodInfo`].
//! - [`http_rule`] and [`template`]: `google.api.http` rules and their path
//!   templates (google/api/http.proto), matched by [`Snapshot::match_http`].
//! - [`compile`]: `.proto` sources compiled in-process with protox, for
//!   uploads of sources rather than descriptor sets.
//! - [`wire`]: an iterative pre-pass bounding how deep protobuf bytes nest
//!   before they are decoded.
//! - [`codec`]: the proto3 JSON mapping straight between JSON text and wire
//!   bytes, driven by plans compiled once per snapshot.
//! - [`json`]: the public JSON entry points (over [`codec`]; the prost-reflect
//!   codec stays as [`json::legacy`], the reference the tests compare with),
//!   the HTTP request mapping and `google.rpc.Status` rendering.
//!
//! This crate knows nothing of sockets or async runtimes: everything is plain,
//! synchronous computation over byte slices.
#![warn(missing_docs)]

pub mod codec;
pub mod compile;
pub mod error;
pub mod http_rule;
pub mod index;
pub mod json;
mod pool;
pub mod registry;
pub mod template;
pub mod wire;

pub use compile::{CompileError, SourceFile, compile_protos};
pub use error::{DescriptorError, ErrorKind};
pub use http_rule::{BodySpec, HttpBinding, HttpMatch};
pub use index::MethodInfo;
pub use json::{JsonOptions, decode_base64};
pub use pool::{refuse_pool_builds_on_this_thread, without_pool_builds};
pub use registry::{PutOutcome, Registry, SetInfo, SetMeta, Snapshot};

/// Encoded `google.protobuf.FileDescriptorSet` of the protos every snapshot
/// knows: google/rpc/{status,error_details,code}.proto,
/// google/api/{annotations,http,httpbody}.proto and the protobuf well-known
/// types (google/protobuf/*.proto), compiled by build.rs with protox.
pub const BUNDLED_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bundled_descriptor_set.bin"));
