//! Routing: an ordered list of rules compiled once from configuration;
//! the first rule whose conditions all hold picks the cluster.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use crate::config::{ClusterName, ConfigError, HeaderMatchConfig, RouteConfig};

/// A compiled condition on one header.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    name: HeaderName,
    kind: HeaderMatchKind,
}

#[derive(Debug, Clone)]
enum HeaderMatchKind {
    Exact(HeaderValue),
    Prefix(Vec<u8>),
    Present(bool),
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name for logs and metrics (`route<N>` when the config gives none).
    pub name: std::sync::Arc<str>,
    /// Destination.
    pub cluster: ClusterName,
    /// Conditions that must all hold, else the request is denied.
    pub deny_unless: Vec<HeaderMatch>,
    /// Upper bound on the whole call.
    pub timeout: Option<Duration>,
    /// Longest time a stream may sit idle.
    pub idle_timeout: Option<Duration>,
    path: Option<PathMatch>,
    service: Option<String>,
    method: Option<String>,
    headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// The ordered, immutable route list.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

// === impl HeaderMatch ===

impl HeaderMatch {
    /// Compiles one header condition; `at` is its field path.
    pub fn compile(cfg: &HeaderMatchConfig, at: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(cfg.name.as_str()).map_err(|_| {
            ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is not a header name", cfg.name),
            )
        })?;
        let kind = match (&cfg.exact, &cfg.prefix, cfg.present) {
            (Some(v), None, None) => {
                HeaderMatchKind::Exact(HeaderValue::try_from(v.as_str()).map_err(|_| {
                    ConfigError::new(format!("{at}.exact"), "not a valid header value")
                })?)
            }
            (None, Some(p), None) => HeaderMatchKind::Prefix(p.as_bytes().to_vec()),
            (None, None, Some(p)) => HeaderMatchKind::Present(p),
            _ => {
                return Err(ConfigError::new(
                    at.to_string(),
                    "give exactly one of `exact`, `prefix` or `present`",
                ));
            }
        };
        Ok(Self { name, kind })
    }

    /// The header this condition reads.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Whether `headers` satisfy this condition. With several values, any
    /// one that matches is enough.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        match &self.kind {
            HeaderMatchKind::Present(want) => values.peek().is_some() == *want,
            // Constant time in the value (a deny rule's value is a shared
            // secret, as in the HAProxy demo); only its length may show.
            // Every value is compared, with no early exit.
            HeaderMatchKind::Exact(v) => values
                .fold(subtle::Choice::from(0), |acc, x| {
                    acc | x.as_bytes().ct_eq(v.as_bytes())
                })
                .into(),
            HeaderMatchKind::Prefix(p) => values.any(|x| x.as_bytes().starts_with(p)),
        }
    }
}

// === impl Route ===

impl Route {
    fn compile(cfg: &RouteConfig, index: usize) -> Result<Self, ConfigError> {
        let at = format!("routes[{index}]");
        let m = &cfg.matcher;
        let path = match (&m.path, &m.path_prefix) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.match"),
                    "give `path` or `path_prefix`, not both",
                ));
            }
            (Some(p), None) => Some(PathMatch::Exact(check_path(
                p,
                &format!("{at}.match.path"),
            )?)),
            (None, Some(p)) => Some(PathMatch::Prefix(check_path(
                p,
                &format!("{at}.match.path_prefix"),
            )?)),
            (None, None) => None,
        };
        let headers = compile_headers(&m.headers, &format!("{at}.match.headers"))?;
        let deny_unless = compile_headers(&cfg.deny_unless, &format!("{at}.deny_unless"))?;
        if cfg.timeout_ms == Some(0) {
            return Err(ConfigError::new(
                format!("{at}.timeout_ms"),
                "must be greater than 0 (omit it for none)",
            ));
        }
        Ok(Self {
            name: cfg
                .name
                .clone()
                .unwrap_or_else(|| format!("route{index}"))
                .into(),
            cluster: cfg.cluster.clone(),
            deny_unless,
            timeout: cfg.timeout_ms.map(Duration::from_millis),
            idle_timeout: cfg
                .idle_timeout_ms
                .filter(|t| *t > 0)
                .map(Duration::from_millis),
            path,
            service: m.service.clone(),
            method: m.method.clone(),
            headers,
        })
    }

    /// Whether the request head matches this route.
    pub fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        self.matches_path(path) && self.headers.iter().all(|h| h.matches(headers))
    }

    /// Whether this route names paths at all (`path`, `path_prefix`,
    /// `service` or `method`); a route without, like a catch-all or a
    /// content-type rule, claims no path for its cluster.
    pub fn is_path_specific(&self) -> bool {
        self.path.is_some() || self.service.is_some() || self.method.is_some()
    }

    /// Whether the route names `path` explicitly: path-specific and its
    /// path conditions hold (header conditions aside).
    pub fn claims(&self, path: &str) -> bool {
        self.is_path_specific() && self.matches_path(path)
    }

    /// Whether the route names the gRPC method `path` (`/pkg.Service/Method`)
    /// itself: by an exact `path`, or by `service` and `method`.
    pub fn names_method(&self, path: &str) -> bool {
        let Some((service, method)) = grpc_service_method(path) else {
            return false;
        };
        matches!(&self.path, Some(PathMatch::Exact(p)) if p == path)
            || (self.service.as_deref() == Some(service) && self.method.as_deref() == Some(method))
    }

    fn matches_path(&self, path: &str) -> bool {
        match &self.path {
            Some(PathMatch::Exact(p)) if path != p => return false,
            Some(PathMatch::Prefix(p)) if !path.starts_with(p.as_str()) => return false,
            _ => {}
        }
        if self.service.is_some() || self.method.is_some() {
            let Some((service, method)) = grpc_service_method(path) else {
                return false;
            };
            if self.service.as_deref().is_some_and(|s| s != service)
                || self.method.as_deref().is_some_and(|m| m != method)
            {
                return false;
            }
        }
        true
    }

    /// The first deny condition that fails, if any.
    pub fn denied_by(&self, headers: &HeaderMap) -> Option<&HeaderMatch> {
        self.deny_unless.iter().find(|h| !h.matches(headers))
    }
}

/// Splits `/package.Service/Method` into its service and method.
pub fn grpc_service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

fn check_path(p: &str, at: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') {
        return Err(ConfigError::new(at, format!("`{p}` must start with `/`")));
    }
    Ok(p.to_string())
}

/// Compiles a list of header conditions at field path `at`.
pub fn compile_headers(
    list: &[HeaderMatchConfig],
    at: &str,
) -> Result<Vec<HeaderMatch>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| HeaderMatch::compile(h, &format!("{at}[{i}]")))
        .collect()
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles the routes in order; `is_cluster` tells known cluster names.
    pub fn compile(
        routes: &[RouteConfig],
        is_cluster: impl Fn(&ClusterName) -> bool,
    ) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(routes.len());
        for (i, cfg) in routes.iter().enumerate() {
            if !is_cluster(&cfg.cluster) {
                return Err(ConfigError::new(
                    format!("routes[{i}].cluster"),
                    format!("unknown cluster `{}`", cfg.cluster),
                ));
            }
            out.push(Route::compile(cfg, i)?);
        }
        Ok(Self { routes: out })
    }

    /// The first route matching the request head.
    pub fn route(&self, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path, headers))
    }

    /// Whether any route names the gRPC method `path` ([`Route::names_method`]).
    pub fn names_method(&self, path: &str) -> bool {
        self.routes.iter().any(|r| r.names_method(path))
    }

    /// The first route that names `path` explicitly (see [`Route::claims`])
    /// and sends it to a cluster other than `cluster`: a descriptor set
    /// bound to `cluster` may not take that path away from the routes.
    pub fn claimed_elsewhere(&self, path: &str, cluster: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.claims(path) && r.cluster.as_str() != cluster)
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMatchConfig;

    fn hdr(
        name: &str,
        exact: Option<&str>,
        prefix: Option<&str>,
        present: Option<bool>,
    ) -> HeaderMatchConfig {
        HeaderMatchConfig {
            name: name.into(),
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            present,
        }
    }

    fn route(cluster: &str, matcher: RouteMatchConfig) -> RouteConfig {
        RouteConfig {
            name: None,
            matcher,
            cluster: ClusterName::new(cluster),
            deny_unless: vec![],
            timeout_ms: None,
            idle_timeout_ms: None,
        }
    }

    fn table() -> RouteTable {
        let routes = vec![
            route(
                "exact",
                RouteMatchConfig {
                    path: Some("/CodenameCreator/KeepGettingCodenames".into()),
                    ..Default::default()
                },
            ),
            route(
                "svc",
                RouteMatchConfig {
                    service: Some("sample.echo.v1.Echo".into()),
                    headers: vec![hdr("content-type", None, Some("application/grpc"), None)],
                    ..Default::default()
                },
            ),
            route(
                "method",
                RouteMatchConfig {
                    method: Some("GetCodename".into()),
                    ..Default::default()
                },
            ),
            route(
                "hdr",
                RouteMatchConfig {
                    headers: vec![hdr("x-tenant", Some("blue"), None, None)],
                    ..Default::default()
                },
            ),
            route(
                "prefix",
                RouteMatchConfig {
                    path_prefix: Some("/api/".into()),
                    ..Default::default()
                },
            ),
        ];
        RouteTable::compile(&routes, |_| true).expect("valid routes")
    }

    #[test]
    fn first_match_wins() {
        let t = table();
        let mut grpc = HeaderMap::new();
        grpc.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        let mut blue = HeaderMap::new();
        blue.insert("x-tenant", HeaderValue::from_static("blue"));
        let cases: &[(&str, &HeaderMap, Option<&str>)] = &[
            (
                "/CodenameCreator/KeepGettingCodenames",
                &HeaderMap::new(),
                Some("exact"),
            ),
            (
                "/CodenameCreator/GetCodename",
                &HeaderMap::new(),
                Some("method"),
            ),
            ("/sample.echo.v1.Echo/Unary", &grpc, Some("svc")),
            ("/sample.echo.v1.Echo/Unary", &HeaderMap::new(), None),
            ("/sample.echo.v1.Echo/Unary", &blue, Some("hdr")),
            ("/api/x", &HeaderMap::new(), Some("prefix")),
            ("/other", &HeaderMap::new(), None),
        ];
        for (path, headers, want) in cases {
            let got = t.route(path, headers).map(|r| r.cluster.as_str());
            assert_eq!(got, *want, "{path}");
        }
    }

    #[test]
    fn header_match_kinds() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("abc123"));
        let m = |c| HeaderMatch::compile(&c, "x").expect("valid");
        assert!(m(hdr("a", Some("abc123"), None, None)).matches(&h));
        assert!(!m(hdr("a", Some("abc"), None, None)).matches(&h));
        assert!(m(hdr("A", None, Some("abc"), None)).matches(&h));
        assert!(m(hdr("a", None, None, Some(true))).matches(&h));
        assert!(m(hdr("b", None, None, Some(false))).matches(&h));
        assert!(HeaderMatch::compile(&hdr("a", Some("x"), Some("y"), None), "x").is_err());
    }

    #[test]
    fn exact_match_compares_every_value_whole() {
        let m = HeaderMatch::compile(&hdr("k", Some("abc123"), None, None), "x").expect("valid");
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("k", HeaderValue::from_static(v));
            }
            m.matches(&h)
        };
        assert!(with(&["abc123"]));
        assert!(!with(&["abc124"]), "same length, last byte differs");
        assert!(!with(&["xbc123"]), "same length, first byte differs");
        assert!(!with(&["abc12"]) && !with(&["abc1234"]) && !with(&[""]));
        assert!(with(&["nope", "abc123"]), "any value may match");
        assert!(with(&["abc123", "nope"]));
        assert!(!with(&[]));
    }

    #[test]
    fn unknown_cluster_is_named() {
        let err = RouteTable::compile(&[route("nope", RouteMatchConfig::default())], |_| false)
            .expect_err("unknown cluster");
        assert_eq!(err.to_string(), "routes[0].cluster: unknown cluster `nope`");
    }

    #[test]
    fn service_method_split() {
        assert_eq!(grpc_service_method("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(grpc_service_method("/a.B/C/d"), None);
        assert_eq!(grpc_service_method("/a.B"), None);
        assert_eq!(grpc_service_method("a/b"), None);
    }
}
