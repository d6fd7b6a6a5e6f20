//! Which HTTP request headers become gRPC metadata, and which upstream
//! headers and trailers become HTTP response headers. Explicit and safe by
//! default: no magic prefixes, same names both ways, `-bin` values stay
//! base64.

pub(crate) use crate::config::transcode::HeaderPolicyConfig;
use http::{HeaderMap, HeaderName};

/// Request headers never forwarded as metadata: hop-by-hop, HTTP framing
/// and content negotiation of the JSON side.
const NOT_METADATA: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "accept",
    "accept-encoding",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "expect",
    "access-control-request-method",
    "access-control-request-headers",
];

/// Upstream headers and trailers never copied to the HTTP response.
const NOT_RESPONSE: &[&str] = &[
    "content-type",
    "content-length",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "grpc-accept-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

/// The compiled header policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderPolicy {
    allow: Option<Vec<HeaderName>>,
    deny: Vec<HeaderName>,
}

impl HeaderPolicy {
    /// Compiles the lists; errors name the bad header.
    pub(crate) fn new(cfg: &HeaderPolicyConfig) -> Result<Self, balancer::config::ConfigError> {
        let names = |list: &[String], field: &str| {
            list.iter()
                .map(|n| {
                    HeaderName::try_from(n.as_str()).map_err(|_| {
                        balancer::config::ConfigError::new(
                            format!("transcoding.forward_headers.{field}"),
                            format!("`{n}` is not a header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = names(&cfg.allow, "allow")?;
        Ok(Self {
            allow: (!allow.is_empty()).then_some(allow),
            deny: names(&cfg.deny, "deny")?,
        })
    }

    /// The metadata for a request with these HTTP headers.
    pub(crate) fn metadata(&self, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(headers.len() + 3);
        for (k, v) in headers {
            let name = k.as_str();
            if NOT_METADATA.contains(&name)
                || (name.starts_with("grpc-") && name != "grpc-timeout")
                || self.allow.as_ref().is_some_and(|a| !a.contains(k))
                || self.deny.contains(k)
            {
                continue;
            }
            out.append(k.clone(), v.clone());
        }
        out
    }
}

/// Copies upstream headers or trailers worth showing to an HTTP caller.
pub(crate) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !NOT_RESPONSE.contains(&k.as_str()) {
            to.append(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "x"),
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("authorization", "Bearer t"),
            ("x-token", "1"),
            ("x-blob-bin", "AAE="),
            ("grpc-timeout", "1S"),
            ("grpc-status", "0"),
            ("x-secret", "s"),
        ] {
            h.append(k, v.parse().expect("value"));
        }
        let p = HeaderPolicy::new(&HeaderPolicyConfig {
            allow: vec![],
            deny: vec!["x-secret".into()],
        })
        .expect("valid");
        let m = p.metadata(&h);
        let mut keys: Vec<_> = m.keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["authorization", "grpc-timeout", "x-blob-bin", "x-token"]
        );
        let p = HeaderPolicy::new(&HeaderPolicyConfig {
            allow: vec!["x-token".into()],
            deny: vec![],
        })
        .expect("valid");
        assert_eq!(p.metadata(&h).len(), 1);
    }
}
