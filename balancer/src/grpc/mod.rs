//! The gRPC wire, in one place: message framing (`frame`), the
//! `grpc-timeout` header (`timeout`); the gRPC header names and the
//! `grpc-status` reader are in [`crate::headers`]. The health check, the
//! gateway's transcoder and its reflection client all frame through here.

pub mod frame;
pub mod timeout;
