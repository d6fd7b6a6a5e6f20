//! `[transcoding]`: JSON transcoding settings, limits and header policy.

use descriptors::JsonOptions;
use serde::Deserialize;

/// Default largest JSON request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default largest protobuf message, both directions.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// `[transcoding]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodeConfig {
    /// JSON mapping options (`[transcoding.json]`).
    #[serde(default)]
    pub json: JsonOptions,
    /// Largest JSON request body (unary); larger -> 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest protobuf message either way (and NDJSON line); larger -> 413.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Deadline for calls whose request has no `grpc-timeout` header.
    #[serde(default)]
    pub default_timeout_ms: Option<u64>,
    /// Which request headers become metadata.
    #[serde(default)]
    pub forward_headers: HeaderPolicyConfig,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            json: JsonOptions::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            default_timeout_ms: None,
            forward_headers: Default::default(),
        }
    }
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// `[transcoding.forward_headers]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPolicyConfig {
    /// When not empty, only these request headers become metadata.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These request headers never become metadata.
    #[serde(default)]
    pub deny: Vec<String>,
}
