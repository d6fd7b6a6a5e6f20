//! One attempt of [`Cluster::send`]: take a slot (the queue), get a
//! connection from the endpoint's pool, send the request on it, and say
//! how it ended as an [`Attempt`]. The endpoint's own accounting (connect
//! back-off, failure counts, outlier detection of failed exchanges) is
//! done here; whether to try again is the send loop's decision, with the
//! retry policy.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Request, Response, Uri};
use tracing::warn;

use super::{Cluster, EndpointSet, Timings};
use crate::{
    body::{BoxError, UpstreamBody, UpstreamIncoming, boxed},
    config::{DEFAULT_MAX_RECONNECT_BACKOFF_MS, DEFAULT_RECONNECT_BACKOFF_MS},
    endpoint::Endpoint,
    error::{BalancerError, ErrorChain, is_unprocessed},
    h2conn::SendError,
    lease::Lease,
    observe::Observer,
    outlier::Outcome,
    replay::ReplayBody,
    retry::RetryReason,
};

/// How one attempt ended.
pub(super) enum Attempt {
    /// A response head from endpoint `index` (a trailers-only answer
    /// included: the loop may still retry its status).
    Done {
        response: Response<UpstreamIncoming>,
        lease: Lease,
        index: usize,
    },
    /// Failed at endpoint `index` in a way that may be retried
    /// (`error.is_retryable()`), if the policy allows.
    Retry {
        reason: RetryReason,
        index: usize,
        error: BalancerError,
    },
    /// Failed for good: nothing to try again.
    Fail(BalancerError),
}

/// A connection to send one request on.
enum Conn {
    H2(crate::h2conn::StreamSlot),
    H1(crate::upstream::H1Sender),
}

/// How sending failed.
enum Failure {
    /// No request byte left: safe to try again.
    NotSent(BoxError),
    /// Sent, then the exchange failed.
    Failed(BoxError),
}

// === impl Attempt ===

impl Attempt {
    /// A failure at endpoint `index`: a retry candidate when the error is
    /// retryable, else the end.
    fn failed(index: usize, error: BalancerError) -> Self {
        match RetryReason::of(&error) {
            Some(reason) => Self::Retry {
                reason,
                index,
                error,
            },
            None => Self::Fail(error),
        }
    }
}

// === impl Cluster ===

impl Cluster {
    /// One attempt: an endpoint of `set` not in `tried`, the request head
    /// `parts` and the body in `body` (taken once a connection is had).
    #[allow(clippy::too_many_arguments)] // the send loop's state, lent for one attempt
    pub(super) async fn attempt(
        self: &Arc<Self>,
        set: &EndpointSet,
        tried: &[usize],
        key: Option<&[u8]>,
        parts: &http::request::Parts,
        body: &mut Option<ReplayBody>,
        timings: &mut Timings,
        observer: Option<(&Observer, u32, Instant)>,
    ) -> Attempt {
        let queued_at = Instant::now();
        let index = match self.queue.admit(&self.name, set, tried, key).await {
            Ok(index) => index,
            Err(error) => return Attempt::Fail(error),
        };
        timings.queue += queued_at.elapsed();
        let lease = Lease::new(self.clone(), set[index].clone());
        let ep = lease.endpoint().clone();
        let sender = match self.connect(&ep, timings).await {
            Ok(sender) => sender,
            Err(error) => {
                match &error {
                    // Every connection at the server's stream limit, for
                    // too long: not retryable, nothing to count.
                    BalancerError::QueueTimeout { .. } => {}
                    // Another request's connect failed while this one
                    // waited for it; that one counted it.
                    BalancerError::ConnectFailedMeanwhile { .. } => {}
                    _ => {
                        self.connect_failed(&ep, &error);
                        lease.record(Outcome::Failed);
                    }
                }
                return Attempt::failed(index, error);
            }
        };
        let Some(this_body) = body.take() else {
            return Attempt::Fail(BalancerError::BadRequest("request body lost".into()));
        };
        let mut req = Request::from_parts(clone_parts(parts), boxed(this_body));
        let prepared = match &sender {
            Conn::H2(_) => set_uri(&mut req, &self.connector.scheme, &ep),
            Conn::H1(_) => set_origin_form(&mut req, ep.addr),
        };
        if let Err(error) = prepared {
            return Attempt::Fail(error);
        }
        if let Some((o, n, begun)) = observer {
            o.0.sending(n, begun, &ep.name, req.headers_mut());
        }
        ep.record_sent();
        let sent_at = Instant::now();
        let sent = match sender {
            Conn::H2(slot) => {
                let conn = slot.conn().clone();
                match crate::h2conn::send(slot, req).await {
                    Ok(r) => Ok(r.map(UpstreamIncoming::H2)),
                    Err(SendError::NotSent(e)) => {
                        ep.invalidate_conn(&conn);
                        Err(Failure::NotSent(Box::new(e)))
                    }
                    Err(SendError::Failed(e)) => Err(Failure::Failed(Box::new(e))),
                    Err(SendError::Body(e)) => {
                        return Attempt::Fail(BalancerError::BadRequest(format!(
                            "request body failed: {e}"
                        )));
                    }
                }
            }
            Conn::H1(mut s) => match s.try_send_request(req).await {
                Ok(r) => {
                    // Reusable once this response is read (`is_ready` then).
                    ep.pool().put_h1(s);
                    Ok(r.map(UpstreamIncoming::H1))
                }
                Err(mut e) => {
                    if e.take_message().is_some() {
                        Err(Failure::NotSent(Box::new(e.into_error())))
                    } else {
                        Err(Failure::Failed(Box::new(e.into_error())))
                    }
                }
            },
        };
        match sent {
            Ok(response) => {
                timings.response = sent_at.elapsed();
                Attempt::Done {
                    response,
                    lease,
                    index,
                }
            }
            Err(Failure::NotSent(source)) => {
                // The connection was closing: no failure of the exchange.
                ep.record_failure();
                Attempt::failed(
                    index,
                    BalancerError::NotSent {
                        addr: ep.addr,
                        source,
                    },
                )
            }
            Err(Failure::Failed(source)) => {
                // Not processed below a graceful GOAWAY's last stream: no
                // failure of the endpoint's (it is going away in order).
                let going_away = is_unprocessed(source.as_ref())
                    && source
                        .downcast_ref::<h2::Error>()
                        .is_some_and(|e| e.is_go_away() && e.is_remote());
                if !going_away {
                    ep.record_failure();
                    lease.record(Outcome::Failed);
                }
                Attempt::failed(
                    index,
                    BalancerError::Upstream {
                        addr: ep.addr,
                        source,
                    },
                )
            }
        }
    }

    /// A connection to `ep` from its pool (opened if needed, counted in
    /// `timings`).
    async fn connect(&self, ep: &Endpoint, timings: &mut Timings) -> Result<Conn, BalancerError> {
        let start = Instant::now();
        let (conn, opened) = if self.connector.http1 {
            ep.pool()
                .get_h1(&self.connector, ep.addr, &ep.host)
                .await
                .map(|(s, o)| (Conn::H1(s), o))?
        } else {
            ep.pool()
                .get(&self.connector, ep.addr, &ep.host)
                .await
                .map(|(s, o)| (Conn::H2(s), o))?
        };
        if opened {
            timings.connect = Some(start.elapsed());
            ep.record_connect_success();
        }
        Ok(conn)
    }

    /// Counts a failed connect: the endpoint leaves the rotation for a
    /// back-off, unless other connections to it still serve.
    fn connect_failed(&self, ep: &Endpoint, error: &BalancerError) {
        if ep.h2_connections() > 0 {
            // An extra connection failed; the open ones serve on.
            ep.record_failure();
            warn!(cluster = %self.name, endpoint = %ep.name, error = %ErrorChain(error), "Upstream connect failed (another connection to a busy server)");
        } else {
            let backoff = ep.record_connect_failure(
                Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MS),
                Duration::from_millis(DEFAULT_MAX_RECONNECT_BACKOFF_MS),
            );
            warn!(cluster = %self.name, endpoint = %ep.name, error = %ErrorChain(error), ?backoff, "Upstream connect failed; endpoint out of rotation");
        }
    }
}

/// The final gRPC status of a trailers-only response (the head carries
/// it and the body is already at its end).
pub(super) fn trailers_only_status(resp: &Response<UpstreamIncoming>) -> Option<i32> {
    use http_body::Body as _;
    if !resp.body().is_end_stream() {
        return None;
    }
    crate::headers::grpc_status(resp.headers())
}

/// HTTP/2: the endpoint's scheme, and an authority (the request's, or the
/// endpoint's address).
fn set_uri(
    req: &mut Request<UpstreamBody>,
    scheme: &http::uri::Scheme,
    ep: &Endpoint,
) -> Result<(), BalancerError> {
    let uri = req.uri();
    if uri.scheme() == Some(scheme) && uri.authority().is_some() {
        return Ok(());
    }
    let authority = match uri.authority() {
        Some(a) => a.clone(),
        None => ep.authority.clone().ok_or_else(|| {
            BalancerError::BadRequest(format!("{} is not a URI authority", ep.addr))
        })?,
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| BalancerError::BadRequest(e.to_string()))?;
    Ok(())
}

/// HTTP/1.1: origin-form target, and a `host` header.
fn set_origin_form(req: &mut Request<UpstreamBody>, addr: SocketAddr) -> Result<(), BalancerError> {
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if !req.headers().contains_key(http::header::HOST) {
        let host = authority.unwrap_or_else(|| addr.to_string());
        let v = http::HeaderValue::try_from(host)
            .map_err(|e| BalancerError::BadRequest(e.to_string()))?;
        req.headers_mut().insert(http::header::HOST, v);
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| http::uri::PathAndQuery::from_static("/"), Clone::clone);
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = http::Version::HTTP_11;
    Ok(())
}

/// The request head again, for a retry (extensions are not kept).
fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}
