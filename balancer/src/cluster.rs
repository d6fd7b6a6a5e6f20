//! Clusters: a named group of endpoints with a pick policy, a per-endpoint
//! stream limit with a bounded FIFO wait queue, and the send path that
//! fails over to another endpoint when no request byte reached the first.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use http::{Request, Response, Uri};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    body::UpstreamBody,
    body::{UpstreamIncoming, boxed},
    config::{
        ClusterConfig, ClusterName, ConfigError, DEFAULT_MAX_RECONNECT_BACKOFF_MS,
        DEFAULT_RECONNECT_BACKOFF_MS, HealthCheckConfig, LbPolicy, RetryConfig, grpc_code_by_name,
    },
    endpoint::Endpoint,
    error::BalancerError,
    error::is_unprocessed,
    h2conn::SendError,
    health,
    pick::{Pick, Picker},
    replay::ReplayBody,
    upstream::Connector,
};

/// A cluster of endpoints.
pub struct Cluster {
    name: ClusterName,
    protocol: crate::config::UpstreamProtocol,
    policy: LbPolicy,
    set: ArcSwap<EndpointSet>,
    targets: Vec<Target>,
    dns_refresh: Duration,
    background: Mutex<Option<CancellationToken>>,
    connector: Connector,
    hash_header: Option<http::HeaderName>,
    outlier: Option<Outlier>,
    limit: Option<u32>,
    max_queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    slot_freed: Notify,
    max_attempts: u32,
    retry: RetryPolicy,
    /// Where retry replay copies take their bytes from (set once by the
    /// gateway; none = only the per-request `max_buffered_bytes` bound).
    budget: std::sync::OnceLock<crate::budget::MemoryBudget>,
    active: AtomicUsize,
    retrying: AtomicUsize,
    health_check: Option<HealthCheckConfig>,
}

/// The endpoints of a cluster at one moment, with their pick policy; swapped
/// whole when DNS re-resolution changes the servers.
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    picker: Picker,
}

impl std::ops::Deref for EndpointSet {
    type Target = [Arc<Endpoint>];
    fn deref(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

/// A configured server: an address, or a host name re-resolved by DNS.
#[derive(Debug, Clone)]
struct Target {
    name: Option<String>,
    address: String,
    host: String,
    port: u16,
    weight: u32,
    /// The host is an IP literal (never re-resolved).
    literal: bool,
}

/// A taken slot on an endpoint; dropping it frees the slot. Keep it for as
/// long as the stream lives (until the response body ends).
pub struct Lease {
    cluster: Arc<Cluster>,
    endpoint: Arc<Endpoint>,
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
    /// The slot; drop it when the body is done.
    pub lease: Lease,
    /// Time spent per phase.
    pub timings: Timings,
    /// Attempts made (1 = no failover).
    pub attempts: u32,
}

// === impl Lease ===

impl Lease {
    /// The endpoint serving the request.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster.name
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.release();
        if self.cluster.waiting.load(Relaxed) > 0 {
            self.cluster.slot_freed.notify_one();
        }
    }
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
        let mut targets = Vec::with_capacity(cfg.endpoints.len());
        for (i, ep) in cfg.endpoints.iter().enumerate() {
            let field = format!("{at}.endpoints[{i}].address");
            let (host, port) = ep
                .address
                .rsplit_once(':')
                .map(|(h, p)| {
                    (
                        h.trim_start_matches('[').trim_end_matches(']').to_string(),
                        p,
                    )
                })
                .ok_or_else(|| {
                    ConfigError::new(&field, format!("`{}` is not host:port", ep.address))
                })?;
            let port: u16 = port.parse().map_err(|_| {
                ConfigError::new(&field, format!("`{}` has no valid port", ep.address))
            })?;
            let literal = host.parse::<std::net::IpAddr>().is_ok();
            targets.push(Target {
                name: ep.name.clone(),
                address: ep.address.clone(),
                host,
                port,
                weight: ep.weight,
                literal,
            });
        }
        let mut endpoints = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let addrs = resolve_target(resolver, t).await.map_err(|e| {
                ConfigError::new(
                    format!("{at}.endpoints[{i}].address"),
                    format!("cannot resolve `{}`: {e}", t.address),
                )
            })?;
            if addrs.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.endpoints[{i}].address"),
                    format!("`{}` resolves to nothing", t.address),
                ));
            }
            for addr in addrs {
                endpoints.push(Arc::new(new_endpoint(t, addr)));
            }
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
            outlier: cfg.outlier_detection.as_ref().map(|o| Outlier {
                consecutive: o.consecutive_failures,
                statuses: o
                    .statuses
                    .iter()
                    .filter_map(|s| grpc_code_by_name(s))
                    .collect(),
                base: Duration::from_millis(o.base_ejection_ms),
                max: Duration::from_millis(o.max_ejection_ms.max(o.base_ejection_ms)),
                max_percent: o.max_ejection_percent,
            }),
            limit: cfg.max_requests_per_endpoint,
            max_queue: cfg.max_queue,
            queue_timeout: Duration::from_millis(cfg.queue_timeout_ms),
            waiting: AtomicUsize::new(0),
            slot_freed: Notify::new(),
            max_attempts: cfg.max_connect_attempts,
            retry: RetryPolicy::new(cfg.retry.as_ref()),
            budget: std::sync::OnceLock::new(),
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            health_check: cfg.health_check.clone(),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &ClusterName {
        &self.name
    }

    /// What the endpoints speak.
    pub fn protocol(&self) -> crate::config::UpstreamProtocol {
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
        self.waiting.load(Relaxed)
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Takes a slot on an eligible endpoint not in `skip`, waiting in the
    /// bounded queue when all are full.
    async fn acquire(
        self: &Arc<Self>,
        set: &EndpointSet,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Result<(Lease, usize), BalancerError> {
        match set.picker.pick(&set.endpoints, self.limit, skip, key) {
            Pick::Picked(index) => Ok((
                Lease {
                    cluster: self.clone(),
                    endpoint: set.endpoints[index].clone(),
                },
                index,
            )),
            Pick::NoneEligible => Err(BalancerError::NoHealthyEndpoint {
                cluster: self.name.clone(),
            }),
            // The waiting state lives on the heap, so the common path's
            // future stays small.
            Pick::AllFull => Box::pin(self.wait_for_slot(set, skip, key)).await,
        }
    }

    /// The queue: waits, in FIFO order of wake-ups, for a slot to free up.
    async fn wait_for_slot(
        self: &Arc<Self>,
        set: &EndpointSet,
        skip: &[usize],
        key: Option<&[u8]>,
    ) -> Result<(Lease, usize), BalancerError> {
        let lease = |index: usize| {
            (
                Lease {
                    cluster: self.clone(),
                    endpoint: set.endpoints[index].clone(),
                },
                index,
            )
        };
        let no_healthy = || BalancerError::NoHealthyEndpoint {
            cluster: self.name.clone(),
        };
        if self.waiting.fetch_add(1, Relaxed) >= self.max_queue {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(BalancerError::QueueFull {
                cluster: self.name.clone(),
            });
        }
        let _waiting = WaitingGuard(&self.waiting);
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.queue_timeout);
        loop {
            // Register for a wake-up before looking, so a slot freed in
            // between is not missed.
            let mut freed = pin!(self.slot_freed.notified());
            freed.as_mut().enable();
            match set.picker.pick(&set.endpoints, self.limit, skip, key) {
                Pick::Picked(i) => return Ok(lease(i)),
                Pick::NoneEligible => return Err(no_healthy()),
                Pick::AllFull => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(BalancerError::QueueTimeout {
                    cluster: self.name.clone(),
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// Sends `req` to an endpoint and waits for the response head. A
    /// request that never reached an endpoint (connect refused or timed
    /// out, connection closed before sending) is tried on another one, up
    /// to `max_connect_attempts`. The request's URI gets the endpoint's
    /// scheme; its authority is kept, or set to the endpoint's address.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<UpstreamResponse, BalancerError> {
        let _active = Counted::new(&self.active);
        let (parts, body) = req.into_parts();
        let key = self
            .hash_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .map(|v| bytes::Bytes::copy_from_slice(v.as_bytes()));
        let (first, handle) = ReplayBody::new(body, self.retry.buffer, self.budget.get());
        let mut body = Some(first);
        let mut tried: Vec<usize> = Vec::new();
        let mut timings = Timings::default();
        let mut attempt = 0u32;
        // A retry after request bytes went out holds a budget slot.
        let mut _retrying: Option<Counted<'_>> = None;
        // One endpoint snapshot for all attempts, so `tried` stays valid.
        let set = self.set.load_full();
        loop {
            attempt += 1;
            let queued_at = Instant::now();
            let (lease, index) = self.acquire(&set, &tried, key.as_deref()).await?;
            timings.queue += queued_at.elapsed();
            let ep = lease.endpoint().clone();
            let connect_start = Instant::now();
            let got = if self.connector.http1 {
                ep.pool
                    .get_h1(&self.connector, ep.addr, &ep.host)
                    .await
                    .map(|(s, o)| (Conn::H1(s), o))
            } else {
                ep.pool
                    .get(&self.connector, ep.addr, &ep.host)
                    .await
                    .map(|(s, o)| (Conn::H2(s), o))
            };
            let sender = match got {
                Ok((sender, opened)) => {
                    if opened {
                        timings.connect = Some(connect_start.elapsed());
                        ep.record_connect_success();
                    }
                    sender
                }
                // Every connection at the server's stream limit, for too long.
                Err(error @ BalancerError::QueueTimeout { .. }) => return Err(error),
                // Another request's connect failed while this one waited for
                // it; that one recorded the failure and the back-off.
                Err(error @ BalancerError::ConnectFailedMeanwhile { .. }) => {
                    tried.push(index);
                    if attempt < self.max_attempts && tried.len() < set.endpoints.len() {
                        continue;
                    }
                    return Err(error);
                }
                Err(error) => {
                    if ep.pool.connections() > 0 {
                        // An extra connection failed; the open ones serve on.
                        ep.record_failure();
                        warn!(cluster = %self.name, endpoint = %ep.name, error = %ErrorChain(&error), "Upstream connect failed (another connection to a busy server)");
                    } else {
                        let backoff = ep.record_connect_failure(
                            Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MS),
                            Duration::from_millis(DEFAULT_MAX_RECONNECT_BACKOFF_MS),
                        );
                        warn!(cluster = %self.name, endpoint = %ep.name, error = %ErrorChain(&error), ?backoff, "Upstream connect failed; endpoint out of rotation");
                    }
                    self.record_exchange(&lease.endpoint, true);
                    tried.push(index);
                    if attempt < self.max_attempts && tried.len() < set.endpoints.len() {
                        continue;
                    }
                    return Err(error);
                }
            };
            let Some(this_body) = body.take() else {
                return Err(BalancerError::BadRequest("request body lost".into()));
            };
            let mut req = Request::from_parts(clone_parts(&parts), boxed(this_body));
            match &sender {
                Conn::H2(_) => set_uri(&mut req, &self.connector.scheme, &ep)?,
                Conn::H1(_) => set_origin_form(&mut req, ep.addr)?,
            }
            ep.record_sent();
            let sent_at = Instant::now();
            let sent = match sender {
                Conn::H2(slot) => {
                    let conn = slot.conn().clone();
                    match crate::h2conn::send(slot, req).await {
                        Ok(r) => Ok(r.map(UpstreamIncoming::H2)),
                        Err(SendError::NotSent(e)) => {
                            ep.pool.invalidate_conn(&conn);
                            Err(Failure::NotSent(Box::new(e)))
                        }
                        Err(SendError::Failed(e)) => Err(Failure::Failed(Box::new(e))),
                        Err(SendError::Body(e)) => {
                            return Err(BalancerError::BadRequest(format!(
                                "request body failed: {e}"
                            )));
                        }
                    }
                }
                Conn::H1(mut s) => match s.try_send_request(req).await {
                    Ok(r) => {
                        // Reusable once this response is read (`is_ready` then).
                        ep.pool.put_h1(s);
                        Ok(r.map(UpstreamIncoming::H1))
                    }
                    Err(mut e) => {
                        if e.take_message().is_some() {
                            Err(Failure::NotSent(Box::new(e.into_error())))
                        } else {
                            Err(Failure::Failed(Box::new(e.into_error())))
                        }
                    }
                },
            };
            match sent {
                Ok(response) => {
                    timings.response = sent_at.elapsed();
                    // A trailers-only answer with a status in the retry list,
                    // for a request that was complete and kept: try another
                    // endpoint (no response byte reached the client yet).
                    let status = trailers_only_status(&response);
                    if let Some(code) = status
                        && self.retry.statuses.contains(&code)
                        && attempt < self.retry.attempts
                        && handle.is_complete()
                        && self.retry_budget_allows()
                        && tried.len() + 1 < set.endpoints.len()
                        && let Some(again) = handle.replay()
                    {
                        debug!(cluster = %self.name, endpoint = %ep.name, code, "Retrying on another endpoint (status in retry list)");
                        self.record_exchange(&lease.endpoint, true);
                        tried.push(index);
                        body = Some(again);
                        _retrying.get_or_insert_with(|| Counted::new(&self.retrying));
                        continue;
                    }
                    return Ok(UpstreamResponse {
                        response,
                        lease,
                        timings,
                        attempts: attempt,
                    });
                }
                Err(Failure::NotSent(error)) => {
                    ep.record_failure();
                    if attempt < self.max_attempts {
                        // Never sent: the connection was closing. Retry,
                        // on this endpoint too (a new connection).
                        debug!(cluster = %self.name, endpoint = %ep.name, error = %error, "Connection closed before send; retrying");
                        body = handle.replay();
                        if body.is_some() {
                            continue;
                        }
                    }
                    return Err(BalancerError::NotSent {
                        addr: ep.addr,
                        source: error,
                    });
                }
                Err(Failure::Failed(error)) => {
                    // Not processed (REFUSED_STREAM, or beyond a graceful
                    // GOAWAY's last stream): the body is replayed elsewhere if
                    // kept. A graceful GOAWAY is no failure of the endpoint's.
                    let unprocessed = is_unprocessed(error.as_ref());
                    let going_away = error
                        .downcast_ref::<h2::Error>()
                        .is_some_and(|e| e.is_go_away() && e.is_remote());
                    if !(unprocessed && going_away) {
                        ep.record_failure();
                        self.record_exchange(&lease.endpoint, true);
                    }
                    if unprocessed
                        && attempt < self.retry.attempts.max(2)
                        && self.retry_budget_allows()
                        && let Some(again) = handle.replay()
                    {
                        debug!(cluster = %self.name, endpoint = %ep.name, error = %error, "Stream not processed; retrying on another endpoint");
                        tried.push(index);
                        if tried.len() >= set.endpoints.len() {
                            tried.clear();
                        }
                        body = Some(again);
                        _retrying.get_or_insert_with(|| Counted::new(&self.retrying));
                        continue;
                    }
                    return Err(BalancerError::Upstream {
                        addr: ep.addr,
                        source: error,
                    });
                }
            }
        }
    }

    /// Retries in progress stay under `budget_percent` of active requests
    /// (at least `min_concurrency`), so a failing cluster does not see a
    /// retry storm.
    fn retry_budget_allows(&self) -> bool {
        let active = self.active.load(Relaxed);
        let allowed = (active * self.retry.budget_percent as usize / 100)
            .max(self.retry.min_concurrency as usize);
        self.retrying.load(Relaxed) < allowed
    }
}

/// A connection to send one request on.
enum Conn {
    H2(crate::h2conn::StreamSlot),
    H1(crate::upstream::H1Sender),
}

/// How an attempt failed.
enum Failure {
    /// No request byte left: safe to try again.
    NotSent(crate::body::BoxError),
    /// Sent, then the exchange failed.
    Failed(crate::body::BoxError),
}

/// HTTP/1.1: origin-form target, and a `host` header.
fn set_origin_form(req: &mut Request<UpstreamBody>, addr: SocketAddr) -> Result<(), BalancerError> {
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if !req.headers().contains_key(http::header::HOST) {
        let host = authority.unwrap_or_else(|| addr.to_string());
        let v = http::HeaderValue::try_from(host)
            .map_err(|e| BalancerError::BadRequest(e.to_string()))?;
        req.headers_mut().insert(http::header::HOST, v);
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| http::uri::PathAndQuery::from_static("/"), Clone::clone);
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = http::Version::HTTP_11;
    Ok(())
}

/// Counts something for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        Self(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The request head again, for a retry (extensions are not kept).
fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

fn trailers_only_status(resp: &Response<UpstreamIncoming>) -> Option<i32> {
    use http_body::Body as _;
    if !resp.body().is_end_stream() {
        return None;
    }
    crate::headers::grpc_status(resp.headers())
}

/// Retry settings, compiled.
#[derive(Debug)]
struct RetryPolicy {
    statuses: Vec<i32>,
    attempts: u32,
    budget_percent: u32,
    min_concurrency: u32,
    buffer: usize,
}

impl RetryPolicy {
    fn new(cfg: Option<&RetryConfig>) -> Self {
        let d = RetryConfig::default();
        let c = cfg.unwrap_or(&d);
        Self {
            statuses: c
                .statuses
                .iter()
                .filter_map(|s| grpc_code_by_name(s))
                .collect(),
            attempts: c.max_attempts,
            budget_percent: c.budget_percent,
            min_concurrency: c.min_retry_concurrency,
            buffer: c.max_buffered_bytes,
        }
    }
}

/// Outlier detection settings, compiled.
#[derive(Debug)]
struct Outlier {
    consecutive: u32,
    statuses: Vec<i32>,
    base: Duration,
    max: Duration,
    max_percent: u32,
}

impl Cluster {
    /// Counts one exchange with endpoint `index` for outlier detection, and
    /// ejects the endpoint after enough consecutive failures, unless that
    /// would eject more than the allowed share of the cluster or its last
    /// eligible endpoint.
    fn record_exchange(&self, ep: &Arc<Endpoint>, failed: bool) {
        let Some(o) = &self.outlier else { return };
        if ep.record_exchange(failed) < o.consecutive {
            return;
        }
        let set = self.set.load();
        let n = set.endpoints.len();
        let ejected = set.endpoints.iter().filter(|e| e.is_ejected()).count();
        let others_eligible = set
            .endpoints
            .iter()
            .any(|e| !Arc::ptr_eq(e, ep) && e.is_eligible());
        let max = n * o.max_percent as usize / 100;
        if ejected + 1 > max || !others_eligible {
            debug!(cluster = %self.name, endpoint = %ep.name, "Outlier not ejected: ejection limit reached");
            return;
        }
        let time = ep.eject(o.base, o.max);
        warn!(cluster = %self.name, endpoint = %ep.name, ejection = ?time, consecutive_failures = o.consecutive, "Endpoint ejected (outlier detection)");
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
        if self.targets.iter().any(|t| !t.literal) {
            tokio::spawn(refresh_loop(
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

    /// Re-resolves every named server; endpoints that appeared are added,
    /// vanished ones leave the rotation and drain (their in-flight streams
    /// keep the connection until they end).
    async fn refresh(self: &Arc<Self>, resolver: &Arc<dyn Resolve>) {
        let current = self.set.load_full();
        let mut next: Vec<Arc<Endpoint>> = Vec::new();
        for t in &self.targets {
            let addrs = if t.literal {
                resolve_target(resolver, t).await.unwrap_or_default()
            } else {
                match resolve_target(resolver, t).await {
                    Ok(a) => a,
                    Err(error) => {
                        warn!(cluster = %self.name, address = %t.address, %error, "DNS re-resolution failed; keeping the current servers");
                        current
                            .endpoints
                            .iter()
                            .filter(|e| e.host == t.host)
                            .map(|e| e.addr)
                            .collect()
                    }
                }
            };
            for addr in addrs {
                let existing = current
                    .endpoints
                    .iter()
                    .find(|e| e.addr == addr && e.host == t.host);
                next.push(match existing {
                    Some(e) => e.clone(),
                    None => Arc::new(new_endpoint(t, addr)),
                });
            }
        }
        let added: Vec<_> = next
            .iter()
            .filter(|e| !current.endpoints.iter().any(|c| Arc::ptr_eq(c, e)))
            .cloned()
            .collect();
        let removed: Vec<_> = current
            .endpoints
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

async fn refresh_loop(
    cluster: Arc<Cluster>,
    resolver: Arc<dyn Resolve>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cluster.dns_refresh) => {}
        }
        cluster.refresh(&resolver).await;
    }
}

fn new_endpoint(t: &Target, addr: SocketAddr) -> Endpoint {
    let name = match (&t.name, t.literal) {
        (Some(n), true) => n.clone(),
        (None, true) => t.address.clone(),
        (Some(n), false) => format!("{n}@{}", addr.ip()),
        (None, false) => format!("{}@{}", t.address, addr.ip()),
    };
    Endpoint::new(name, addr, t.host.clone(), t.weight)
}

async fn resolve_target(
    resolver: &Arc<dyn Resolve>,
    t: &Target,
) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = t.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, t.port)]);
    }
    let mut addrs = resolver.resolve(t.host.clone(), t.port).await?;
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

impl EndpointSet {
    fn new(policy: LbPolicy, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let keys: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
        Self {
            picker: Picker::new(policy, &weights, &keys),
            endpoints,
        }
    }
}

/// Resolves host names to addresses (DNS by default); pluggable so tests
/// decide what a name resolves to.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo, off the runtime threads).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
    {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

impl Lease {
    /// Reports how the exchange ended, for outlier detection: the final
    /// gRPC status, or None when the stream failed (reset, I/O).
    pub fn record_status(&self, status: Option<i32>) {
        let failed = match (status, &self.cluster.outlier) {
            (_, None) => return,
            (None, _) => true,
            (Some(code), Some(o)) => o.statuses.contains(&code),
        };
        self.cluster.record_exchange(&self.endpoint, failed);
    }
}

fn set_uri(
    req: &mut Request<UpstreamBody>,
    scheme: &http::uri::Scheme,
    ep: &Endpoint,
) -> Result<(), BalancerError> {
    let uri = req.uri();
    if uri.scheme() == Some(scheme) && uri.authority().is_some() {
        return Ok(());
    }
    let authority = match uri.authority() {
        Some(a) => a.clone(),
        None => ep.authority.clone().ok_or_else(|| {
            BalancerError::BadRequest(format!("{} is not a URI authority", ep.addr))
        })?,
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| BalancerError::BadRequest(e.to_string()))?;
    Ok(())
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Displays an error with all its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// All clusters, by name.
#[derive(Clone, Default)]
pub struct Clusters {
    resolver: Option<Arc<dyn Resolve>>,
    by_name: HashMap<ClusterName, Arc<Cluster>>,
    order: Vec<Arc<Cluster>>,
}

// === impl Clusters ===

impl Clusters {
    /// Makes every cluster's retry replay copies take their bytes from
    /// `budget` (the process-wide buffered-bytes budget).
    pub fn set_memory_budget(&self, budget: &crate::budget::MemoryBudget) {
        for c in self.by_name.values() {
            let _ = c.budget.set(budget.clone());
        }
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
