//! What the edge does to a request before routing: the path of an HTTP
//! (non-gRPC) request is normalized (dot segments removed, `%2E` decoded,
//! slashes merged; escaped slashes kept or refused) so that routes and
//! deny rules see the path the backend will, and `X-Forwarded-For` /
//! `Forwarded` carry the real peer, with inbound values trusted only from
//! configured proxies.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde::Deserialize;

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `Forwarded` (RFC 7239).
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// What to do with `%2F` / `%5C` in a path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Leave them as they are (they are not path separators).
    #[default]
    Keep,
    /// Answer 400.
    Reject,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// An escaped slash with `escaped_slashes = "reject"`.
    EscapedSlash,
}

/// Normalizes a request path: `%2E` decoded to `.`, dot segments removed
/// (RFC 3986 5.2.4, never above the root), repeated slashes merged when
/// `merge_slashes`. Returns None when nothing changed.
pub(crate) fn normalize_path(
    path: &str,
    merge_slashes: bool,
    escaped: EscapedSlashes,
) -> Result<Option<String>, PathError> {
    let has_escape = path.contains('%');
    if has_escape && escaped == EscapedSlashes::Reject {
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return Err(PathError::EscapedSlash);
        }
    }
    let dirty = has_escape
        || path.contains("/.")
        || (merge_slashes && path.contains("//"))
        || !path.starts_with('/');
    if !dirty {
        return Ok(None);
    }
    let decoded = if has_escape {
        path.replace("%2E", ".").replace("%2e", ".")
    } else {
        path.to_string()
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            "" if merge_slashes && i != last => {}
            s => out.push(s),
        }
    }
    let normalized = format!("/{}", out.join("/"));
    Ok((normalized != path).then_some(normalized))
}

/// Replaces the path of `uri`, keeping its query.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// An address or CIDR block of trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `::1` or `192.168.1.5`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let ip: IpAddr = s.parse().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr: ip, prefix })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The forwarding headers of one connection's peer, built once per
/// connection: for a peer that is not a trusted proxy (the usual case)
/// each request only swaps in these three values.
#[derive(Debug, Clone)]
pub(crate) struct PeerHeaders {
    peer: SocketAddr,
    from_proxy: bool,
    tls: bool,
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
    proto: HeaderValue,
}

impl PeerHeaders {
    /// The values for `peer` on a listener with `trusted` proxies.
    pub(crate) fn new(peer: SocketAddr, trusted: &[IpNet], tls: bool) -> Self {
        let ip = peer.ip().to_canonical();
        let proto = if tls { "https" } else { "http" };
        Self {
            peer,
            from_proxy: trusted.iter().any(|n| n.contains(ip)),
            tls,
            xff: HeaderValue::try_from(ip.to_string()).ok(),
            forwarded: HeaderValue::try_from(format!("for={};proto={proto}", node(ip))).ok(),
            proto: HeaderValue::from_static(proto),
        }
    }

    /// Sets them on an upstream request (see [`set_forwarded`]).
    pub(crate) fn apply(&self, headers: &mut HeaderMap, trusted: &[IpNet]) {
        if self.from_proxy {
            return set_forwarded(headers, self.peer, trusted, self.tls);
        }
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&FORWARDED);
        if let Some(v) = &self.xff {
            headers.insert(X_FORWARDED_FOR, v.clone());
        }
        if let Some(v) = &self.forwarded {
            headers.insert(FORWARDED, v.clone());
        }
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
    }
}

/// `for=` node of `Forwarded` (RFC 7239: IPv6 quoted and bracketed).
fn node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Sets the forwarding headers for the upstream request: the peer is
/// appended to `X-Forwarded-For` and `Forwarded` when it is a trusted
/// proxy (whose inbound values are kept); otherwise inbound values are
/// dropped and the peer alone is written. `X-Forwarded-Proto` says whether
/// the client spoke TLS to us (kept from a trusted proxy).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    trusted: &[IpNet],
    tls: bool,
) {
    let ip = peer.ip().to_canonical();
    let from_proxy = trusted.iter().any(|n| n.contains(ip));
    let proto = if tls { "https" } else { "http" };
    let node = node(ip);
    let xff_prior = joined(headers, &X_FORWARDED_FOR).filter(|_| from_proxy);
    let fwd_prior = joined(headers, &FORWARDED).filter(|_| from_proxy);
    let xfp_prior = headers
        .get(&X_FORWARDED_PROTO)
        .cloned()
        .filter(|_| from_proxy);
    headers.remove(&X_FORWARDED_FOR);
    headers.remove(&FORWARDED);
    headers.remove(&X_FORWARDED_PROTO);
    let xff = match xff_prior {
        Some(p) => format!("{p}, {ip}"),
        None => ip.to_string(),
    };
    let fwd = match fwd_prior {
        Some(p) => format!("{p}, for={node};proto={proto}"),
        None => format!("for={node};proto={proto}"),
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::try_from(fwd) {
        headers.insert(FORWARDED, v);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        xfp_prior.unwrap_or(HeaderValue::from_static(proto)),
    );
}

/// All values of a header joined with `, ` (None when absent or not text).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        let keep = EscapedSlashes::Keep;
        let cases = [
            ("/a/b", None),
            ("/a/./b", Some("/a/b")),
            ("/a/../b", Some("/b")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/a//b///c", Some("/a/b/c")),
            ("/a/%2e%2E/b", Some("/b")),
            ("/a/b/..", Some("/a/")),
            ("/a/b/.", Some("/a/b/")),
            ("/admin%2Fsecret", None),
            ("/", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_path(input, true, keep).expect("ok").as_deref(),
                want,
                "{input}"
            );
        }
        assert_eq!(
            normalize_path("/a//b", false, keep).expect("ok"),
            None,
            "merging is optional"
        );
        assert_eq!(
            normalize_path("/admin%2fsecret", true, EscapedSlashes::Reject),
            Err(PathError::EscapedSlash)
        );
    }

    #[test]
    fn forwarded_headers_trust_only_configured_proxies() {
        let peer: SocketAddr = "203.0.113.7:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        set_forwarded(&mut h, peer, &[], false);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7");
        assert_eq!(h[&FORWARDED], "for=203.0.113.7;proto=http");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");

        let trusted = [IpNet::parse("203.0.113.0/24").expect("net")];
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(&mut h, peer, &trusted, false);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 203.0.113.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");

        let v6: SocketAddr = "[2001:db8::1]:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, v6, &trusted, true);
        assert_eq!(h[&FORWARDED], "for=\"[2001:db8::1]\";proto=https");
        for (peer, tls) in [(peer, false), (v6, true)] {
            for trusted in [&[][..], &trusted[..]] {
                let mut spoofed = HeaderMap::new();
                spoofed.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
                let mut a = spoofed.clone();
                set_forwarded(&mut a, peer, trusted, tls);
                let mut b = spoofed;
                PeerHeaders::new(peer, trusted, tls).apply(&mut b, trusted);
                assert_eq!(a, b, "{peer} {tls}");
            }
        }
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(
            IpNet::parse("::1")
                .expect("v6")
                .contains("::1".parse().expect("ip"))
        );
    }
}
