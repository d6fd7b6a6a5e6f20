//! Native gRPC: the request goes upstream as it came (hop-by-hop headers
//! stripped, `grpc-timeout` lowered to what is left of the deadline), the
//! response comes back frame by frame with its trailers; a trailers-only
//! answer stays one HEADERS frame.

use std::{sync::Arc, time::Instant};

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use balancer::{Cluster, Route, headers::strip_hop_by_hop};

use crate::{
    access_log::{LogRecord, Phase, capture},
    forward::{ActivityBody, Idle, deadline, observe, record_response, send},
    proxy::ConnCtx,
    respond::{GatewayError, ResponseBody},
};

/// Forwards a native gRPC call to `cluster`.
pub(crate) async fn forward(
    conn: &ConnCtx,
    route: Option<&Route>,
    cluster: &Arc<Cluster>,
    req: Request<Incoming>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    let deadline = deadline(&mut parts.headers, route, None, started);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let idle = route
        .and_then(|r| r.idle_timeout)
        .map(|t| Idle::new(t, started));
    let body = match &idle {
        Some(idle) => balancer::body::boxed(ActivityBody::new(body, idle)),
        None => balancer::body::boxed(body),
    };
    let up = send(cluster, Request::from_parts(parts, body), deadline).await?;
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
    let body = observe(
        body,
        up.lease,
        rec,
        log,
        deadline,
        idle,
        started,
        Some(&parts.headers),
    );
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}
