//! The one HTTP-level middleware around all services of a sample server.
//!
//! For every request it:
//! - adds `x-server-id` to the response headers (trailers-only error responses included);
//! - for CodenameCreator, Echo and LibraryService, accounts the call in [`Stats`] until the
//!   response body ended or was dropped (a drop before the end is a client cancel);
//! - stores the `grpc-timeout` deadline as a [`Deadline`] request extension;
//! - for Echo and LibraryService, copies request `x-*` metadata into the response headers and,
//!   as `trailer-x-*`, into the trailers (into the headers for trailers-only responses, where
//!   they are the trailers).

use std::{
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{
    CODENAME_SERVICE, ECHO_SERVICE, LIBRARY_SERVICE, SERVER_ID_HEADER, parse_grpc_timeout,
    stats::{CallGuard, Stats},
};

/// Bounds of how much earlier than tonic's own `grpc-timeout` timer the handlers' deadline
/// fires: a tenth of the timeout, within these bounds.
///
/// tonic's server races every call against `grpc-timeout` and answers CANCELLED when it wins;
/// firing first (by at least a timer tick) lets `Slow` answer DEADLINE_EXCEEDED, and be counted
/// as such, instead. The slack also lets the answer reach a client (or gateway) that enforces
/// the same deadline before its own timer fires.
const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(2);
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// When a call with this `grpc-timeout`, received at `now`, should give up.
fn deadline(now: Instant, timeout: Duration) -> Instant {
    let margin = (timeout / 10).clamp(MIN_DEADLINE_MARGIN, MAX_DEADLINE_MARGIN);
    now + timeout.saturating_sub(margin)
}

/// Prefix of the trailer names that echo request metadata.
const TRAILER_PREFIX: &str = "trailer-";

/// When the call's `grpc-timeout` runs out (a little early, see [`deadline`]); a request
/// extension.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Instant);

/// Which service a request path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Codename,
    Echo,
    Library,
    /// Health, reflection, or an unknown path: not counted.
    Other,
}

impl Target {
    fn of(path: &str) -> Self {
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(service, _method)| service);
        match service {
            Some(CODENAME_SERVICE) => Self::Codename,
            Some(ECHO_SERVICE) => Self::Echo,
            Some(LIBRARY_SERVICE) => Self::Library,
            _ => Self::Other,
        }
    }
}

/// Wraps every service of the server in a [`Call`].
#[derive(Clone, Debug)]
pub(crate) struct CallLayer {
    server_id: HeaderValue,
    stats: Arc<Stats>,
}

impl CallLayer {
    pub(crate) fn new(server_id: HeaderValue, stats: Arc<Stats>) -> Self {
        Self { server_id, stats }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = Call<S>;

    fn layer(&self, inner: S) -> Call<S> {
        Call {
            inner,
            server_id: self.server_id.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Call<S> {
    inner: S,
    server_id: HeaderValue,
    stats: Arc<Stats>,
}

// === impl Call ===

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Call<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let target = Target::of(req.uri().path());
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        if let Some(timeout) = timeout {
            req.extensions_mut()
                .insert(Deadline(deadline(Instant::now(), timeout)));
        }
        let echoed = match target {
            Target::Echo | Target::Library => echoed_metadata(req.headers()),
            Target::Codename | Target::Other => Vec::new(),
        };
        let mut guard = match target {
            Target::Codename | Target::Echo | Target::Library => {
                Some(CallGuard::start(self.stats.clone()))
            }
            Target::Other => None,
        };
        let server_id = self.server_id.clone();

        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let response = inner.call(req);

        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    if let Some(guard) = guard.as_mut() {
                        guard.finish();
                    }
                    return Err(error);
                }
            };
            let (mut parts, body) = response.into_parts();
            parts
                .headers
                .insert(HeaderName::from_static(SERVER_ID_HEADER), server_id);

            // A trailers-only response (an error status) has grpc-status in its headers.
            let trailers_only = parts.headers.contains_key("grpc-status");
            let mut extra_trailers = None;
            if !echoed.is_empty() {
                let mut trailers = HeaderMap::new();
                for (name, value) in echoed {
                    parts.headers.append(name.clone(), value.clone());
                    let trailer = format!("{TRAILER_PREFIX}{name}");
                    if let Ok(trailer) = HeaderName::from_bytes(trailer.as_bytes()) {
                        trailers.append(trailer, value);
                    }
                }
                if trailers_only {
                    for (name, value) in &trailers {
                        parts.headers.append(name.clone(), value.clone());
                    }
                } else {
                    extra_trailers = Some(trailers);
                }
            }
            if body.is_end_stream() && extra_trailers.is_none() {
                // Nothing left to send but these headers: the call is complete.
                if let Some(guard) = guard.as_mut() {
                    guard.finish();
                }
            }
            Ok(Response::from_parts(
                parts,
                CallBody {
                    inner: body,
                    guard,
                    extra_trailers,
                },
            ))
        })
    }
}

/// Request metadata Echo sends back: every `x-*` entry except `x-server-id`.
fn echoed_metadata(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-") && name.as_str() != SERVER_ID_HEADER)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

pin_project! {
    /// Response body that ends the call's accounting when it ends, and merges extra trailers
    /// into the inner body's trailers (or sends them if the inner body has none).
    pub(crate) struct CallBody<B> {
        #[pin]
        inner: B,
        guard: Option<CallGuard>,
        extra_trailers: Option<HeaderMap>,
    }
}

// === impl CallBody ===

impl<B> CallBody<B> {
    fn finish(guard: &mut Option<CallGuard>) {
        if let Some(guard) = guard.as_mut() {
            guard.finish();
        }
    }
}

impl<B> Body for CallBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(mut frame)) => {
                if let Some(trailers) = frame.trailers_mut() {
                    if let Some(extra) = this.extra_trailers.take() {
                        for (name, value) in &extra {
                            trailers.append(name.clone(), value.clone());
                        }
                    }
                    Self::finish(this.guard);
                } else if this.inner.is_end_stream() && this.extra_trailers.is_none() {
                    Self::finish(this.guard);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                // The server's body failed: not the client's doing.
                Self::finish(this.guard);
                Poll::Ready(Some(Err(error)))
            }
            None => {
                Self::finish(this.guard);
                Poll::Ready(
                    this.extra_trailers
                        .take()
                        .map(|extra| Ok(Frame::trailers(extra))),
                )
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.extra_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_path() {
        assert_eq!(Target::of("/CodenameCreator/GetCodename"), Target::Codename);
        assert_eq!(Target::of("/sample.echo.v1.Echo/Slow"), Target::Echo);
        assert_eq!(
            Target::of("/sample.library.v1.LibraryService/Watch"),
            Target::Library
        );
        assert_eq!(Target::of("/grpc.health.v1.Health/Check"), Target::Other);
        assert_eq!(Target::of("/sample.echo.v1.Echo"), Target::Other);
        assert_eq!(Target::of("sample.echo.v1.Echo/Slow"), Target::Other);
    }

    #[test]
    fn deadline_is_a_little_early() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(deadline(now, ms(100)), now + ms(90));
        assert_eq!(deadline(now, ms(5)), now + ms(3));
        assert_eq!(deadline(now, ms(1)), now);
        assert_eq!(deadline(now, Duration::from_secs(10)), now + ms(9_980));
    }

    #[test]
    fn echoes_only_x_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("x-token", HeaderValue::from_static("a"));
        headers.insert("x-blob-bin", HeaderValue::from_static("AAE"));
        headers.insert("x-server-id", HeaderValue::from_static("spoof"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        let mut names: Vec<_> = echoed_metadata(&headers)
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["x-blob-bin", "x-token"]);
    }
}
