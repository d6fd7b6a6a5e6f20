//! The gRPC wire, in one place: message framing (`frame`), the
//! `grpc-timeout` header (`timeout`); the gRPC header names and the
//! `grpc-status` reader are in [`crate::headers`]. The health check, the
//! gateway's transcoder and its reflection client all frame through here.

pub mod frame;
pub mod timeout;

/// gRPC status code names (`google/rpc/code.proto`), indexed by number.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
