//! `[admin]`: the admin listener.

use std::net::SocketAddr;

use serde::Deserialize;

/// Default admin address.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";
/// Default largest upload.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Environment variable holding the admin token.
pub const TOKEN_ENV: &str = "GATEWAY_ADMIN_TOKEN";
/// Default time to receive an admin request head (HTTP/1.1), in ms, and
/// the longest a connection stays with no request in progress.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default cap on concurrent admin connections; beyond it the admin
/// listener stops accepting until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default cap on uploads (`PUT`) read and compiled at once; the excess is
/// answered 429 at once.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 2;
/// `[admin]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where; a non-loopback address requires a token.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Bearer token for mutating calls; `GATEWAY_ADMIN_TOKEN` overrides.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest upload body.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
    /// Serve the admin API over TLS with this certificate (the listeners'
    /// `{ cert_file, key_file }`); none = cleartext.
    #[serde(default)]
    pub tls: Option<crate::config::ListenerTlsConfig>,
    /// Time to receive an HTTP/1.1 request head, in ms; also how long a
    /// connection may stay open with no request in progress.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Concurrent admin connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Uploads in progress at once; more are answered 429.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: default_address(),
            token: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            tls: None,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_max_upload() -> usize {
    DEFAULT_MAX_UPLOAD_BYTES
}
fn default_header_read_timeout_ms() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_MS
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_concurrent_uploads() -> usize {
    DEFAULT_MAX_CONCURRENT_UPLOADS
}

impl AdminConfig {
    /// The effective token: the environment variable, else the config's.
    pub fn effective_token(&self) -> Option<String> {
        std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.token.clone().filter(|t| !t.is_empty()))
    }

    /// Refuses a non-loopback address without a token, and limits of 0.
    pub fn validate(&self, token: Option<&str>) -> Result<(), balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if self.enabled && !self.address.ip().is_loopback() && token.is_none() {
            return Err(E::new(
                "admin.address",
                format!(
                    "{} is not a loopback address: set admin.token or {TOKEN_ENV} to expose the admin API",
                    self.address
                ),
            ));
        }
        for (field, value) in [
            ("max_upload_bytes", self.max_upload_bytes as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_concurrent_uploads", self.max_concurrent_uploads as u64),
        ] {
            if value == 0 {
                return Err(E::new(format!("admin.{field}"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The TLS acceptor of `[admin] tls`, when set; errors name the file.
    pub fn tls_acceptor(
        &self,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, balancer::config::ConfigError> {
        self.tls
            .as_ref()
            .map(|t| crate::tls::server_config(t, "admin").map(tokio_rustls::TlsAcceptor::from))
            .transpose()
    }
}
