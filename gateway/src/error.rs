//! Everything the gateway answers itself, as one enum, and the one table
//! that maps each case to its gRPC code, the HTTP status a JSON caller
//! gets, the client-facing message and the access log's termination state.
//! `respond` renders a [`GatewayError`] in the caller's protocol from this
//! table; nothing else decides a status.

use std::fmt;

use balancer::BalancerError;
use http::StatusCode;

use crate::respond::Code;

/// How an exchange ended, for the access log (HAProxy's two letters: who
/// ended it, and in which phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// `--`: normal end.
    Normal,
    /// `CR`: the client aborted while sending its request.
    ClientAbortedRequest,
    /// `cR`: the client was too slow sending its request.
    ClientTimeout,
    /// `CD`: the client went away while the response was streaming.
    ClientAbortedData,
    /// `PR`: the gateway refused the request (policy, routing, limits, bad input).
    Refused,
    /// `PI`: an internal error of the gateway.
    Internal,
    /// `SC`: the server could not be connected to (or none was available).
    ServerConnect,
    /// `SH`: the server failed before the response head.
    ServerHeaders,
    /// `SD`: the server failed while the response was streaming.
    ServerData,
    /// `sQ`: the request waited too long in, or could not enter, the queue.
    Queue,
    /// `sH`: the deadline passed before the response head.
    DeadlineHeaders,
    /// `sD`: the deadline (or the stream idle timeout) passed mid-stream.
    DeadlineData,
}

impl Termination {
    /// The two letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "--",
            Self::ClientAbortedRequest => "CR",
            Self::ClientTimeout => "cR",
            Self::ClientAbortedData => "CD",
            Self::Refused => "PR",
            Self::Internal => "PI",
            Self::ServerConnect => "SC",
            Self::ServerHeaders => "SH",
            Self::ServerData => "SD",
            Self::Queue => "sQ",
            Self::DeadlineHeaders => "sH",
            Self::DeadlineData => "sD",
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the gateway answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// A `deny_unless` rule (listener or route) did not hold.
    Denied,
    /// No route (and no binding) for a gRPC method path.
    UnknownMethod {
        /// The path.
        path: String,
    },
    /// No registered method or REST rule for an HTTP request.
    NoHttpRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// gRPC-Web is not served (yet).
    GrpcWebDisabled,
    /// A gRPC request over HTTP/1.1.
    GrpcNeedsHttp2,
    /// An escaped slash in a path, on a listener that refuses them.
    EscapedSlash,
    /// The request is malformed (invalid JSON, a bad parameter); the
    /// message says where.
    InvalidRequest(String),
    /// A request body, message or NDJSON line over its limit.
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
    /// An upstream reply message over `max_message_bytes`.
    ReplyTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The process-wide buffered-bytes budget is spent.
    OverBudget,
    /// A buffered request body did not arrive in time (`stalled`: a pause
    /// between chunks; otherwise the total time).
    BodyTimeout {
        /// Which timeout.
        stalled: bool,
    },
    /// The client stopped sending its body (reset, connection closed).
    BodyNotReceived,
    /// The deadline passed before the response head.
    Deadline,
    /// The deadline passed mid-stream.
    DeadlineMidStream,
    /// Nothing moved either way for the route's `idle_timeout_ms`.
    StreamIdle,
    /// The balancer could not get the request to a server.
    Upstream(UpstreamFailure),
    /// The upstream stream failed after its head.
    UpstreamStreamFailed,
    /// The upstream sent a malformed gRPC frame.
    UpstreamBadFrame(String),
    /// The upstream sent two messages to a unary call.
    UpstreamTwoMessages,
    /// A bug of ours; the detail is logged, never sent.
    Internal,
}

/// The balancer's failures, as the downstream sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No healthy server in the cluster.
    NoHealthyEndpoint {
        /// The cluster.
        cluster: String,
    },
    /// The cluster's queue is full.
    QueueFull,
    /// The request waited `queue_timeout_ms` without a free server.
    QueueTimeout,
    /// Connecting (TCP, HTTP/2 handshake) failed or timed out.
    Connect,
    /// The TLS handshake with the server failed.
    Tls,
    /// The server reset the stream before answering.
    Reset,
    /// The request could not be built for the upstream (a bug).
    BadRequest,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// gRPC status code (gRPC callers get it in a trailers-only answer).
    pub code: Code,
    /// HTTP status for JSON/HTTP callers.
    pub http: StatusCode,
    /// Access log termination state.
    pub termination: Termination,
}

const fn row(code: Code, http: u16, termination: Termination) -> Row {
    let http = match StatusCode::from_u16(http) {
        Ok(s) => s,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Row {
        code,
        http,
        termination,
    }
}

// === impl GatewayError ===

impl GatewayError {
    /// The table: gRPC code, HTTP status and termination for each case.
    pub fn row(&self) -> Row {
        use Code as C;
        use Termination as T;
        use UpstreamFailure as U;
        match self {
            Self::Denied => row(C::PermissionDenied, 403, T::Refused),
            Self::UnknownMethod { .. } => row(C::Unimplemented, 501, T::Refused),
            Self::NoHttpRoute { .. } => row(C::NotFound, 404, T::Refused),
            Self::GrpcWebDisabled => row(C::Unimplemented, 501, T::Refused),
            Self::GrpcNeedsHttp2 => row(C::Internal, 500, T::Refused),
            Self::EscapedSlash | Self::InvalidRequest(_) => {
                row(C::InvalidArgument, 400, T::Refused)
            }
            Self::TooLarge { .. } => row(C::ResourceExhausted, 413, T::Refused),
            Self::ReplyTooLarge { .. } => row(C::ResourceExhausted, 413, T::ServerData),
            Self::OverBudget => row(C::ResourceExhausted, 429, T::Refused),
            Self::BodyTimeout { .. } => row(C::DeadlineExceeded, 408, T::ClientTimeout),
            Self::BodyNotReceived => row(C::Cancelled, 499, T::ClientAbortedRequest),
            Self::Deadline => row(C::DeadlineExceeded, 504, T::DeadlineHeaders),
            Self::DeadlineMidStream | Self::StreamIdle => {
                row(C::DeadlineExceeded, 504, T::DeadlineData)
            }
            Self::Upstream(U::NoHealthyEndpoint { .. }) => {
                row(C::Unavailable, 503, T::ServerConnect)
            }
            Self::Upstream(U::QueueFull | U::QueueTimeout) => {
                row(C::ResourceExhausted, 429, T::Queue)
            }
            Self::Upstream(U::Connect | U::Tls) => row(C::Unavailable, 502, T::ServerConnect),
            Self::Upstream(U::Reset) => row(C::Unavailable, 502, T::ServerHeaders),
            Self::Upstream(U::BadRequest) | Self::Internal => row(C::Internal, 500, T::Internal),
            Self::UpstreamStreamFailed => row(C::Unavailable, 502, T::ServerData),
            Self::UpstreamBadFrame(_) => row(C::Internal, 502, T::ServerData),
            Self::UpstreamTwoMessages => row(C::Internal, 500, T::ServerData),
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.row().code
    }

    /// The HTTP status for a JSON/HTTP caller.
    pub fn http_status(&self) -> StatusCode {
        self.row().http
    }

    /// The access log termination state.
    pub fn termination(&self) -> Termination {
        self.row().termination
    }

    /// The client-facing message (no internal detail).
    pub fn message(&self) -> String {
        use UpstreamFailure as U;
        match self {
            Self::Denied => "request denied".into(),
            Self::UnknownMethod { path } => format!("unknown method {path}"),
            Self::NoHttpRoute { method, path } => format!("no route for {method} {path}"),
            Self::GrpcWebDisabled => "gRPC-Web is not enabled".into(),
            Self::GrpcNeedsHttp2 => "gRPC requires HTTP/2".into(),
            Self::EscapedSlash => "escaped slash in the request path".into(),
            Self::InvalidRequest(m) | Self::UpstreamBadFrame(m) => m.clone(),
            Self::TooLarge { what, max } => format!("{what} exceeds the limit of {max} bytes"),
            Self::ReplyTooLarge { max } => {
                format!("response message exceeds the limit of {max} bytes")
            }
            Self::OverBudget => {
                "the gateway is at its limit of buffered request bytes; retry later".into()
            }
            Self::BodyTimeout { stalled: true } => "request body stalled".into(),
            Self::BodyTimeout { stalled: false } => "request body took too long".into(),
            Self::BodyNotReceived => "request body not received".into(),
            Self::Deadline | Self::DeadlineMidStream => "deadline exceeded".into(),
            Self::StreamIdle => "stream idle timeout".into(),
            Self::Upstream(U::NoHealthyEndpoint { cluster }) => {
                format!("no healthy upstream in cluster {cluster}")
            }
            Self::Upstream(U::QueueFull) => "too many requests queued".into(),
            Self::Upstream(U::QueueTimeout) => "timed out waiting for a free upstream".into(),
            Self::Upstream(U::Connect) => "upstream connect error".into(),
            Self::Upstream(U::Tls) => "upstream TLS handshake failed".into(),
            Self::Upstream(U::Reset) => "upstream reset the stream".into(),
            Self::Upstream(U::BadRequest) | Self::Internal => "internal error".into(),
            Self::UpstreamStreamFailed => "upstream stream failed".into(),
            Self::UpstreamTwoMessages => "upstream sent two messages to a unary call".into(),
        }
    }

    /// Maps a balancer failure, without exposing its internal text.
    pub fn from_balancer(e: &BalancerError) -> Self {
        use BalancerError as B;
        Self::Upstream(match e {
            B::NoHealthyEndpoint { cluster } => UpstreamFailure::NoHealthyEndpoint {
                cluster: cluster.to_string(),
            },
            B::QueueFull { .. } => UpstreamFailure::QueueFull,
            B::QueueTimeout { .. } => UpstreamFailure::QueueTimeout,
            B::Connect { .. }
            | B::ConnectTimeout { .. }
            | B::ConnectFailedMeanwhile { .. }
            | B::Handshake { .. }
            | B::NotSent { .. } => UpstreamFailure::Connect,
            B::Tls { .. } => UpstreamFailure::Tls,
            B::Upstream { .. } => UpstreamFailure::Reset,
            B::BadRequest(_) => UpstreamFailure::BadRequest,
        })
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::Protocol, respond::percent_decode};

    /// Every row of the table, rendered for a gRPC and a JSON caller.
    #[test]
    fn every_row() {
        use Code as C;
        use UpstreamFailure as U;
        let rows: Vec<(GatewayError, Code, u16, &str, &str)> = vec![
            (
                GatewayError::Denied,
                C::PermissionDenied,
                403,
                "PR",
                "request denied",
            ),
            (
                GatewayError::UnknownMethod {
                    path: "/a.B/C".into(),
                },
                C::Unimplemented,
                501,
                "PR",
                "unknown method /a.B/C",
            ),
            (
                GatewayError::NoHttpRoute {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                C::NotFound,
                404,
                "PR",
                "no route for GET /x",
            ),
            (
                GatewayError::GrpcWebDisabled,
                C::Unimplemented,
                501,
                "PR",
                "gRPC-Web is not enabled",
            ),
            (
                GatewayError::GrpcNeedsHttp2,
                C::Internal,
                500,
                "PR",
                "gRPC requires HTTP/2",
            ),
            (
                GatewayError::EscapedSlash,
                C::InvalidArgument,
                400,
                "PR",
                "escaped slash in the request path",
            ),
            (
                GatewayError::InvalidRequest("bad `a.b`".into()),
                C::InvalidArgument,
                400,
                "PR",
                "bad `a.b`",
            ),
            (
                GatewayError::TooLarge {
                    what: "request body",
                    max: 10,
                },
                C::ResourceExhausted,
                413,
                "PR",
                "request body exceeds the limit of 10 bytes",
            ),
            (
                GatewayError::ReplyTooLarge { max: 10 },
                C::ResourceExhausted,
                413,
                "SD",
                "response message exceeds the limit of 10 bytes",
            ),
            (
                GatewayError::OverBudget,
                C::ResourceExhausted,
                429,
                "PR",
                "the gateway is at its limit of buffered request bytes; retry later",
            ),
            (
                GatewayError::BodyTimeout { stalled: true },
                C::DeadlineExceeded,
                408,
                "cR",
                "request body stalled",
            ),
            (
                GatewayError::BodyTimeout { stalled: false },
                C::DeadlineExceeded,
                408,
                "cR",
                "request body took too long",
            ),
            (
                GatewayError::BodyNotReceived,
                C::Cancelled,
                499,
                "CR",
                "request body not received",
            ),
            (
                GatewayError::Deadline,
                C::DeadlineExceeded,
                504,
                "sH",
                "deadline exceeded",
            ),
            (
                GatewayError::DeadlineMidStream,
                C::DeadlineExceeded,
                504,
                "sD",
                "deadline exceeded",
            ),
            (
                GatewayError::StreamIdle,
                C::DeadlineExceeded,
                504,
                "sD",
                "stream idle timeout",
            ),
            (
                GatewayError::Upstream(U::NoHealthyEndpoint {
                    cluster: "c".into(),
                }),
                C::Unavailable,
                503,
                "SC",
                "no healthy upstream in cluster c",
            ),
            (
                GatewayError::Upstream(U::QueueFull),
                C::ResourceExhausted,
                429,
                "sQ",
                "too many requests queued",
            ),
            (
                GatewayError::Upstream(U::QueueTimeout),
                C::ResourceExhausted,
                429,
                "sQ",
                "timed out waiting for a free upstream",
            ),
            (
                GatewayError::Upstream(U::Connect),
                C::Unavailable,
                502,
                "SC",
                "upstream connect error",
            ),
            (
                GatewayError::Upstream(U::Tls),
                C::Unavailable,
                502,
                "SC",
                "upstream TLS handshake failed",
            ),
            (
                GatewayError::Upstream(U::Reset),
                C::Unavailable,
                502,
                "SH",
                "upstream reset the stream",
            ),
            (
                GatewayError::Upstream(U::BadRequest),
                C::Internal,
                500,
                "PI",
                "internal error",
            ),
            (
                GatewayError::UpstreamStreamFailed,
                C::Unavailable,
                502,
                "SD",
                "upstream stream failed",
            ),
            (
                GatewayError::UpstreamBadFrame("bad frame".into()),
                C::Internal,
                502,
                "SD",
                "bad frame",
            ),
            (
                GatewayError::UpstreamTwoMessages,
                C::Internal,
                500,
                "SD",
                "upstream sent two messages to a unary call",
            ),
            (
                GatewayError::Internal,
                C::Internal,
                500,
                "PI",
                "internal error",
            ),
        ];
        for (e, code, http, term, msg) in rows {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.http_status().as_u16(), http, "{e:?}");
            assert_eq!(e.termination().as_str(), term, "{e:?}");
            assert_eq!(e.message(), msg, "{e:?}");
            let grpc = e.clone().into_response(Protocol::Grpc);
            assert_eq!(grpc.status(), 200, "{e:?}: gRPC errors are trailers-only");
            assert_eq!(grpc.headers()["grpc-status"], (code as i32).to_string());
            assert_eq!(
                percent_decode(grpc.headers()["grpc-message"].as_bytes()),
                msg,
                "{e:?}"
            );
            let json = e.clone().into_response(Protocol::Http);
            assert_eq!(json.status().as_u16(), http, "{e:?}");
            assert_eq!(json.headers()["content-type"], "application/json");
        }
    }

    #[test]
    fn balancer_errors_map_without_internal_text() {
        let e = BalancerError::BadRequest("secret detail".into());
        let g = GatewayError::from_balancer(&e);
        assert_eq!(g, GatewayError::Upstream(UpstreamFailure::BadRequest));
        assert!(!g.message().contains("secret"));
    }
}
