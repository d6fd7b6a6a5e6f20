//! Header hygiene shared by every proxied exchange, and the gRPC header
//! names as constants (a `&str` lookup parses the name on every call).

use http::{HeaderMap, HeaderName, header};

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `grpc-status-details-bin`.
pub const GRPC_STATUS_DETAILS_BIN: HeaderName = HeaderName::from_static("grpc-status-details-bin");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The `grpc-status` of a header or trailer map.
pub fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Removes connection-specific headers (RFC 9110 section 7.6.1; not
/// allowed at all in HTTP/2, RFC 9113 section 8.2.2) and anything the
/// `connection` header names; `te: trailers` stays.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass to find out; almost every request has none of them.
    let any = h.keys().any(|k| {
        k == header::CONNECTION
            || k == header::TE
            || k == header::TRANSFER_ENCODING
            || k == header::UPGRADE
            || k == KEEP_ALIVE
            || k == PROXY_CONNECTION
    });
    if !any {
        return;
    }
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(s) = conn.to_str()
    {
        for name in s.split(',') {
            h.remove(name.trim());
        }
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(name);
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
