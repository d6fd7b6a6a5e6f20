//! The one place that turns gateway errors into downstream responses: a
//! gRPC trailers-only response (HTTP 200 + `grpc-status`) for gRPC callers,
//! a JSON `google.rpc.Status`-shaped body with the mapped HTTP status for
//! everyone else.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use balancer::{
    body::BoxError,
    headers::{GRPC_MESSAGE, GRPC_STATUS},
};

use crate::classify::Protocol;

/// Body of every downstream response.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// gRPC status codes (`google/rpc/code.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The code for a `grpc-status` number; unknown numbers are `Unknown`.
    pub fn from_i32(n: i32) -> Self {
        const ALL: [Code; 17] = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        usize::try_from(n)
            .ok()
            .and_then(|i| ALL.get(i))
            .copied()
            .unwrap_or(Code::Unknown)
    }

    /// The gRPC code for an upstream HTTP status that came without a
    /// `grpc-status` (gRPC's http-grpc-status-mapping.md).
    pub fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The HTTP status a JSON caller gets for this code (grpc-gateway's and
    /// Envoy's mapping).
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::Ok => StatusCode::OK,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Unknown | Self::Internal | Self::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub(crate) use crate::error::GatewayError;

impl GatewayError {
    /// The downstream response for a caller of `protocol`, from the
    /// error table ([`GatewayError::row`]).
    pub fn into_response(self, protocol: Protocol) -> Response<ResponseBody> {
        let row = self.row();
        match protocol {
            Protocol::Grpc | Protocol::GrpcWeb { .. } => {
                grpc_status_response(row.code, &self.message(), protocol)
            }
            Protocol::Http => json_error(row.http, row.code, &self.message()),
        }
    }
}

/// Sets `grpc-status` and, when there is one, the percent-encoded
/// `grpc-message` (for a head or trailers).
pub(crate) fn insert_grpc_status(h: &mut http::HeaderMap, code: Code, message: &str) {
    h.insert(GRPC_STATUS, HeaderValue::from(code as i32));
    if !message.is_empty()
        && let Ok(v) = HeaderValue::from_str(&percent_encode(message))
    {
        h.insert(GRPC_MESSAGE, v);
    }
}

/// A gRPC trailers-only response: HTTP 200, status in the headers.
pub(crate) fn grpc_status_response(
    code: Code,
    message: &str,
    protocol: Protocol,
) -> Response<ResponseBody> {
    let ct = match protocol {
        Protocol::GrpcWeb { text: true } => "application/grpc-web-text+proto",
        Protocol::GrpcWeb { text: false } => "application/grpc-web+proto",
        _ => "application/grpc",
    };
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    insert_grpc_status(h, code, message);
    resp
}

/// A JSON error in the shape of `google.rpc.Status`.
pub(crate) fn json_error(status: StatusCode, code: Code, message: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "code": code as i32, "message": message, "details": [] });
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a `grpc-message` percent-encodes (gRPC over HTTP/2 spec: bytes
/// outside 0x20..=0x7E, and `%`; non-ASCII bytes always are).
const GRPC_MESSAGE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Decodes a percent-encoded `grpc-message` (invalid escapes kept as is).
pub(crate) fn percent_decode(msg: &[u8]) -> String {
    percent_encoding::percent_decode(msg)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes a `grpc-message`.
pub(crate) fn percent_encode(msg: &str) -> String {
    percent_encoding::utf8_percent_encode(msg, GRPC_MESSAGE_ESCAPES).to_string()
}

/// An empty response body.
pub(crate) fn empty() -> ResponseBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A one-chunk response body.
pub(crate) fn full(b: Bytes) -> ResponseBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in cases {
            assert_eq!(code.http_status().as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn grpc_error_is_trailers_only() {
        let r = GatewayError::InvalidRequest("bad: 100%".into()).into_response(Protocol::Grpc);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "3");
        assert_eq!(r.headers()["grpc-message"], "bad: 100%25");
        assert_eq!(percent_encode("héllo"), "h%C3%A9llo");
        assert_eq!(
            percent_decode(b"h%C3%A9llo 100%25 %zz %"),
            "héllo 100% %zz %"
        );
        assert_eq!(Code::from_i32(7), Code::PermissionDenied);
        assert_eq!(Code::from_i32(99), Code::Unknown);
    }
}
