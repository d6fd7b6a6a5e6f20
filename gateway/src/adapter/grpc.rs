//! Native gRPC: the request goes upstream as it came (hop-by-hop headers
//! stripped, `grpc-timeout` lowered to what is left of the deadline, the
//! request body feeding the stream idle timeout); the answer is relayed
//! frame by frame with its trailers ([`crate::forward::Relay::Grpc`]).

use std::{sync::Arc, time::Instant};

use crate::linger::FrontBody;
use http::{Request, Version};

use balancer::{Route, headers::strip_hop_by_hop};

use super::counted::CountedBody;
use crate::{
    access_log::BodyCounts,
    forward::{ActivityBody, Idle, Outbound, deadline},
};

/// The upstream request for a native gRPC call; its body's bytes and
/// messages are added to `counts` as they pass.
pub(crate) fn outbound(
    req: Request<FrontBody>,
    route: Option<&Route>,
    started: Instant,
    counts: Arc<BodyCounts>,
) -> Outbound {
    let (mut parts, body) = req.into_parts();
    let deadline = deadline(&mut parts.headers, route, None, started);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let idle = route
        .and_then(|r| r.idle_timeout)
        .map(|t| Idle::new(t, started));
    let body = match &idle {
        Some(idle) => balancer::body::boxed(CountedBody::new(
            ActivityBody::new(body, idle),
            counts,
            true,
        )),
        None => balancer::body::boxed(CountedBody::new(body, counts, true)),
    };
    Outbound {
        request: Request::from_parts(parts, body),
        deadline,
        idle,
    }
}
