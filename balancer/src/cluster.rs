//! Clusters: a named group of endpoints with a pick policy ([`Cluster`]),
//! its membership (an [`EndpointSet`] snapshot, swapped whole when DNS
//! re-resolution changes the servers, STYLE H3), its background work
//! (health checks, re-resolution), and the send path: [`Cluster::send`],
//! a loop over attempts (see `attempt`) that the retry policy drives.
//! The registry of all clusters is [`Clusters`].
//!
//! What each concern lives in: admission in `queue`, [`Lease`] in `lease`, the
//! retry decision and budget in `retry`, outlier detection in `outlier`,
//! resolution in `dns`, errors in `error`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use arc_swap::ArcSwap;
use http::{Request, Response};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

// The paths these had before the split, kept for callers.
use crate::{
    body::{UpstreamBody, UpstreamIncoming},
    budget::MemoryBudget,
    config::{
        ClusterConfig, ClusterName, ConfigError, HealthCheckConfig, LbPolicy, UpstreamProtocol,
    },
    dns::{self, Target},
    endpoint::Endpoint,
    error::BalancerError,
    health,
    observe::{AttemptOutcome, Observer},
    outlier::{Outcome, OutlierDetector},
    pick::{Pick, Picker},
    queue::Queue,
    replay::ReplayBody,
    retry::{Progress, RetryBudget, RetryPolicy, RetryReason},
    upstream::Connector,
};
pub use crate::{
    dns::{Resolve, SystemResolver},
    error::ErrorChain,
    lease::Lease,
};

mod attempt;

use attempt::{Attempt, trailers_only_status};

/// A cluster of endpoints.
pub struct Cluster {
    name: ClusterName,
    protocol: UpstreamProtocol,
    policy: LbPolicy,
    /// The endpoints now; the request path only loads it.
    set: ArcSwap<EndpointSet>,
    /// The servers as configured, re-resolved when given by name.
    targets: Vec<Target>,
    dns_refresh: Duration,
    /// Cancels the background work (set by `start`).
    background: Mutex<Option<CancellationToken>>,
    connector: Connector,
    hash_header: Option<http::HeaderName>,
    outlier: Option<OutlierDetector>,
    queue: Queue,
    retry: RetryPolicy,
    retries: RetryBudget,
    /// Where retry replay copies take their bytes from (set once by the
    /// gateway; none = only the per-request `max_buffered_bytes` bound).
    budget: OnceLock<MemoryBudget>,
    health_check: Option<HealthCheckConfig>,
}

/// The endpoints of a cluster at one moment, with their pick policy; swapped
/// whole when DNS re-resolution changes the servers.
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    picker: Picker,
}

/// Where the time before the response went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Waiting for a free slot (HAProxy `Tw`).
    pub queue: Duration,
    /// Opening a connection, when one was opened (HAProxy `Tc`).
    pub connect: Option<Duration>,
    /// From sending the request to the response head (HAProxy `Tr`).
    pub response: Duration,
}

/// A response head from an endpoint, with its stream's slot.
pub struct UpstreamResponse {
    /// The response; its body streams from the endpoint.
    pub response: Response<UpstreamIncoming>,
    /// The slot; drop it when the body is done, after reporting the
    /// outcome ([`Lease::record`]).
    pub lease: Lease,
    /// Time spent per phase.
    pub timings: Timings,
    /// Attempts made (1 = no failover).
    pub attempts: u32,
}

/// All clusters, by name.
#[derive(Clone, Default)]
pub struct Clusters {
    resolver: Option<Arc<dyn Resolve>>,
    by_name: HashMap<ClusterName, Arc<Cluster>>,
    order: Vec<Arc<Cluster>>,
}

/// Checks `cfg` as [`Cluster::new`] does, without resolving host names:
/// values, TLS files, address syntax.
pub fn check_cluster(cfg: &ClusterConfig, at: &str) -> Result<(), ConfigError> {
    cfg.validate(at)?;
    Connector::new(cfg, at)?;
    Target::parse_all(&cfg.endpoints, at)?;
    Ok(())
}

// === impl Cluster ===

impl Cluster {
    /// Builds a cluster from validated config; `at` is its field path.
    pub async fn new(
        cfg: &ClusterConfig,
        at: &str,
        resolver: &Arc<dyn Resolve>,
    ) -> Result<Self, ConfigError> {
        cfg.validate(at)?;
        let connector = Connector::new(cfg, at)?;
        let targets = Target::parse_all(&cfg.endpoints, at)?;
        let mut endpoints = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let field = || format!("{at}.endpoints[{i}].address");
            let addrs = t.resolve(resolver).await.map_err(|e| {
                ConfigError::new(field(), format!("cannot resolve `{}`: {e}", t.address()))
            })?;
            if addrs.is_empty() {
                return Err(ConfigError::new(
                    field(),
                    format!("`{}` resolves to nothing", t.address()),
                ));
            }
            endpoints.extend(addrs.into_iter().map(|addr| Arc::new(t.endpoint(addr))));
        }
        Ok(Self {
            name: cfg.name.clone(),
            protocol: cfg.protocol,
            policy: cfg.lb,
            set: ArcSwap::from_pointee(EndpointSet::new(cfg.lb, endpoints)),
            targets,
            dns_refresh: Duration::from_millis(cfg.dns_refresh_ms.max(10)),
            background: Mutex::new(None),
            connector,
            hash_header: cfg
                .hash_header
                .as_deref()
                .and_then(|h| http::HeaderName::try_from(h).ok()),
            outlier: cfg.outlier_detection.as_ref().map(OutlierDetector::new),
            queue: Queue::new(
                Some(cfg.effective_requests_per_endpoint()),
                cfg.max_queue,
                Duration::from_millis(cfg.queue_timeout_ms),
            ),
            retry: RetryPolicy::new(cfg.retry.as_ref(), cfg.max_connect_attempts),
            retries: RetryBudget::default(),
            budget: OnceLock::new(),
            health_check: cfg.health_check.clone(),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &ClusterName {
        &self.name
    }

    /// What the endpoints speak.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The pick policy.
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// The endpoints now (a snapshot), in configuration order.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queue.waiting()
    }

    /// Retries made since start (another attempt after a failed one).
    pub fn retries_total(&self) -> u64 {
        self.retries.retries()
    }

    /// Retries the retry budget refused since start.
    pub fn retry_budget_exhausted_total(&self) -> u64 {
        self.retries.exhausted()
    }

    /// How long requests waited for a slot (admission), so far.
    pub fn queue_wait(&self) -> crate::stats::HistogramSnapshot {
        self.queue.wait_histogram()
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }

    pub(crate) fn dns_refresh(&self) -> Duration {
        self.dns_refresh
    }

    /// Counts how an exchange with `ep` ended for outlier detection (a
    /// no-op without it).
    pub(crate) fn record_outcome(&self, ep: &Arc<Endpoint>, outcome: Outcome) {
        let Some(o) = &self.outlier else { return };
        o.record(&self.name, &self.set.load(), ep, o.is_failure(outcome));
    }

    /// Sends `req` to an endpoint and waits for the response head, one
    /// attempt after another while the retry policy allows: a request that
    /// never reached an endpoint (connect refused or timed out, connection
    /// closed before sending) up to `max_connect_attempts`; one the server
    /// did not process (REFUSED_STREAM) or answered trailers-only with a
    /// listed status, within `retry` and its budget, when the body was
    /// kept. The request's URI gets the endpoint's scheme; its authority
    /// is kept, or set to the endpoint's address.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<UpstreamResponse, BalancerError> {
        let _active = self.retries.active();
        let (mut parts, body) = req.into_parts();
        let observer = parts.extensions.remove::<Observer>();
        let key = self
            .hash_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .map(|v| bytes::Bytes::copy_from_slice(v.as_bytes()));
        let (first, replay) = ReplayBody::new(body, self.retry.buffer, self.budget.get());
        let mut body = Some(first);
        let mut tried: Vec<usize> = Vec::new();
        let mut timings = Timings::default();
        // A retry after request bytes went out holds a budget slot.
        let mut _retrying = None;
        // One endpoint snapshot for all attempts, so `tried` stays valid.
        let set = self.set.load_full();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let begun = std::time::Instant::now();
            let step = self
                .attempt(
                    &set,
                    &tried,
                    key.as_deref(),
                    &parts,
                    &mut body,
                    &mut timings,
                    observer.as_ref().map(|o| (o, attempt, begun)),
                )
                .await;
            // What to hand back if this attempt is not retried, and why it
            // might be.
            let (ended, reason, index) = match step {
                Attempt::Done {
                    response,
                    lease,
                    index,
                } => {
                    let status = trailers_only_status(&response);
                    let up = UpstreamResponse {
                        response,
                        lease,
                        timings,
                        attempts: attempt,
                    };
                    match status {
                        Some(code) => (Ok(up), RetryReason::Status(code), index),
                        None => return Ok(up),
                    }
                }
                Attempt::Retry {
                    reason,
                    index,
                    error,
                } => (Err(error), reason, index),
                Attempt::Fail(error) => return Err(error),
            };
            let progress = Progress {
                attempt,
                others_untried: tried.len() + 1 < set.len(),
                request_complete: replay.is_complete(),
            };
            if !self
                .retry
                .allows(reason, progress, || self.retries.allows(&self.retry))
            {
                return ended;
            }
            if reason.replays_body() {
                // The copy may have been given up (over the buffer or the
                // memory budget): then this attempt's result stands.
                match replay.replay() {
                    Some(again) => body = Some(again),
                    None => return ended,
                }
            }
            if let Some(o) = &observer {
                let outcome = match &ended {
                    // Only a trailers-only answer with a status is retried.
                    Ok(up) => AttemptOutcome::Status(
                        crate::headers::grpc_status(up.response.headers()).unwrap_or(2),
                    ),
                    Err(error) => AttemptOutcome::Error(error),
                };
                o.0.ended(attempt, begun, outcome);
            }
            let endpoint = &set[index].name;
            match &ended {
                // The answer is discarded: a failed exchange.
                Ok(up) => {
                    up.lease.record(Outcome::Failed);
                    debug!(cluster = %self.name, %endpoint, ?reason, "Retrying on another endpoint (status in retry list)");
                }
                Err(error) => {
                    debug!(cluster = %self.name, %endpoint, ?reason, error = %ErrorChain(error), "Retrying")
                }
            }
            if reason.skips_endpoint() {
                tried.push(index);
                if tried.len() >= set.len() {
                    tried.clear();
                }
            }
            if reason.spends_budget() {
                _retrying.get_or_insert_with(|| self.retries.retrying());
            }
            self.retries.record_retry();
        }
    }

    /// Starts the background work of this cluster: health checks for each
    /// endpoint, and DNS re-resolution when a server is given by name.
    fn start(self: &Arc<Self>, shutdown: &CancellationToken, resolver: &Arc<dyn Resolve>) {
        if let Ok(mut bg) = self.background.lock() {
            *bg = Some(shutdown.clone());
        }
        for ep in self.set.load().endpoints.iter() {
            self.start_endpoint(ep);
        }
        if self.targets.iter().any(Target::is_named) {
            tokio::spawn(dns::refresh_loop(
                self.clone(),
                resolver.clone(),
                shutdown.child_token(),
            ));
        }
    }

    fn start_endpoint(self: &Arc<Self>, ep: &Arc<Endpoint>) {
        let Some(hc) = &self.health_check else { return };
        let Ok(bg) = self.background.lock() else {
            return;
        };
        let Some(shutdown) = bg.as_ref() else { return };
        let token = shutdown.child_token();
        ep.set_stop(token.clone());
        tokio::spawn(health::run(self.clone(), ep.clone(), hc.clone(), token));
    }

    /// Re-resolves every named server and swaps the endpoint set when it
    /// changed: endpoints that appeared are added (health checks start),
    /// vanished ones leave the rotation and drain (their in-flight streams
    /// keep the connection until they end).
    pub(crate) async fn refresh(self: &Arc<Self>, resolver: &Arc<dyn Resolve>) {
        let current = self.set.load_full();
        let next = dns::resolve_all(&self.name, &self.targets, &current, resolver).await;
        let added: Vec<_> = next
            .iter()
            .filter(|e| !current.iter().any(|c| Arc::ptr_eq(c, e)))
            .cloned()
            .collect();
        let removed: Vec<_> = current
            .iter()
            .filter(|c| !next.iter().any(|e| Arc::ptr_eq(c, e)))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return;
        }
        info!(
            cluster = %self.name,
            added = ?added.iter().map(|e| &*e.name).collect::<Vec<_>>(),
            removed = ?removed.iter().map(|e| &*e.name).collect::<Vec<_>>(),
            "Servers changed (DNS)"
        );
        self.set
            .store(Arc::new(EndpointSet::new(self.policy, next)));
        for ep in &added {
            self.start_endpoint(ep);
        }
        for ep in &removed {
            // Out of rotation; in-flight streams finish on the connection.
            ep.retire();
        }
    }
}

// === impl EndpointSet ===

impl EndpointSet {
    pub(crate) fn new(policy: LbPolicy, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let keys: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
        Self {
            picker: Picker::new(policy, &weights, &keys),
            endpoints,
        }
    }

    /// Picks an eligible endpoint not in `skip`, taking one of its slots
    /// under `limit`.
    pub(crate) fn pick(&self, limit: Option<u32>, skip: &[usize], key: Option<&[u8]>) -> Pick {
        self.picker.pick(&self.endpoints, limit, skip, key)
    }
}

impl std::ops::Deref for EndpointSet {
    type Target = [Arc<Endpoint>];
    fn deref(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

// === impl Clusters ===

impl Clusters {
    /// Makes every cluster's retry replay copies take their bytes from
    /// `budget` (the process-wide buffered-bytes budget).
    pub fn set_memory_budget(&self, budget: &MemoryBudget) {
        for c in self.by_name.values() {
            let _ = c.budget.set(budget.clone());
        }
    }

    /// Checks every cluster as [`Clusters::new`] does, without resolving
    /// host names (the `gateway check` half of the build).
    pub fn check(configs: &[ClusterConfig]) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, cfg) in configs.iter().enumerate() {
            let at = format!("clusters[{i}]");
            if !names.insert(&cfg.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate cluster `{}`", cfg.name),
                ));
            }
            check_cluster(cfg, &at)?;
        }
        Ok(())
    }

    /// Builds every cluster; names must be unique.
    pub async fn new(
        configs: &[ClusterConfig],
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, ConfigError> {
        let mut out = Self {
            resolver: Some(resolver.clone()),
            ..Self::default()
        };
        for (i, cfg) in configs.iter().enumerate() {
            let at = format!("clusters[{i}]");
            if out.by_name.contains_key(&cfg.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate cluster `{}`", cfg.name),
                ));
            }
            let c = Arc::new(Cluster::new(cfg, &at, &resolver).await?);
            out.by_name.insert(cfg.name.clone(), c.clone());
            out.order.push(c);
        }
        Ok(out)
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &ClusterName) -> Option<&Arc<Cluster>> {
        self.by_name.get(name)
    }

    /// The cluster named `name`, by string.
    pub fn get_str(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.by_name.get(name)
    }

    /// Whether a cluster of that name exists.
    pub fn contains(&self, name: &ClusterName) -> bool {
        self.by_name.contains_key(name)
    }

    /// All clusters in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.order.iter()
    }

    /// Starts every cluster's background work (health checks, DNS
    /// re-resolution); it stops when `shutdown` is cancelled.
    pub fn start_health_checks(&self, shutdown: &CancellationToken) {
        let resolver: Arc<dyn Resolve> = self
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver));
        for c in &self.order {
            c.start(shutdown, &resolver);
        }
    }
}
