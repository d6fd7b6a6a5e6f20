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

/// Body of a response from an endpoint: an h2 stream, or an HTTP/1.1
/// response body (plain HTTP clusters).
pub enum UpstreamIncoming {
    /// From an HTTP/2 endpoint.
    H2(crate::h2conn::H2Body),
    /// From an HTTP/1.1 endpoint.
    H1(hyper::body::Incoming),
}

impl http_body::Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H2(b) => std::pin::Pin::new(b).poll_frame(cx),
            Self::H1(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H2(b) => b.is_end_stream(),
            Self::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::H2(b) => b.size_hint(),
            Self::H1(b) => b.size_hint(),
        }
    }
}
