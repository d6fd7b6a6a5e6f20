//! The gateway: listeners, classification, routing, the gRPC pass-through
//! path and the access log. `Gateway::start` runs one from a validated
//! configuration; `main.rs` only parses arguments and waits for a signal.

pub mod access_log;
pub mod admin;
pub mod classify;
pub mod cli;
pub mod config;
pub mod cors;
pub mod demo;
pub mod descriptor_sync;
pub mod edge;
pub mod grpc_frame;
pub mod grpc_timeout;
pub mod limits;
pub mod listener;
pub mod proxy;
pub mod reflection;
pub mod respond;
pub mod telemetry;
pub mod tls;
pub mod transcode;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use balancer::{Clusters, RouteTable, route::compile_headers};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::info;

use descriptors::Registry;

use crate::{
    access_log::{AccessLog, capture_list},
    config::{ConfigError, GatewayConfig},
    cors::Cors,
    proxy::{ListenerCtx, Shared},
    transcode::TranscodeSettings,
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
    /// The access log could not be opened.
    #[error("cannot open access log: {0}")]
    AccessLog(#[source] std::io::Error),
}

/// A running gateway.
pub struct Gateway {
    registry: Arc<Registry>,
    admin_addr: Option<SocketAddr>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    accept_loops: JoinSet<()>,
    drain_timeout: Duration,
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
        cfg.validate().map_err(ConfigError::from)?;
        let clusters = Clusters::new(&cfg.clusters, resolver)
            .await
            .map_err(ConfigError::from)?;
        let routes = RouteTable::compile(&cfg.routes, |c| clusters.contains(c))
            .map_err(ConfigError::from)?;
        let mut prepared = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            let tls = match &l.tls {
                Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                    tls::server_config(t, &at).map_err(ConfigError::from)?,
                )),
                None => None,
            };
            let trusted_proxies = l
                .trusted_proxies
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    edge::IpNet::parse(t).ok_or_else(|| {
                        ConfigError::from(balancer::config::ConfigError::new(
                            format!("{at}.trusted_proxies[{k}]"),
                            format!("`{t}` is not an address or CIDR block"),
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ctx = Arc::new(ListenerCtx {
                tls: l.tls.is_some(),
                trusted_proxies,
                merge_slashes: l.merge_slashes,
                escaped_slashes: l.escaped_slashes,
                name: l.name.as_str().into(),
                deny_unless: compile_headers(&l.deny_unless, &format!("{at}.deny_unless"))
                    .map_err(ConfigError::from)?,
                capture_request: capture_list(&l.capture_request_headers),
                capture_response: capture_list(&l.capture_response_headers),
                log_at_start: l.log_at_start,
                reflection: l.reflection,
            });
            prepared.push((l.clone(), tls, ctx));
        }
        let transcode = TranscodeSettings::new(&cfg.transcoding).map_err(ConfigError::from)?;
        let limits = limits::Limits::new(&cfg.limits).map_err(ConfigError::from)?;
        clusters.set_memory_budget(&limits.budget);
        let cors = cfg
            .cors
            .as_ref()
            .map(Cors::new)
            .transpose()
            .map_err(ConfigError::from)?;
        let registry = Arc::new(Registry::new());
        for path in &cfg.registry.preload {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| StartError::Preload {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("preload")
                .to_string();
            let outcome = registry
                .put(&name, &bytes)
                .map_err(|e| StartError::Preload {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            info!(set = %name, services = outcome.set.services.len(), methods = outcome.set.methods.len(), "Descriptor set loaded");
        }
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
        let admin_token = cfg.admin.effective_token();
        cfg.admin
            .validate(admin_token.as_deref())
            .map_err(ConfigError::from)?;
        let access_log = AccessLog::start(&cfg.access_log)
            .await
            .map_err(StartError::AccessLog)?;
        let shared = Arc::new(Shared {
            routes,
            clusters,
            access_log,
            registry: registry.clone(),
            transcode,
            cors,
            limits,
        });
        let shutdown = CancellationToken::new();
        let mut accept_loops = JoinSet::new();
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
            info!(%addr, token = admin_token.is_some(), "Admin API listening");
            admin_addr = Some(addr);
            let state = Arc::new(admin::AdminState {
                registry: registry.clone(),
                store,
                token: admin_token,
                clusters: shared.clusters.clone(),
                routes: shared.routes.clone(),
                max_upload: cfg.admin.max_upload_bytes,
            });
            accept_loops.spawn(admin::run(tcp, state, shutdown.clone()));
        }
        let drain_timeout = Duration::from_millis(cfg.drain_timeout_ms);
        for (cfg, tls, ctx) in prepared {
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
            let l = listener::Listener { tcp, tls, cfg, ctx };
            accept_loops.spawn(listener::run(
                l,
                shared.clone(),
                drain_timeout,
                shutdown.clone(),
            ));
        }
        shared.clusters.start_health_checks(&shutdown);
        descriptor_sync::spawn(
            &registry,
            &shared.clusters,
            &shared.routes,
            &cfg.clusters,
            &shutdown,
        );
        Ok(Self {
            registry,
            admin_addr,
            addrs,
            shutdown,
            accept_loops,
            drain_timeout,
        })
    }

    /// The descriptor registry (shared with the request path).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
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
    /// in-flight requests up to the drain timeout.
    pub async fn shutdown(mut self) {
        info!(timeout = ?self.drain_timeout, "Shutting down; draining connections");
        self.shutdown.cancel();
        while self.accept_loops.join_next().await.is_some() {}
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
