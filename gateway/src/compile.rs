//! One compile step from a parsed [`GatewayConfig`] to everything the
//! gateway runs on, short of binding sockets, resolving host names and
//! starting tasks. `gateway check` runs exactly this, and
//! [`crate::Gateway::start`] starts from its result, so a config that
//! passes the check fails at start only for what needs the network or
//! the disk beyond reading files (DNS, binding, the data directory, the
//! access log file).

use std::sync::Arc;

use balancer::{ClusterName, Clusters, RouteTable, route::compile_headers};
use descriptors::Registry;
use tracing::info;

use crate::{
    StartError,
    access_log::capture_list,
    config::{ConfigError, GatewayConfig, ListenerConfig},
    cors::Cors,
    proxy::ListenerCtx,
    tls,
    transcode::TranscodeSettings,
};

/// A front listener, compiled: its TLS acceptor and request policy.
pub struct CompiledListener {
    /// Its settings.
    pub cfg: ListenerConfig,
    /// TLS acceptor, when the listener serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Request policy (deny rules, captures).
    pub ctx: Arc<ListenerCtx>,
}

/// Everything checked and built from a config, ready to start.
pub struct Compiled {
    /// The config it came from.
    pub cfg: GatewayConfig,
    /// The route table (every route's cluster exists in `cfg.clusters`).
    pub routes: RouteTable,
    /// The front listeners.
    pub listeners: Vec<CompiledListener>,
    /// JSON transcoding settings.
    pub transcode: TranscodeSettings,
    /// Buffered-bytes budget and body read timeouts.
    pub limits: crate::limits::Limits,
    /// CORS policy, when configured.
    pub cors: Option<Cors>,
    /// The registry with the preloaded descriptor sets.
    pub registry: Arc<Registry>,
    /// The admin token in effect (config or environment).
    pub admin_token: Option<String>,
    /// The admin listener's TLS acceptor, when `[admin] tls` is set.
    pub admin_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Checks and builds `cfg`, in the order errors are reported: the file's
/// values, clusters (values, TLS files, address syntax), routes, listeners
/// (TLS files, deny rules), transcoding, CORS, admin rules and TLS, then
/// the preloaded descriptor sets.
pub async fn compile(cfg: GatewayConfig) -> Result<Compiled, StartError> {
    cfg.validate().map_err(ConfigError::from)?;
    Clusters::check(&cfg.clusters).map_err(ConfigError::from)?;
    let names: std::collections::HashSet<&ClusterName> =
        cfg.clusters.iter().map(|c| &c.name).collect();
    let routes =
        RouteTable::compile(&cfg.routes, |c| names.contains(c)).map_err(ConfigError::from)?;
    let mut listeners = Vec::with_capacity(cfg.listeners.len());
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
                crate::edge::IpNet::parse(t).ok_or_else(|| {
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
        listeners.push(CompiledListener {
            cfg: l.clone(),
            tls,
            ctx,
        });
    }
    let transcode = TranscodeSettings::new(&cfg.transcoding).map_err(ConfigError::from)?;
    let limits = crate::limits::Limits::new(&cfg.limits).map_err(ConfigError::from)?;
    let cors = cfg
        .cors
        .as_ref()
        .map(Cors::new)
        .transpose()
        .map_err(ConfigError::from)?;
    let admin_token = cfg.admin.effective_token();
    cfg.admin
        .validate(admin_token.as_deref())
        .map_err(ConfigError::from)?;
    let admin_tls = if cfg.admin.enabled {
        cfg.admin.tls_acceptor().map_err(ConfigError::from)?
    } else {
        None
    };
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
    Ok(Compiled {
        cfg,
        routes,
        listeners,
        transcode,
        limits,
        cors,
        registry,
        admin_token,
        admin_tls,
    })
}

/// What `gateway check` runs: [`compile`], dropping the result.
pub async fn check(cfg: GatewayConfig) -> Result<(), StartError> {
    compile(cfg).await.map(drop)
}
