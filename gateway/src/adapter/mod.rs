//! Protocol adapters: translators between a resolved downstream request and
//! the upstream request ([`crate::forward::Outbound`]), and back. Routing,
//! deny rules and the cluster are decided before ([`crate::resolve`]);
//! sending, observing and logging are the pipeline's ([`crate::forward`]).
//! A new entry protocol is one module here plus one arm in
//! [`crate::classify`] and [`crate::resolve`].
//!
//! - [`grpc`]: native gRPC, frame by frame, trailers and all.
//! - [`plain`]: plain HTTP to an `http1`/`http2` cluster.
//! - JSON/REST lives in [`crate::transcode`] (its own module tree).
//! - [`counted`]: the request body counted on its way (metrics).

pub(crate) mod counted;
pub(crate) mod grpc;
pub(crate) mod plain;
