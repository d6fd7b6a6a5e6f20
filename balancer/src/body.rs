//! The request body type sent upstream.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Boxed error carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of a request sent upstream: the downstream body passed through, or
/// a body the gateway produced (transcoded JSON, health checks).
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body with a compatible error type into an [`UpstreamBody`].
pub fn boxed<B>(body: B) -> UpstreamBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An empty upstream body.
pub fn empty() -> UpstreamBody {
    boxed(Empty::<Bytes>::new().map_err(|never| match never {}))
}

/// A body of one chunk.
pub fn full(bytes: Bytes) -> UpstreamBody {
    boxed(Full::new(bytes).map_err(|never| match never {}))
}
