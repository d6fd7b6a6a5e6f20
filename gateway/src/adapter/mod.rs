//! Protocol adapters: each turns a resolved downstream request into the
//! upstream request, sends it through [`crate::forward`], and turns the
//! upstream response back for its caller. Routing, deny rules and the
//! cluster are decided before ([`crate::resolve`]); errors go back to the
//! pipeline as [`crate::error::GatewayError`]s. A new entry protocol is one
//! module here plus one arm in [`crate::classify`] and [`crate::resolve`].
//!
//! - [`grpc`]: native gRPC, frame by frame, trailers and all.
//! - [`plain`]: plain HTTP to an `http1`/`http2` cluster.
//! - JSON/REST lives in [`crate::transcode`] (its own module tree).

pub(crate) mod grpc;
pub(crate) mod plain;
