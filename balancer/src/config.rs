//! Typed configuration of clusters, endpoints and routes. Parsed by serde
//! (from the gateway's TOML file), then checked by `validate`.

use std::{fmt, path::PathBuf, sync::Arc};

use serde::Deserialize;

/// Default time to open a TCP (and TLS) connection to an endpoint.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default time a request may wait for a free endpoint slot (`maxconn`).
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1_000;
/// Default number of requests that may wait for a slot per cluster.
pub const DEFAULT_MAX_QUEUE: usize = 1_024;
/// Default first back-off after a failed connect; doubles up to the max.
pub const DEFAULT_RECONNECT_BACKOFF_MS: u64 = 250;
/// Default cap on the reconnect back-off.
pub const DEFAULT_MAX_RECONNECT_BACKOFF_MS: u64 = 5_000;
/// Default HTTP/2 keep-alive PING interval on upstream connections: off,
/// as in Envoy and HAProxy (grpc-go servers answer PINGs on an idle
/// connection more often than every 2 hours with GOAWAY "too_many_pings").
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 0;
/// Default health check interval (HAProxy `inter`).
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
/// Default health check timeout.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
/// Default consecutive successes to mark a server up (HAProxy `rise`).
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to mark a server down (HAProxy `fall`).
pub const DEFAULT_FALL: u32 = 3;
/// Default DNS re-resolution interval.
pub const DEFAULT_DNS_REFRESH_MS: u64 = 5_000;
/// Default refresh interval of descriptors fetched by reflection.
pub const DEFAULT_REFLECTION_INTERVAL_MS: u64 = 60_000;
/// Default attempts for a request whose bytes never reached an endpoint.
pub const DEFAULT_MAX_CONNECT_ATTEMPTS: u32 = 3;
/// Default idle time after which an upstream connection closes (10 min).
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Default cap on h2 connections to one endpoint.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: u32 = 8;
/// Default cap on streams (requests) in flight per endpoint: Envoy's
/// circuit-breaker default `max_requests`, so one slow server cannot take
/// unbounded work; the excess waits in the cluster's queue.
pub const DEFAULT_MAX_REQUESTS_PER_ENDPOINT: u32 = 1_024;
/// Default cap on open HTTP/1.1 connections to one endpoint of a plain
/// `http1` cluster (one request at a time each): as many as the idle
/// keep-alive pool keeps.
pub const DEFAULT_MAX_HTTP1_CONNECTIONS_PER_ENDPOINT: u32 = 64;
/// Largest accepted `max_http1_connections_per_endpoint`.
pub const MAX_HTTP1_CONNECTIONS_PER_ENDPOINT: u32 = 10_000;

/// Name of a cluster, unique in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct ClusterName(Arc<str>);

impl ClusterName {
    /// Makes a cluster name.
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string (no copy).
    pub fn as_arc(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl std::borrow::Borrow<str> for ClusterName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named group of endpoints with a pick policy (HAProxy `backend`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name; routes refer to it.
    pub name: ClusterName,
    /// The servers.
    pub endpoints: Vec<EndpointConfig>,
    /// What the endpoints speak: `grpc` (HTTP/2), or plain HTTP for
    /// non-gRPC traffic (HAProxy's `default_backend` web app): `http1` or
    /// `http2`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// How an endpoint is picked.
    #[serde(default)]
    pub lb: LbPolicy,
    /// For `lb = "hash"`: the request header whose value is hashed.
    #[serde(default)]
    pub hash_header: Option<String>,
    /// Retries beyond connect failures (refused streams, and statuses).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Passive outlier detection: eject servers that keep failing.
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    /// Time to open a connection, TLS included.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Streams in flight per endpoint (HAProxy `maxconn`, Envoy's
    /// `max_requests`); the excess waits in the queue.
    #[serde(default = "default_max_requests_per_endpoint")]
    pub max_requests_per_endpoint: u32,
    /// Open HTTP/1.1 connections per endpoint of an `http1` cluster (each
    /// carries one request at a time, so this also caps its requests in
    /// flight); the excess waits in the queue. None = the default.
    #[serde(default)]
    pub max_http1_connections_per_endpoint: Option<u32>,
    /// Requests that may wait for a slot when every endpoint is full.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// How long a request may wait in that queue.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Attempts on distinct endpoints for a request that never reached one.
    #[serde(default = "default_max_connect_attempts")]
    pub max_connect_attempts: u32,
    /// Most HTTP/2 connections to one endpoint: another is opened when the
    /// open ones are at the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: u32,
    /// HTTP/2 PING interval on upstream connections; 0 disables.
    #[serde(default = "default_keepalive_interval_ms")]
    pub keepalive_interval_ms: u64,
    /// An upstream HTTP/2 connection with no stream open for this long is
    /// closed (Envoy's upstream `idle_timeout`, HAProxy's
    /// `pool-purge-delay`): connections opened for a burst do not stay
    /// forever. 0 = never.
    #[serde(default = "default_upstream_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Active health checks (HAProxy `check`); none = passive only.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// TLS to the endpoints; none = cleartext HTTP/2 (h2c).
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// How often servers given by host name are re-resolved (DNS); added
    /// addresses join, vanished ones drain.
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// Fetch the servers' descriptors by gRPC reflection (at start and
    /// every `reflection_interval_ms`) and register them as the descriptor
    /// set named after the cluster, bound to it.
    #[serde(default)]
    pub descriptors_from_reflection: bool,
    /// How often reflected descriptors are refreshed.
    #[serde(default = "default_reflection_interval_ms")]
    pub reflection_interval_ms: u64,
}

/// One server of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `ip:port` (a host name is resolved once at start).
    pub address: String,
    /// Name shown in logs; defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
    /// Relative weight, for every policy (1 to 1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// What a cluster's endpoints speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// gRPC over HTTP/2 (h2c, or TLS with ALPN `h2`).
    #[default]
    Grpc,
    /// Plain HTTP/1.1 with keep-alive (TLS with ALPN `http/1.1`).
    Http1,
    /// Plain HTTP over HTTP/2.
    Http2,
}

/// How a cluster picks an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each healthy endpoint in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random among healthy endpoints.
    Random,
    /// Power of two choices on in-flight streams (divided by weight).
    LeastRequest,
    /// Consistent hashing of a request header (`hash_header`): a key
    /// sticks to one server, and adding or removing a server moves only
    /// about 1/n of the keys. Requests without the header go round robin.
    Hash,
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// What a check does.
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// For `grpc`: the service name asked about ("" = the whole server).
    #[serde(default)]
    pub service: String,
    /// Time between checks.
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    /// Time one check may take.
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes that mark a down server up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that mark an up server down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `grpc.health.v1.Health/Check`; anything but SERVING is down.
    #[default]
    Grpc,
    /// A TCP connect (and TLS handshake when the cluster uses TLS).
    Tcp,
}

/// When a request that reached an endpoint may be sent to another.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// gRPC statuses (by name) retried on another endpoint when the answer
    /// is trailers-only and the whole request was kept; default none
    /// (only the always-safe cases: not sent, REFUSED_STREAM).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Attempts in all, the first included.
    #[serde(default = "default_retry_attempts")]
    pub max_attempts: u32,
    /// Retries in progress may be at most this share of active requests...
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// ...or this many, whichever is more.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
    /// Largest request body kept for a replay; a longer (streaming) request
    /// is never retried once it went out.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            max_attempts: default_retry_attempts(),
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
            max_buffered_bytes: default_max_buffered_bytes(),
        }
    }
}

fn default_retry_attempts() -> u32 {
    2
}
fn default_budget_percent() -> u32 {
    20
}
fn default_min_retry_concurrency() -> u32 {
    3
}
fn default_max_buffered_bytes() -> usize {
    64 * 1024
}

/// Passive outlier detection (Envoy `outlier_detection`, HAProxy
/// `observe layer7`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures that eject a server.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// gRPC status codes that count as failures, by name (`UNAVAILABLE`,
    /// `INTERNAL`, ...); connect failures and resets always count.
    #[serde(default = "default_outlier_statuses")]
    pub statuses: Vec<String>,
    /// First ejection time; each further ejection of the same server
    /// lasts this times the number of ejections so far.
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Longest ejection.
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// Most servers of the cluster ejected at once, in percent (the last
    /// eligible server is never ejected).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_outlier_statuses() -> Vec<String> {
    vec!["UNAVAILABLE".into()]
}
fn default_base_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_ms() -> u64 {
    300_000
}
fn default_max_ejection_percent() -> u32 {
    50
}

/// gRPC status code numbers by name (`google/rpc/code.proto`).
pub fn grpc_code_by_name(name: &str) -> Option<i32> {
    crate::grpc::CODE_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as i32)
}

/// TLS settings for upstream connections (HAProxy `ssl ca-file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates that sign the servers' certificates
    /// (required unless `insecure_skip_verify`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Do not verify the servers' certificates (testing only; logged as a
    /// warning at start).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Name to verify in the server certificate (and send as SNI);
    /// defaults to the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_queue_timeout_ms() -> u64 {
    DEFAULT_QUEUE_TIMEOUT_MS
}
fn default_max_queue() -> usize {
    DEFAULT_MAX_QUEUE
}
fn default_max_connect_attempts() -> u32 {
    DEFAULT_MAX_CONNECT_ATTEMPTS
}
fn default_max_requests_per_endpoint() -> u32 {
    DEFAULT_MAX_REQUESTS_PER_ENDPOINT
}
fn default_max_connections_per_endpoint() -> u32 {
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT
}
fn default_upstream_idle_timeout_ms() -> u64 {
    DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS
}
fn default_keepalive_interval_ms() -> u64 {
    DEFAULT_KEEPALIVE_INTERVAL_MS
}
fn default_dns_refresh_ms() -> u64 {
    DEFAULT_DNS_REFRESH_MS
}
fn default_reflection_interval_ms() -> u64 {
    DEFAULT_REFLECTION_INTERVAL_MS
}
fn default_weight() -> u32 {
    1
}
fn default_health_interval_ms() -> u64 {
    DEFAULT_HEALTH_INTERVAL_MS
}
fn default_health_timeout_ms() -> u64 {
    DEFAULT_HEALTH_TIMEOUT_MS
}
fn default_rise() -> u32 {
    DEFAULT_RISE
}
fn default_fall() -> u32 {
    DEFAULT_FALL
}

/// A configuration mistake, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `clusters[1].endpoints`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// Makes an error for `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl ClusterConfig {
    /// Requests in flight per endpoint: `max_requests_per_endpoint`, and
    /// for an `http1` cluster at most its connection cap (one request per
    /// connection at a time), so the excess waits in the cluster's queue.
    pub fn effective_requests_per_endpoint(&self) -> u32 {
        match self.protocol {
            UpstreamProtocol::Http1 => self
                .max_requests_per_endpoint
                .min(self.http1_connections_per_endpoint()),
            _ => self.max_requests_per_endpoint,
        }
    }

    /// Open HTTP/1.1 connections per endpoint of an `http1` cluster.
    pub fn http1_connections_per_endpoint(&self) -> u32 {
        self.max_http1_connections_per_endpoint
            .unwrap_or(DEFAULT_MAX_HTTP1_CONNECTIONS_PER_ENDPOINT)
    }

    /// Checks the values serde cannot; `at` is this cluster's field path.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.name.as_str().is_empty() {
            return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.endpoints"),
                "a cluster needs at least one endpoint",
            ));
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            if !ep.address.contains(':') {
                return Err(ConfigError::new(
                    format!("{at}.endpoints[{i}].address"),
                    format!("`{}` is not host:port", ep.address),
                ));
            }
            if ep.weight == 0 || ep.weight > 1000 {
                return Err(ConfigError::new(
                    format!("{at}.endpoints[{i}].weight"),
                    "must be from 1 to 1000",
                ));
            }
        }
        if self.connect_timeout_ms == 0 {
            return Err(ConfigError::new(
                format!("{at}.connect_timeout_ms"),
                "must be greater than 0",
            ));
        }
        if self.max_requests_per_endpoint == 0 {
            return Err(ConfigError::new(
                format!("{at}.max_requests_per_endpoint"),
                "must be at least 1",
            ));
        }
        if let Some(n) = self.max_http1_connections_per_endpoint {
            if self.protocol != UpstreamProtocol::Http1 {
                return Err(ConfigError::new(
                    format!("{at}.max_http1_connections_per_endpoint"),
                    "only used with protocol = \"http1\" (HTTP/2 clusters: max_connections_per_endpoint)",
                ));
            }
            if !(1..=MAX_HTTP1_CONNECTIONS_PER_ENDPOINT).contains(&n) {
                return Err(ConfigError::new(
                    format!("{at}.max_http1_connections_per_endpoint"),
                    format!("must be from 1 to {MAX_HTTP1_CONNECTIONS_PER_ENDPOINT}"),
                ));
            }
        }
        if !(1..=1024).contains(&self.max_connections_per_endpoint) {
            return Err(ConfigError::new(
                format!("{at}.max_connections_per_endpoint"),
                "must be from 1 to 1024",
            ));
        }
        if self.max_connect_attempts == 0 {
            return Err(ConfigError::new(
                format!("{at}.max_connect_attempts"),
                "must be at least 1",
            ));
        }
        match (self.lb, &self.hash_header) {
            (LbPolicy::Hash, None) => {
                return Err(ConfigError::new(
                    format!("{at}.hash_header"),
                    "lb = \"hash\" needs the header to hash",
                ));
            }
            (LbPolicy::Hash, Some(h)) if http::HeaderName::try_from(h.as_str()).is_err() => {
                return Err(ConfigError::new(
                    format!("{at}.hash_header"),
                    format!("`{h}` is not a header name"),
                ));
            }
            (p, Some(_)) if p != LbPolicy::Hash => {
                return Err(ConfigError::new(
                    format!("{at}.hash_header"),
                    "only used with lb = \"hash\"",
                ));
            }
            _ => {}
        }
        if let Some(o) = &self.outlier_detection {
            if o.consecutive_failures == 0
                || o.base_ejection_ms == 0
                || o.max_ejection_percent > 100
            {
                return Err(ConfigError::new(
                    format!("{at}.outlier_detection"),
                    "consecutive_failures and base_ejection_ms must be at least 1, max_ejection_percent at most 100",
                ));
            }
            for (k, s) in o.statuses.iter().enumerate() {
                if grpc_code_by_name(s).is_none() {
                    return Err(ConfigError::new(
                        format!("{at}.outlier_detection.statuses[{k}]"),
                        format!("`{s}` is not a gRPC status name"),
                    ));
                }
            }
        }
        if let Some(r) = &self.retry {
            if r.max_attempts == 0 || r.budget_percent > 100 {
                return Err(ConfigError::new(
                    format!("{at}.retry"),
                    "max_attempts must be at least 1 and budget_percent at most 100",
                ));
            }
            for (k, s) in r.statuses.iter().enumerate() {
                if grpc_code_by_name(s).is_none() {
                    return Err(ConfigError::new(
                        format!("{at}.retry.statuses[{k}]"),
                        format!("`{s}` is not a gRPC status name"),
                    ));
                }
            }
        }
        if let Some(t) = &self.tls {
            if t.ca_file.is_none() && !t.insecure_skip_verify {
                return Err(ConfigError::new(
                    format!("{at}.tls.ca_file"),
                    "required (or set insecure_skip_verify = true, for testing only)",
                ));
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(ConfigError::new(
                    format!("{at}.tls"),
                    "cert_file and key_file go together (mutual TLS)",
                ));
            }
        }
        if let Some(hc) = &self.health_check {
            if self.protocol == UpstreamProtocol::Http1 && hc.kind == HealthCheckKind::Grpc {
                return Err(ConfigError::new(
                    format!("{at}.health_check.kind"),
                    "an http1 cluster cannot be checked with grpc; use kind = \"tcp\"",
                ));
            }
            if hc.interval_ms == 0 || hc.timeout_ms == 0 {
                return Err(ConfigError::new(
                    format!("{at}.health_check"),
                    "interval_ms and timeout_ms must be greater than 0",
                ));
            }
            if hc.rise == 0 || hc.fall == 0 {
                return Err(ConfigError::new(
                    format!("{at}.health_check"),
                    "rise and fall must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// One routing rule: a match on the request head, and the cluster it sends to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name shown in logs; defaults to `route<N>`.
    #[serde(default)]
    pub name: Option<String>,
    /// What the request must look like; an empty match takes everything.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatchConfig,
    /// Where matching requests go.
    pub cluster: ClusterName,
    /// Deny (PERMISSION_DENIED / 403) unless every one of these matches
    /// (HAProxy `http-request deny unless { req.hdr(..) -m str .. }`).
    #[serde(default)]
    pub deny_unless: Vec<HeaderMatchConfig>,
    /// Upper bound on the whole call; none = only the client's deadline.
    /// A longer client `grpc-timeout` is lowered to this (a clamp).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Ends a stream on which nothing moved either way for this long
    /// (long-lived streams); none = no idle limit.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

/// The request-head conditions of a route; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatchConfig {
    /// The path equals this (HAProxy `path`).
    #[serde(default)]
    pub path: Option<String>,
    /// The path starts with this (HAProxy `path_beg`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The gRPC service (`package.Service`, the path's first segment).
    #[serde(default)]
    pub service: Option<String>,
    /// The gRPC method name (the path's last segment).
    #[serde(default)]
    pub method: Option<String>,
    /// Header conditions (HAProxy `req.hdr`).
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// A condition on one request header; give exactly one of `exact`,
/// `prefix`, `present`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (case-insensitive).
    pub name: String,
    /// The value equals this (HAProxy `-m str`).
    #[serde(default)]
    pub exact: Option<String>,
    /// The value starts with this (HAProxy `-m beg`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The header is present (`true`) or absent (`false`).
    #[serde(default)]
    pub present: Option<bool>,
}
