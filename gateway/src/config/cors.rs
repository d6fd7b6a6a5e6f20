//! `[cors]`: CORS for HTTP callers.

use serde::Deserialize;

/// Default preflight cache time.
pub const DEFAULT_MAX_AGE_SECS: u64 = 600;

/// `[cors]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    /// Methods allowed in preflight answers.
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers allowed; `["*"]` echoes what the browser asks for.
    #[serde(default = "default_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers the page may read.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Preflight cache time.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// Allow cookies and credentials; refused with `*` origins (any site
    /// could then read answers made with the user's cookies).
    #[serde(default)]
    pub allow_credentials: bool,
}

pub(crate) fn default_methods() -> Vec<String> {
    ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}
pub(crate) fn default_headers() -> Vec<String> {
    vec!["*".into()]
}
fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECS
}
