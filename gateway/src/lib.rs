//! The gateway: listeners, classification, routing, the gRPC pass-through
//! path and the access log. `Gateway::start` runs one from a validated
//! configuration; `main.rs` only parses arguments and waits for a signal.

pub mod access_log;
mod adapter;
pub mod admin;
mod classify;
pub mod cli;
pub mod compile;
pub mod config;
mod conn;
mod cors;
#[cfg(feature = "demo")]
pub mod demo;
mod descriptor_sync;
mod edge;
pub mod error;
mod forward;
mod limits;
mod linger;
mod listener;
pub mod metrics;
mod proxy;
pub mod reflection;
mod resolve;
mod respond;
pub mod telemetry;
mod tls;
pub mod trace;
mod transcode;
mod workers;

/// The body of every downstream response.
pub use respond::ResponseBody;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use balancer::{Clusters, RouteTable};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::info;

use descriptors::Registry;

use crate::{
    access_log::AccessLog,
    config::{ConfigError, GatewayConfig},
    proxy::Shared,
};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A preloaded descriptor set could not be read or registered.
    #[error("cannot load descriptor set {path}: {reason}")]
    Preload {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The data directory could not be opened.
    #[error("cannot open data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The span exporter could not be built.
    #[error("tracing: {0}")]
    Tracing(String),
    /// The access log could not be opened.
    #[error("cannot open access log: {0}")]
    AccessLog(#[source] std::io::Error),
    /// A worker thread could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// A running gateway.
pub struct Gateway {
    registry: Arc<Registry>,
    metrics: Arc<metrics::Metrics>,
    admin_addr: Option<SocketAddr>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    accept_loops: JoinSet<()>,
    /// Stops the admin listener, after the front listeners drained.
    admin_stop: CancellationToken,
    admin_loop: JoinSet<()>,
    drain_timeout: Duration,
    /// The data-plane threads, stopped after the drain.
    workers: Arc<workers::Workers>,
}

impl Gateway {
    /// Validates `cfg`, binds every listener, starts health checks and the
    /// accept loops.
    pub async fn start(cfg: GatewayConfig) -> Result<Self, StartError> {
        Self::start_with_resolver(cfg, Arc::new(balancer::SystemResolver)).await
    }

    /// Like [`Gateway::start`], resolving server host names with `resolver`
    /// (tests decide what a name resolves to).
    pub async fn start_with_resolver(
        cfg: GatewayConfig,
        resolver: Arc<dyn balancer::Resolve>,
    ) -> Result<Self, StartError> {
        let compile::Compiled {
            cfg,
            routes,
            listeners: prepared,
            transcode,
            limits,
            cors,
            registry,
            admin_token,
            admin_tls,
        } = compile::compile(cfg).await?;
        // Before the clusters: their endpoints get a connection pool each.
        let workers = Arc::new(workers::Workers::start(cfg.workers).map_err(StartError::Workers)?);
        // Checked by `compile`; what is left can fail only on resolution.
        let clusters = Clusters::new(&cfg.clusters, resolver)
            .await
            .map_err(ConfigError::from)?;
        clusters.set_memory_budget(&limits.budget);
        let store = match &cfg.registry.data_dir {
            None => None,
            Some(dir) => {
                Some(
                    admin::store::Store::open(dir).map_err(|source| StartError::DataDir {
                        path: dir.clone(),
                        source,
                    })?,
                )
            }
        };
        if let Some(store) = &store {
            load_stored(&registry, store, &clusters, &routes).await;
        }
        let access_log = AccessLog::start(&cfg.access_log)
            .await
            .map_err(StartError::AccessLog)?;
        let spans = Arc::new(trace::ExportCounters::default());
        let metrics = metrics::Metrics::new(
            metrics::Sources {
                clusters: clusters.clone(),
                registry: registry.clone(),
                budget: limits.budget.clone(),
                access_log_dropped: access_log.dropped_counter(),
                spans: spans.clone(),
            },
            &cfg.routes,
        );
        let access_log = access_log.with_metrics(metrics.requests.clone());
        let shutdown = CancellationToken::new();
        // Stops last (after the drain), so spans of drained requests go out.
        let admin_stop = CancellationToken::new();
        let tracer = trace::Tracer::new(&cfg.tracing, spans, admin_stop.clone())
            .map_err(StartError::Tracing)?;
        let shared = Arc::new(Shared {
            routes,
            clusters,
            access_log,
            registry: registry.clone(),
            transcode,
            cors,
            limits,
            tracer,
        });
        let mut accept_loops = JoinSet::new();
        // A JoinSet, so the admin loop is aborted when the gateway is dropped.
        let mut admin_loop = JoinSet::new();
        let mut addrs = Vec::new();
        let mut admin_addr = None;
        if cfg.admin.enabled {
            let tcp = TcpListener::bind(cfg.admin.address)
                .await
                .map_err(|source| StartError::Bind {
                    addr: cfg.admin.address,
                    source,
                })?;
            let addr = tcp.local_addr().map_err(|source| StartError::Bind {
                addr: cfg.admin.address,
                source,
            })?;
            info!(%addr, token = admin_token.is_some(), tls = admin_tls.is_some(), "Admin API listening");
            admin_addr = Some(addr);
            let state = Arc::new(admin::AdminState {
                registry: registry.clone(),
                store,
                token: admin_token,
                clusters: shared.clusters.clone(),
                routes: shared.routes.clone(),
                max_upload: cfg.admin.max_upload_bytes,
                uploads: Arc::new(tokio::sync::Semaphore::new(
                    cfg.admin.max_concurrent_uploads,
                )),
                draining: shutdown.clone(),
                metrics: metrics.clone(),
            });
            let l = admin::AdminListener {
                tcp,
                tls: admin_tls,
                header_read_timeout: Duration::from_millis(cfg.admin.header_read_timeout_ms),
                max_connections: cfg.admin.max_connections,
            };
            admin_loop.spawn(admin::run(l, state, admin_stop.clone()));
        }
        let drain_timeout = Duration::from_millis(cfg.drain_timeout_ms);
        for compile::CompiledListener { cfg, tls, ctx } in prepared {
            let tcp = TcpListener::bind(cfg.address)
                .await
                .map_err(|source| StartError::Bind {
                    addr: cfg.address,
                    source,
                })?;
            let addr = tcp.local_addr().map_err(|source| StartError::Bind {
                addr: cfg.address,
                source,
            })?;
            info!(listener = %cfg.name, %addr, tls = tls.is_some(), "Listening");
            addrs.push((cfg.name.clone(), addr));
            let l = listener::Listener {
                metrics: metrics.listener(&cfg.name),
                tcp,
                tls,
                cfg,
                ctx,
            };
            accept_loops.spawn(listener::run(
                l,
                shared.clone(),
                workers.clone(),
                drain_timeout,
                shutdown.clone(),
            ));
        }
        shared.clusters.start_health_checks(&shutdown);
        descriptor_sync::spawn_pool_release(&registry, &shutdown);
        descriptor_sync::spawn(
            &registry,
            &shared.clusters,
            &shared.routes,
            &cfg.clusters,
            &shutdown,
            &metrics,
        );
        Ok(Self {
            registry,
            metrics,
            admin_addr,
            addrs,
            shutdown,
            accept_loops,
            admin_stop,
            admin_loop,
            drain_timeout,
            workers,
        })
    }

    /// The descriptor registry (shared with the request path).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The metrics `GET /metrics` reports.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// The admin API's bound address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound address of the listener named `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The bound address of the first listener.
    pub fn first_addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    /// Stops accepting, sends GOAWAY on every connection, and waits for
    /// in-flight requests up to the drain timeout. The admin API serves on
    /// meanwhile (`/healthz` answers 503 "draining") and stops last.
    pub async fn shutdown(mut self) {
        info!(timeout = ?self.drain_timeout, "Shutting down; draining connections");
        self.shutdown.cancel();
        while self.accept_loops.join_next().await.is_some() {}
        self.admin_stop.cancel();
        while self.admin_loop.join_next().await.is_some() {}
        // The accept loops held the other references.
        if let Ok(workers) = Arc::try_unwrap(self.workers) {
            workers.stop().await;
        }
    }

    /// Data-plane worker threads running.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

/// Registers the sets persisted in the data directory; a set that no longer
/// validates (or names a cluster that is gone) is logged and skipped.
async fn load_stored(
    registry: &Arc<Registry>,
    store: &admin::store::Store,
    clusters: &Clusters,
    routes: &RouteTable,
) {
    let registry = registry.clone();
    let store = store.clone();
    let routes = routes.clone();
    let known: std::collections::HashSet<String> =
        clusters.iter().map(|c| c.name().to_string()).collect();
    let _ = tokio::task::spawn_blocking(move || {
        for set in store.load_all() {
            let mut meta = descriptors::SetMeta {
                cluster: set.meta.cluster.clone(),
                uploaded_at_unix_ms: set.meta.uploaded_at_unix_ms,
            };
            if let Some(c) = &meta.cluster
                && !known.contains(c)
            {
                tracing::warn!(file = %set.path.display(), cluster = %c, "Stored descriptor set is bound to an unknown cluster; loading it unbound");
                meta.cluster = None;
            }
            // A binding that the routes now contradict (the config changed
            // since the upload) is dropped, not the set.
            let res = registry.put_with(&set.name, &set.bytes, meta.clone(), |info| {
                match &info.cluster {
                    Some(c) => proxy::check_binding(&routes, c, &info.methods).map_err(|message| {
                        descriptors::DescriptorError::Refused {
                            name: set.name.clone(),
                            message,
                        }
                    }),
                    None => Ok(()),
                }
            });
            let res = match res {
                Err(descriptors::DescriptorError::Refused { message, .. }) => {
                    tracing::warn!(file = %set.path.display(), %message, "Stored descriptor set's binding conflicts with the routes; loading it unbound");
                    meta.cluster = None;
                    registry.put_with(&set.name, &set.bytes, meta, |_| Ok(()))
                }
                other => other,
            };
            match res {
                Ok(o) => info!(set = %set.name, file = %set.path.display(), methods = o.set.methods.len(), "Stored descriptor set loaded"),
                Err(error) => tracing::warn!(file = %set.path.display(), %error, "Skipping stored descriptor set that no longer loads (left in place)"),
            }
        }
    })
    .await;
}
