//! Classifying a request by its head alone: native gRPC, gRPC-Web, or a
//! plain HTTP request (JSON transcoding or a plain HTTP route).

use http::{HeaderMap, header::CONTENT_TYPE};

/// The downstream protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`, `application/grpc+proto`, `application/grpc+json`...
    Grpc,
    /// `application/grpc-web[+proto]` or, with `text`, `application/grpc-web-text`.
    GrpcWeb {
        /// Base64 framing.
        text: bool,
    },
    /// Anything else.
    Http,
}

impl Protocol {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb { text: false } => "grpc-web",
            Self::GrpcWeb { text: true } => "grpc-web-text",
            Self::Http => "http",
        }
    }
}

/// Classifies by `content-type` (case-insensitive, parameters ignored).
pub(crate) fn classify(headers: &HeaderMap) -> Protocol {
    let Some(ct) = headers.get(CONTENT_TYPE).map(|v| v.as_bytes()) else {
        return Protocol::Http;
    };
    let essence = ct.split(|b| *b == b';').next().unwrap_or_default();
    let essence = trim(essence);
    let Some(rest) = strip_prefix_ci(essence, b"application/grpc") else {
        return Protocol::Http;
    };
    if rest.is_empty() || rest[0] == b'+' {
        return Protocol::Grpc;
    }
    if let Some(web) = strip_prefix_ci(rest, b"-web") {
        if web.is_empty() || web[0] == b'+' {
            return Protocol::GrpcWeb { text: false };
        }
        if let Some(t) = strip_prefix_ci(web, b"-text")
            && (t.is_empty() || t[0] == b'+')
        {
            return Protocol::GrpcWeb { text: true };
        }
    }
    Protocol::Http
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (Some("application/grpc"), Protocol::Grpc),
            (Some("application/grpc+proto"), Protocol::Grpc),
            (Some("Application/GRPC+json; charset=utf-8"), Protocol::Grpc),
            (
                Some("application/grpc-web"),
                Protocol::GrpcWeb { text: false },
            ),
            (
                Some("application/grpc-web+proto"),
                Protocol::GrpcWeb { text: false },
            ),
            (
                Some("application/grpc-web-text"),
                Protocol::GrpcWeb { text: true },
            ),
            (
                Some("application/grpc-web-text+proto"),
                Protocol::GrpcWeb { text: true },
            ),
            (Some("application/grpcx"), Protocol::Http),
            (Some("application/grpc-webx"), Protocol::Http),
            (Some("application/json"), Protocol::Http),
            (Some(""), Protocol::Http),
            (None, Protocol::Http),
        ];
        for (ct, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(CONTENT_TYPE, ct.parse().expect("header value"));
            }
            assert_eq!(classify(&h), want, "{ct:?}");
        }
    }
}
