//! `[limits]`: what bounds the memory and time a client can make the
//! gateway spend on request bodies it buffers. Everything buffered (JSON
//! bodies being collected, NDJSON lines being assembled, retry replay
//! copies) takes its bytes from one process-wide [`MemoryBudget`]; past it
//! a request is refused at once with RESOURCE_EXHAUSTED / 429. A buffered
//! body must also arrive within a total time and without long pauses.

use std::time::Duration;

pub(crate) use crate::config::limits::LimitsConfig;
use crate::linger::FrontBody;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

pub(crate) use balancer::budget::{MemoryBudget, Reservation};

use crate::error::GatewayError;

/// The compiled limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The process-wide buffered-bytes budget.
    pub budget: MemoryBudget,
    body_timeout: Duration,
    body_idle_timeout: Duration,
}

impl Limits {
    /// Compiles `[limits]`.
    pub fn new(cfg: &LimitsConfig) -> Result<Self, balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if cfg.max_buffered_request_bytes == 0 {
            return Err(E::new(
                "limits.max_buffered_request_bytes",
                "must be greater than 0",
            ));
        }
        if cfg.request_body_timeout_ms == 0 || cfg.request_body_idle_timeout_ms == 0 {
            return Err(E::new(
                "limits",
                "request_body_timeout_ms and request_body_idle_timeout_ms must be greater than 0",
            ));
        }
        Ok(Self {
            budget: MemoryBudget::new(cfg.max_buffered_request_bytes),
            body_timeout: Duration::from_millis(cfg.request_body_timeout_ms),
            body_idle_timeout: Duration::from_millis(cfg.request_body_idle_timeout_ms),
        })
    }

    /// Reads a whole request body of at most `max` bytes, taking its bytes
    /// from the budget as they arrive, within the body timeouts. The
    /// reservation holds them until dropped.
    pub(crate) async fn collect(
        &self,
        mut body: FrontBody,
        max: usize,
    ) -> Result<(Bytes, Reservation), GatewayError> {
        let mut held = self.budget.reserve_empty();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut len = 0usize;
        let total = tokio::time::sleep(self.body_timeout);
        tokio::pin!(total);
        loop {
            let frame = tokio::select! {
                _ = &mut total => return Err(GatewayError::BodyTimeout { stalled: false }),
                f = tokio::time::timeout(self.body_idle_timeout, body.frame()) => match f {
                    Err(_) => return Err(GatewayError::BodyTimeout { stalled: true }),
                    Ok(f) => f,
                },
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| GatewayError::BodyNotReceived)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            len += data.len();
            if len > max {
                return Err(too_large("request body", max));
            }
            if !held.grow(data.len()) {
                return Err(over_budget());
            }
            // One chunk (the common case) is kept without a copy.
            match &first {
                None if rest.is_empty() => first = Some(data),
                _ => {
                    if let Some(f) = first.take() {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&data);
                }
            }
        }
        let bytes = first.unwrap_or_else(|| rest.freeze());
        Ok((bytes, held))
    }
}

/// The answer when the buffered-bytes budget is spent.
pub(crate) fn over_budget() -> GatewayError {
    GatewayError::OverBudget
}

/// A body or message over its size limit: RESOURCE_EXHAUSTED, 413.
pub(crate) fn too_large(what: &'static str, max: usize) -> GatewayError {
    GatewayError::TooLarge { what, max }
}
