//! `[limits]`: the buffered-bytes budget and body read timeouts.

use serde::Deserialize;

pub use balancer::budget::DEFAULT_MAX_BUFFERED_REQUEST_BYTES;

/// Default time a buffered request body may take to arrive, in total.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_MS: u64 = 60_000;
/// Default longest pause between two chunks of a buffered request body.
pub const DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS: u64 = 15_000;

/// `[limits]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request bytes the whole process may hold in buffers.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_request_bytes: usize,
    /// Time a buffered (JSON unary) request body may take to arrive.
    #[serde(default = "default_body_timeout")]
    pub request_body_timeout_ms: u64,
    /// Longest pause between chunks of a buffered request body.
    #[serde(default = "default_body_idle_timeout")]
    pub request_body_idle_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_buffered_request_bytes: DEFAULT_MAX_BUFFERED_REQUEST_BYTES,
            request_body_timeout_ms: DEFAULT_REQUEST_BODY_TIMEOUT_MS,
            request_body_idle_timeout_ms: DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS,
        }
    }
}

fn default_max_buffered() -> usize {
    DEFAULT_MAX_BUFFERED_REQUEST_BYTES
}
fn default_body_timeout() -> u64 {
    DEFAULT_REQUEST_BODY_TIMEOUT_MS
}
fn default_body_idle_timeout() -> u64 {
    DEFAULT_REQUEST_BODY_IDLE_TIMEOUT_MS
}
