//! `descriptors_from_reflection = true` clusters: the gateway fetches the
//! servers' descriptors by gRPC reflection at start and on an interval, and
//! registers them like an upload, as the set named after the cluster and
//! bound to it, so a reflection-enabled backend needs no upload at all.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use balancer::{ClusterConfig, Clusters, RouteTable};
use descriptors::{Registry, SetMeta};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::{debug, info, warn};

use crate::{
    metrics::{Metrics, ReflectionSyncs},
    reflection::fetch_descriptor_set,
};

/// Time one fetch may take (connect included).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay after a failed fetch (before the next regular interval).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Starts one sync task per cluster that asks for it; each sync is
/// counted in `metrics` by result.
pub(crate) fn spawn(
    registry: &Arc<Registry>,
    clusters: &Clusters,
    routes: &RouteTable,
    configs: &[ClusterConfig],
    shutdown: &CancellationToken,
    metrics: &Metrics,
) {
    for cfg in configs.iter().filter(|c| c.descriptors_from_reflection) {
        let Some(cluster) = clusters.get(&cfg.name) else {
            continue;
        };
        let addrs: Vec<(std::net::SocketAddr, String)> = cluster
            .endpoints()
            .iter()
            .map(|e| (e.addr, e.host.clone()))
            .collect();
        tokio::spawn(run(
            registry.clone(),
            routes.clone(),
            cfg.clone(),
            addrs,
            shutdown.child_token(),
            metrics.reflection_syncs(cfg.name.as_str()),
        ));
    }
}

async fn run(
    registry: Arc<Registry>,
    routes: RouteTable,
    cfg: ClusterConfig,
    addrs: Vec<(std::net::SocketAddr, String)>,
    shutdown: CancellationToken,
    counts: Arc<ReflectionSyncs>,
) {
    let name = cfg.name.to_string();
    let interval = Duration::from_millis(cfg.reflection_interval_ms.max(100));
    loop {
        let mut synced = false;
        for (addr, host) in &addrs {
            match fetch(&cfg, *addr, host).await {
                Ok(bytes) => {
                    synced = true;
                    let snapshot = registry.snapshot();
                    if snapshot.set_bytes(&name) == Some(bytes.as_slice()) {
                        counts.unchanged.fetch_add(1, Relaxed);
                        debug!(cluster = %name, "Reflected descriptors unchanged");
                        break;
                    }
                    let registry = registry.clone();
                    let routes = routes.clone();
                    let set = name.clone();
                    let res = tokio::task::spawn_blocking(move || {
                        let meta = SetMeta {
                            cluster: Some(set.clone()),
                            uploaded_at_unix_ms: 0,
                        };
                        // A reflection-fed set may not claim methods that
                        // the routes send to another cluster.
                        registry.put_with(&set, &bytes, meta, |info| {
                            crate::proxy::check_binding(&routes, &set, &info.methods).map_err(
                                |message| descriptors::DescriptorError::Refused {
                                    name: set.clone(),
                                    message,
                                },
                            )
                        })
                    })
                    .await;
                    match res {
                        Ok(Ok(o)) => {
                            counts.registered.fetch_add(1, Relaxed);
                            info!(cluster = %name, endpoint = %addr, version = o.set.version, services = o.set.services.len(), "Descriptors registered from reflection")
                        }
                        Ok(Err(error)) => {
                            counts.refused.fetch_add(1, Relaxed);
                            warn!(cluster = %name, endpoint = %addr, %error, "Reflected descriptors refused")
                        }
                        Err(error) => {
                            counts.failed.fetch_add(1, Relaxed);
                            warn!(cluster = %name, %error, "Reflection sync task failed")
                        }
                    }
                    break;
                }
                Err(reason) => {
                    warn!(cluster = %name, endpoint = %addr, %reason, "Reflection fetch failed")
                }
            }
        }
        let wait = if synced {
            interval
        } else {
            counts.failed.fetch_add(1, Relaxed);
            RETRY_AFTER.min(interval)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn fetch(
    cfg: &ClusterConfig,
    addr: std::net::SocketAddr,
    host: &str,
) -> Result<Vec<u8>, String> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    if let Some(tls) = &cfg.tls {
        let Some(ca_file) = &tls.ca_file else {
            return Err("reflection over TLS needs tls.ca_file (insecure_skip_verify is not supported here)".into());
        };
        let pem = tokio::fs::read(ca_file).await.map_err(|e| e.to_string())?;
        let domain = tls.server_name.clone().unwrap_or_else(|| host.to_string());
        let mut tls_config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(domain);
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let cert = tokio::fs::read(cert).await.map_err(|e| e.to_string())?;
            let key = tokio::fs::read(key).await.map_err(|e| e.to_string())?;
            tls_config = tls_config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(tls_config).map_err(|e| e.to_string())?;
    }
    let fetch = async {
        let channel = ep.connect().await.map_err(|e| e.to_string())?;
        fetch_descriptor_set(channel)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))?
}

/// How long the registry's prost-reflect pool stays built after its last
/// use (reflection, proto2 groups/extensions, an `Any` the codec leaves
/// to prost-reflect): most of the
/// registry's memory, and rebuilt in about 40 ms per 1,000 methods.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(30);

/// Drops the registry's descriptor pool once idle for [`POOL_IDLE`],
/// checked every few seconds until `shutdown`.
pub(crate) fn spawn_pool_release(registry: &Arc<Registry>, shutdown: &CancellationToken) {
    let registry = registry.clone();
    let shutdown = shutdown.child_token();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POOL_IDLE / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if registry.release_idle_pool(POOL_IDLE) {
                        debug!("Descriptor pool dropped after {} s unused", POOL_IDLE.as_secs());
                    }
                }
            }
        }
    });
}
