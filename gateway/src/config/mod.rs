//! The gateway's configuration file (TOML): every config struct, in this
//! module tree (`[admin]`, `[cors]`, `[limits]`, `[tracing]`, `[transcoding]` in their own
//! files; clusters and routes are the balancer's), parsed once; `validate`
//! checks what serde cannot and `crate::compile` builds the runtime objects,
//! with errors that name the field and the problem.

pub mod admin;
pub mod cors;
pub mod limits;
pub mod trace;
pub mod transcode;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use balancer::config::{ClusterConfig, HeaderMatchConfig, RouteConfig};
use serde::Deserialize;

/// Default time in-flight requests get to finish after SIGINT/SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Default cap on concurrent downstream connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on concurrent HTTP/2 streams per downstream connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_024;
/// Default time a TLS handshake may take.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default time to receive an HTTP/1.1 request head.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// Default HTTP/2 keep-alive PING interval to downstream clients.
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 60_000;
/// Default captured header length (HAProxy `len`).
pub const DEFAULT_CAPTURE_LEN: usize = 64;
/// Default time from accept (cleartext) or from the end of the TLS
/// handshake until the client's first bytes: the HTTP/2 preface and first
/// frame header, or the first byte of an HTTP/1.1 request.
pub const DEFAULT_PREFACE_TIMEOUT_MS: u64 = 10_000;
/// Default time a downstream connection may stay without an open stream
/// (HTTP/2) or request (HTTP/1.1) before it gets GOAWAY / is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
/// Default maximum downstream connection age; 0 = unlimited.
pub const DEFAULT_MAX_CONNECTION_AGE_MS: u64 = 0;
/// Default time in-flight streams get after an age, idle or premature-reset
/// GOAWAY before the connection is closed.
pub const DEFAULT_MAX_CONNECTION_AGE_GRACE_MS: u64 = 30_000;
/// Default cap on concurrent connections from one client IP; 0 = no cap
/// (clients behind one NAT or L4 balancer share an address).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// Default: when the listener is full, also ask its oldest idle connection
/// to close, so the next client gets a slot.
pub const DEFAULT_SHED_IDLE_WHEN_FULL: bool = true;
/// Default HTTP/2 receive window per downstream stream, in bytes.
pub const DEFAULT_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// Default HTTP/2 receive window per downstream connection, in bytes.
pub const DEFAULT_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Default: a stream the client resets within this time of opening counts
/// as a premature reset (Envoy `premature_reset_min_stream_lifetime_seconds`).
pub const DEFAULT_PREMATURE_RESET_MIN_STREAM_LIFETIME_MS: u64 = 1_000;
/// Default number of streams on a connection after which more than half
/// of them being premature resets closes it (Envoy
/// `premature_reset_total_stream_count`); 0 disables the check.
pub const DEFAULT_PREMATURE_RESET_TOTAL_STREAM_COUNT: u64 = 500;
/// Smallest HTTP/2 window the listener accepts (the protocol's initial
/// window, RFC 9113 6.9.2).
const MIN_WINDOW_BYTES: u32 = 65_535;
/// Largest HTTP/2 window (RFC 9113 6.9.1).
const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Front listeners (HAProxy `frontend`/`bind`).
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Backend clusters (HAProxy `backend`).
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Ordered routing rules; the first match wins (HAProxy `use_backend`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Descriptor sets to register at start, and where uploads persist.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: admin::AdminConfig,
    /// JSON transcoding.
    #[serde(default)]
    pub transcoding: transcode::TranscodeConfig,
    /// CORS for HTTP callers; none = no CORS headers.
    #[serde(default)]
    pub cors: Option<cors::CorsConfig>,
    /// Bounds on buffered request bytes and body read times.
    #[serde(default)]
    pub limits: limits::LimitsConfig,
    /// W3C trace context and OTLP span export.
    #[serde(default)]
    pub tracing: trace::TracingConfig,
    /// Time in-flight requests get to finish on shutdown.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Data-plane worker threads, each owning its client connections and
    /// its own upstream connections (Envoy's `--concurrency`, HAProxy's
    /// `nbthread`); 0 = one per available core.
    #[serde(default)]
    pub workers: usize,
}

/// `[registry]`: descriptor sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Binary FileDescriptorSet files (`protoc --include_imports
    /// --descriptor_set_out`, `buf build -o`), registered under their file
    /// stem.
    #[serde(default)]
    pub preload: Vec<PathBuf>,
    /// Where uploaded sets are persisted and reloaded from at start; none
    /// = uploads last until the process ends.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// One bound address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name in logs (HAProxy frontend name).
    pub name: String,
    /// `ip:port` to bind; port 0 picks a free port.
    pub address: SocketAddr,
    /// Serve TLS (ALPN `h2`, `http/1.1`); none = cleartext HTTP/1.1 and
    /// HTTP/2 with prior knowledge on the same port.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Deny every request unless all these header conditions hold
    /// (HAProxy `http-request deny unless ...`).
    #[serde(default)]
    pub deny_unless: Vec<HeaderMatchConfig>,
    /// Request headers copied into the access log (HAProxy `capture request header`).
    #[serde(default)]
    pub capture_request_headers: Vec<CaptureConfig>,
    /// Response headers copied into the access log.
    #[serde(default)]
    pub capture_response_headers: Vec<CaptureConfig>,
    /// Log a request when its response starts, and again when it ends
    /// (HAProxy `option logasap`, for long streams).
    #[serde(default)]
    pub log_at_start: bool,
    /// Concurrent downstream connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// TLS handshake timeout.
    #[serde(default = "default_tls_handshake_timeout_ms")]
    pub tls_handshake_timeout_ms: u64,
    /// HTTP/1.1 request head timeout.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// HTTP/2 PING interval; 0 disables.
    #[serde(default = "default_keepalive_interval_ms")]
    pub keepalive_interval_ms: u64,
    /// Peers (addresses or CIDR blocks) whose inbound `X-Forwarded-For`,
    /// `Forwarded` and `X-Forwarded-Proto` are kept and appended to; from
    /// anyone else they are replaced by the peer's address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Merge repeated slashes in HTTP request paths before routing.
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    /// `%2F` / `%5C` in HTTP request paths: `keep` or `reject` (400).
    #[serde(default)]
    pub escaped_slashes: crate::edge::EscapedSlashes,

    // --- Connection lifecycle (front hardening) ---
    /// Time for the client's first bytes: from accept on cleartext, from
    /// the end of the TLS handshake under TLS. HTTP/2 must send the preface
    /// and a SETTINGS frame header, HTTP/1.1 its first byte.
    #[serde(default = "default_preface_timeout_ms")]
    pub preface_timeout_ms: u64,
    /// A connection with no open stream (HTTP/2) or request (HTTP/1.1)
    /// for this long gets GOAWAY and is closed; 0 = never.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A connection this old gets a graceful GOAWAY (in-flight calls
    /// finish, new ones go to a new connection); 0 = never.
    #[serde(default = "default_max_connection_age_ms")]
    pub max_connection_age_ms: u64,
    /// After an age, idle or premature-reset GOAWAY, streams still open
    /// get this long before the connection is closed.
    #[serde(default = "default_max_connection_age_grace_ms")]
    pub max_connection_age_grace_ms: u64,
    /// Concurrent connections from one client IP; beyond it a new
    /// connection is accepted and closed at once; 0 = no cap.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// When `max_connections` is reached, a new connection is accepted and
    /// closed at once; with this on, the oldest connection without an open
    /// stream is also asked to close (GOAWAY), so the next client gets in.
    #[serde(default = "default_shed_idle_when_full")]
    pub shed_idle_when_full: bool,
    /// HTTP/2 receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE), bytes.
    #[serde(default = "default_stream_window_bytes")]
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window per connection, bytes.
    #[serde(default = "default_connection_window_bytes")]
    pub connection_window_bytes: u32,
    /// A stream reset by the client (or dropped before its response ended)
    /// within this time of opening is a premature reset.
    #[serde(default = "default_premature_reset_min_stream_lifetime_ms")]
    pub premature_reset_min_stream_lifetime_ms: u64,
    /// Once a connection has had at least this many streams, more than
    /// half of them premature resets closes it (GOAWAY); 0 = no check.
    #[serde(default = "default_premature_reset_total_stream_count")]
    pub premature_reset_total_stream_count: u64,
    /// Who answers gRPC server reflection on this listener.
    #[serde(default)]
    pub reflection: ReflectionMode,
}

/// Who answers gRPC server reflection (`grpc.reflection.v1` and `v1alpha`)
/// on a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReflectionMode {
    /// The gateway answers from its registry, and asks the backends
    /// (through the routes, deny rules applied) what the registry cannot
    /// answer; their services join the list.
    #[default]
    Merge,
    /// The gateway answers from its registry alone.
    #[serde(alias = "gateway")]
    Registry,
    /// The gateway does not answer: reflection calls are routed to the
    /// backends like any other gRPC call (as a transparent proxy would).
    Passthrough,
}

/// Server certificate of a TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// A header captured into the access log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Header name.
    pub name: String,
    /// Longest value kept, in bytes.
    #[serde(default = "default_capture_len")]
    pub len: usize,
}

/// Access log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Write the access log at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Line format.
    #[serde(default)]
    pub format: LogFormat,
    /// File to append to; none = standard output.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Log every request's and response's headers and trailers (debug aid;
    /// `authorization` and cookies are redacted).
    #[serde(default)]
    pub debug_headers: bool,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// HAProxy `option httplog`-like text.
    #[default]
    Httplog,
    /// One JSON object a line.
    Json,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            format: LogFormat::default(),
            path: None,
            debug_headers: false,
        }
    }
}

fn yes() -> bool {
    true
}
/// Most data-plane worker threads a config may ask for.
const MAX_WORKERS: usize = 1024;

fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_concurrent_streams() -> u32 {
    DEFAULT_MAX_CONCURRENT_STREAMS
}
fn default_tls_handshake_timeout_ms() -> u64 {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS
}
fn default_header_read_timeout_ms() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_MS
}
fn default_keepalive_interval_ms() -> u64 {
    DEFAULT_KEEPALIVE_INTERVAL_MS
}
fn default_capture_len() -> usize {
    DEFAULT_CAPTURE_LEN
}
fn default_preface_timeout_ms() -> u64 {
    DEFAULT_PREFACE_TIMEOUT_MS
}
fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}
fn default_max_connection_age_ms() -> u64 {
    DEFAULT_MAX_CONNECTION_AGE_MS
}
fn default_max_connection_age_grace_ms() -> u64 {
    DEFAULT_MAX_CONNECTION_AGE_GRACE_MS
}
fn default_max_connections_per_ip() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_IP
}
fn default_shed_idle_when_full() -> bool {
    DEFAULT_SHED_IDLE_WHEN_FULL
}
fn default_stream_window_bytes() -> u32 {
    DEFAULT_STREAM_WINDOW_BYTES
}
fn default_connection_window_bytes() -> u32 {
    DEFAULT_CONNECTION_WINDOW_BYTES
}
fn default_premature_reset_min_stream_lifetime_ms() -> u64 {
    DEFAULT_PREMATURE_RESET_MIN_STREAM_LIFETIME_MS
}
fn default_premature_reset_total_stream_count() -> u64 {
    DEFAULT_PREMATURE_RESET_TOTAL_STREAM_COUNT
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type, or an unknown field.
    #[error("invalid config: {0}")]
    Parse(String),
    /// Well-formed, but a value is not acceptable.
    #[error("invalid config: {0}")]
    Invalid(#[from] balancer::config::ConfigError),
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks what serde cannot. Cluster and route checks that need the
    /// compiled objects run when the gateway is built.
    pub fn validate(&self) -> Result<(), balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if self.listeners.is_empty() {
            return Err(E::new("listeners", "at least one listener is needed"));
        }
        if self.workers > MAX_WORKERS {
            return Err(E::new(
                "workers",
                format!("at most {MAX_WORKERS} (0 = one per core)"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                return Err(E::new(
                    format!("{at}.name"),
                    format!("`{}` is empty or not unique", l.name),
                ));
            }
            if l.max_connections == 0 {
                return Err(E::new(
                    format!("{at}.max_connections"),
                    "must be at least 1",
                ));
            }
            if l.max_concurrent_streams == 0 {
                return Err(E::new(
                    format!("{at}.max_concurrent_streams"),
                    "must be at least 1",
                ));
            }
            l.validate_lifecycle(&at)?;
            for (k, c) in l
                .capture_request_headers
                .iter()
                .chain(&l.capture_response_headers)
                .enumerate()
            {
                if http::HeaderName::try_from(c.name.as_str()).is_err() {
                    return Err(E::new(
                        format!("{at}.capture_*_headers[{k}].name"),
                        format!("`{}` is not a header name", c.name),
                    ));
                }
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            c.validate(&format!("clusters[{i}]"))?;
        }
        self.tracing.validate()?;
        Ok(())
    }
}

// === impl ListenerConfig ===

impl ListenerConfig {
    /// Checks the connection lifecycle settings.
    fn validate_lifecycle(&self, at: &str) -> Result<(), balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if self.preface_timeout_ms == 0 {
            return Err(E::new(
                format!("{at}.preface_timeout_ms"),
                "must be at least 1",
            ));
        }
        if self.tls_handshake_timeout_ms == 0 {
            return Err(E::new(
                format!("{at}.tls_handshake_timeout_ms"),
                "must be at least 1",
            ));
        }
        for (key, v) in [
            ("stream_window_bytes", self.stream_window_bytes),
            ("connection_window_bytes", self.connection_window_bytes),
        ] {
            if !(MIN_WINDOW_BYTES..=MAX_WINDOW_BYTES).contains(&v) {
                return Err(E::new(
                    format!("{at}.{key}"),
                    format!("must be between {MIN_WINDOW_BYTES} and {MAX_WINDOW_BYTES}"),
                ));
            }
        }
        if self.connection_window_bytes < self.stream_window_bytes {
            return Err(E::new(
                format!("{at}.connection_window_bytes"),
                "must be at least stream_window_bytes",
            ));
        }
        if self.premature_reset_total_stream_count > 0
            && self.premature_reset_min_stream_lifetime_ms == 0
        {
            return Err(E::new(
                format!("{at}.premature_reset_min_stream_lifetime_ms"),
                "must be at least 1 when premature_reset_total_stream_count is set",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_defaults() {
        let cfg = GatewayConfig::from_toml("[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n")
            .expect("valid");
        let l = &cfg.listeners[0];
        assert_eq!(l.preface_timeout_ms, DEFAULT_PREFACE_TIMEOUT_MS);
        assert_eq!(l.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
        assert_eq!(l.max_connection_age_ms, 0);
        assert_eq!(
            l.max_connection_age_grace_ms,
            DEFAULT_MAX_CONNECTION_AGE_GRACE_MS
        );
        assert_eq!(l.max_connections_per_ip, 0);
        assert!(l.shed_idle_when_full);
        assert_eq!(l.stream_window_bytes, 256 * 1024);
        assert_eq!(l.connection_window_bytes, 1024 * 1024);
        assert_eq!(l.premature_reset_min_stream_lifetime_ms, 1_000);
        assert_eq!(l.premature_reset_total_stream_count, 500);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "listeners: at least one listener is needed"),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\nbogus=1\n",
                "unknown field `bogus`",
            ),
            ("[[listeners]]\nname='a'\naddress='nope'\n", "address"),
            (
                "workers=1025\n[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n",
                "workers: at most 1024 (0 = one per core)",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[[clusters]]\nname='c'\nendpoints=[]\n",
                "clusters[0].endpoints: a cluster needs at least one endpoint",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[[clusters]]\nname='c'\nlb='fastest'\nendpoints=[{address='127.0.0.1:1'}]\n",
                "unknown variant `fastest`",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\npreface_timeout_ms=0\n",
                "listeners[0].preface_timeout_ms: must be at least 1",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\nstream_window_bytes=1024\n",
                "listeners[0].stream_window_bytes: must be between",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\nstream_window_bytes=1048576\nconnection_window_bytes=65535\n",
                "listeners[0].connection_window_bytes: must be at least stream_window_bytes",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[tracing]\nenabled=true\nsampling_ratio=1.5\n",
                "tracing.sampling_ratio: must be between 0.0 and 1.0",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[tracing]\nenabled=true\notlp_endpoint='localhost:4317'\n",
                "tracing.otlp_endpoint: `localhost:4317` is not an http:// or https:// URL with a host",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[tracing]\notlp_endpoint='http://127.0.0.1:4317'\n",
                "tracing.otlp_endpoint: set, but tracing.enabled is false",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n[tracing]\nenabled=true\nmax_queued_spans=0\n",
                "tracing.max_queued_spans: must be at least 1",
            ),
            (
                "[[listeners]]\nname='a'\naddress='127.0.0.1:0'\nreflection='both'\n",
                "unknown variant `both`",
            ),
        ];
        for (text, want) in cases {
            let err = GatewayConfig::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn reflection_modes() {
        for (line, want) in [
            ("", ReflectionMode::Merge),
            ("reflection = 'merge'", ReflectionMode::Merge),
            ("reflection = 'registry'", ReflectionMode::Registry),
            ("reflection = 'gateway'", ReflectionMode::Registry),
            ("reflection = 'passthrough'", ReflectionMode::Passthrough),
        ] {
            let text = format!("[[listeners]]\nname='a'\naddress='127.0.0.1:0'\n{line}\n");
            let cfg = GatewayConfig::from_toml(&text).expect("valid config");
            assert_eq!(cfg.listeners[0].reflection, want, "{line}");
        }
    }
}
