//! Active health checks (HAProxy `check`, with `inter`, `rise`, `fall`):
//! `grpc.health.v1.Health/Check` over the endpoint's own h2 connection, or
//! a plain TCP (+TLS) connect. State flips only after `rise` consecutive
//! successes or `fall` consecutive failures, and each flip is logged once.

use std::{sync::Arc, time::Duration};

use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    body,
    cluster::Cluster,
    config::{HealthCheckConfig, HealthCheckKind},
    endpoint::Endpoint,
    error::ErrorChain,
};

/// Largest health response body read.
const MAX_HEALTH_RESPONSE_BYTES: usize = 64 * 1024;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

/// Runs the checks of one endpoint until `shutdown`.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    ep: Arc<Endpoint>,
    cfg: HealthCheckConfig,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis(cfg.interval_ms);
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut successes = 0u32;
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            // Both branches are cancel-safe: dropping a check abandons it.
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(timeout, check(&cluster, &ep, &cfg)) => {
                r.unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
            }
        };
        ep.set_last_check(match &result {
            Ok(()) => "ok".to_string(),
            Err(why) => why.clone(),
        });
        match result {
            Ok(()) => {
                failures = 0;
                successes = successes.saturating_add(1);
                if !ep.is_healthy() && successes >= cfg.rise {
                    ep.set_healthy(true);
                    info!(cluster = %cluster.name(), endpoint = %ep.name, "Endpoint is UP (health check passed {successes} times)");
                }
            }
            Err(why) => {
                successes = 0;
                failures = failures.saturating_add(1);
                if ep.is_healthy() && failures >= cfg.fall {
                    ep.set_healthy(false);
                    warn!(cluster = %cluster.name(), endpoint = %ep.name, reason = %why, "Endpoint is DOWN (health check failed {failures} times)");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn check(cluster: &Cluster, ep: &Endpoint, cfg: &HealthCheckConfig) -> Result<(), String> {
    match cfg.kind {
        HealthCheckKind::Tcp => cluster
            .connector()
            .connect_io(ep.addr, &ep.host)
            .await
            .map(drop)
            .map_err(|e| ErrorChain(&e).to_string()),
        HealthCheckKind::Grpc => grpc_check(cluster, ep, &cfg.service).await,
    }
}

async fn grpc_check(cluster: &Cluster, ep: &Endpoint, service: &str) -> Result<(), String> {
    let (slot, _) = ep
        .pool()
        .get(cluster.connector(), ep.addr, &ep.host)
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    let msg = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    let frame = crate::grpc::frame::encode(&msg);
    let uri = format!(
        "{}://{}/grpc.health.v1.Health/Check",
        cluster.connector().scheme,
        ep.addr
    );
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(body::full(frame))
        .map_err(|e| e.to_string())?;
    let conn = slot.conn().clone();
    let resp = crate::h2conn::send(slot, req).await.map_err(|e| {
        ep.invalidate_conn(&conn);
        match e {
            crate::h2conn::SendError::NotSent(e) | crate::h2conn::SendError::Failed(e) => {
                ErrorChain(&e).to_string()
            }
            crate::h2conn::SendError::Body(e) => e.to_string(),
        }
    })?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let (parts, body) = resp.into_parts();
    let collected = Limited::new(body, MAX_HEALTH_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = crate::headers::grpc_status(&trailers)
        .or_else(|| crate::headers::grpc_status(&parts.headers));
    match status {
        Some(0) => {}
        Some(code) => return Err(format!("grpc-status {code}")),
        None => return Err("no grpc-status".into()),
    }
    let mut frames = crate::grpc::frame::FrameDecoder::new(MAX_HEALTH_RESPONSE_BYTES);
    frames.push(&collected.to_bytes());
    let data = frames
        .next_message()
        .map_err(|e| e.to_string())?
        .ok_or("empty health response")?;
    let resp = HealthCheckResponse::decode(data).map_err(|e| e.to_string())?;
    if resp.status == SERVING {
        Ok(())
    } else {
        Err(format!("serving status {}", resp.status))
    }
}
