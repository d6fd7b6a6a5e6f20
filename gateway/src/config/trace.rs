//! `[tracing]`: W3C trace context for every request and OTLP span export.

use serde::Deserialize;

/// Default share of the traces the gateway starts that are sampled.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// Default `service.name` of the exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "gateway";
/// Default number of finished spans held for export; past it spans are
/// dropped (and counted), never waited for.
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 8_192;
/// Default number of spans per export call.
pub const DEFAULT_MAX_EXPORT_BATCH: usize = 512;
/// Default longest time a finished span waits for its batch.
pub const DEFAULT_EXPORT_DELAY_MS: u64 = 1_000;
/// Default time one export call may take.
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 10_000;

/// `[tracing]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Whether the gateway takes part in W3C trace context: it reads the
    /// client's `traceparent` (starting a trace when there is none or it
    /// is invalid), writes its own span as the parent to each upstream
    /// attempt, and logs the trace id. Off: the headers pass as they are.
    #[serde(default)]
    pub enabled: bool,
    /// OTLP/gRPC collector to export spans to (`http://host:4317`); none =
    /// no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of the traces the gateway starts that are sampled (0.0-1.0);
    /// a client's `traceparent` keeps its own sampled flag.
    #[serde(default = "default_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Finished spans held for export at most.
    #[serde(default = "default_max_queued")]
    pub max_queued_spans: usize,
    /// Spans per export call at most.
    #[serde(default = "default_max_batch")]
    pub max_export_batch: usize,
    /// Longest time a finished span waits for its batch.
    #[serde(default = "default_delay")]
    pub export_delay_ms: u64,
    /// Time one export call may take.
    #[serde(default = "default_timeout")]
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            otlp_endpoint: None,
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
            max_queued_spans: DEFAULT_MAX_QUEUED_SPANS,
            max_export_batch: DEFAULT_MAX_EXPORT_BATCH,
            export_delay_ms: DEFAULT_EXPORT_DELAY_MS,
            export_timeout_ms: DEFAULT_EXPORT_TIMEOUT_MS,
        }
    }
}

impl TracingConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(E::new(
                "tracing.sampling_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(ep) = &self.otlp_endpoint {
            match ep.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() => {}
                _ => {
                    return Err(E::new(
                        "tracing.otlp_endpoint",
                        format!("`{ep}` is not an http:// or https:// URL with a host"),
                    ));
                }
            }
            if !self.enabled {
                return Err(E::new(
                    "tracing.otlp_endpoint",
                    "set, but tracing.enabled is false",
                ));
            }
        }
        for (name, v) in [
            ("max_queued_spans", self.max_queued_spans),
            ("max_export_batch", self.max_export_batch),
            ("export_delay_ms", self.export_delay_ms as usize),
            ("export_timeout_ms", self.export_timeout_ms as usize),
        ] {
            if v == 0 {
                return Err(E::new(format!("tracing.{name}"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

fn default_ratio() -> f64 {
    DEFAULT_SAMPLING_RATIO
}
fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_string()
}
fn default_max_queued() -> usize {
    DEFAULT_MAX_QUEUED_SPANS
}
fn default_max_batch() -> usize {
    DEFAULT_MAX_EXPORT_BATCH
}
fn default_delay() -> u64 {
    DEFAULT_EXPORT_DELAY_MS
}
fn default_timeout() -> u64 {
    DEFAULT_EXPORT_TIMEOUT_MS
}
