//! Plain HTTP: a request no registered method takes, whose route leads to
//! an `http1`/`http2` cluster, is proxied there as it is (HTTP/1.1 or
//! HTTP/2 upstream, whatever the downstream spoke), both bodies streamed; a
//! response cut short upstream is an error downstream, never a short body.

use std::{sync::Arc, time::Instant};

use http::{Request, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use balancer::{Cluster, Route, headers::strip_hop_by_hop};

use crate::{
    access_log::{LogRecord, Phase, capture},
    forward::{observe, record_response, send},
    proxy::ConnCtx,
    respond::{GatewayError, ResponseBody},
};

/// Proxies an HTTP request to a plain HTTP cluster (HTTP/1.1 or HTTP/2
/// upstream, whatever the downstream spoke), streaming both bodies.
pub(crate) async fn forward(
    conn: &ConnCtx,
    route: Option<&Route>,
    cluster: &Arc<Cluster>,
    req: Request<Incoming>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if cluster.protocol() == balancer::config::UpstreamProtocol::Http2 {
        // HTTP/2 carries the host in :authority.
        if parts.uri.authority().is_none()
            && let Some(host) = parts.headers.remove(header::HOST)
            && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
        {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.authority = Some(authority);
            uri.scheme = Some(http::uri::Scheme::HTTP);
            parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
        }
        parts.version = Version::HTTP_2;
    }
    let deadline = route
        .and_then(|r| r.timeout)
        .map(|t| tokio::time::Instant::from_std(started + t));
    let up = send(
        cluster,
        Request::from_parts(parts, balancer::body::boxed(body)),
        deadline,
    )
    .await?;
    record_response(rec, &up, cluster, started);
    let (mut parts, body) = up.response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rec.response_captures = capture(&parts.headers, &conn.listener.capture_response);
    let log = &conn.shared.access_log;
    log.debug_headers("response headers", &parts.headers);
    if conn.listener.log_at_start {
        rec.total = started.elapsed();
        log.emit(rec, Phase::Start);
    }
    let body = observe(body, up.lease, rec, log, deadline, None, started, None);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}
