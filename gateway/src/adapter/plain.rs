//! Plain HTTP: a request no registered method takes, whose route leads to
//! an `http1`/`http2` cluster, goes there as it is (HTTP/1.1 or HTTP/2
//! upstream, whatever the downstream spoke), both bodies streamed; the
//! answer is relayed as it is, and one cut short upstream is an error
//! downstream, never a short body ([`crate::forward::Relay::Http`]).

use std::{sync::Arc, time::Instant};

use crate::linger::FrontBody;
use http::{Request, Version, header};

use balancer::{Route, config::UpstreamProtocol, headers::strip_hop_by_hop};

use super::counted::CountedBody;
use crate::{access_log::BodyCounts, forward::Outbound};

/// The upstream request for a plain HTTP request to a cluster speaking
/// `protocol`; its body's bytes are added to `counts` as they pass.
pub(crate) fn outbound(
    req: Request<FrontBody>,
    route: Option<&Route>,
    protocol: UpstreamProtocol,
    started: Instant,
    counts: Arc<BodyCounts>,
) -> Outbound {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if protocol == UpstreamProtocol::Http2 {
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
    Outbound {
        request: Request::from_parts(
            parts,
            balancer::body::boxed(CountedBody::new(body, counts, false)),
        ),
        deadline,
        idle: None,
    }
}
