//! Prometheus metrics, served as `GET /metrics` on the admin listener in
//! the Prometheus text format, or OpenMetrics when the scraper asks for it
//! (`Accept: application/openmetrics-text`). The exposition is
//! `prometheus-client`'s; what this module owns is where the numbers live.
//!
//! Recording takes no lock on the request path. `prometheus-client`'s
//! `Family` keeps its series in a `RwLock`ed map and its `Histogram` behind
//! a mutex, so request series are kept here instead: one [`Series`] of
//! atomics per label set, found through an `ArcSwap`ed map (a lock-free
//! load, a hash and a lookup); only the first request of a new label set
//! takes a mutex, to publish a copy of the map with it added. Label values
//! are bounded: a gRPC service or method is a label value only when it is
//! registered in the descriptor registry or named by a route; anything
//! else is `unknown`, so a client cannot create series at will.
//!
//! Front-connection numbers are plain atomics per listener
//! ([`ListenerMetrics`]), bumped by `listener` and `conn`. Upstream,
//! registry, budget and process numbers are read at scrape time from the
//! objects that own them (a [`Collector`]), so they cost nothing between
//! scrapes.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{BuildHasher, Hash},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
};

use arc_swap::ArcSwap;
use balancer::{Clusters, config::RouteConfig};
use descriptors::Registry;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder},
    metrics::MetricType,
    registry::Unit,
};

use crate::{access_log::LogRecord, limits::MemoryBudget};

/// Upper bounds of the request duration histogram, in seconds (the last
/// bucket, `+Inf`, is implicit). Long streams land in the top buckets.
pub const DURATION_BUCKETS_SECONDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// The label value of a service or method that is not registered or named
/// by a route, and of a request that reached no cluster.
pub const UNKNOWN: &str = "unknown";
/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format (0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`,
/// fixed at 100 in the Linux ABI whatever the kernel's `HZ`).
const PROC_TICKS_PER_SECOND: f64 = 100.0;

// gRPC status code names, by number.
use balancer::grpc::CODE_NAMES as GRPC_CODES;

/// Everything `GET /metrics` reports.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    /// Per-request series, recorded by the access log.
    pub requests: Arc<RequestMetrics>,
    front: Arc<FrontMetrics>,
    /// Descriptor uploads through the admin API.
    pub uploads: Arc<UploadMetrics>,
}

/// What the scrape-time collectors read.
pub struct Sources {
    /// The clusters (upstream state).
    pub clusters: Clusters,
    /// The descriptor registry.
    pub registry: Arc<Registry>,
    /// The buffered-bytes budget.
    pub budget: MemoryBudget,
    /// Access-log lines dropped because its queue was full.
    pub access_log_dropped: Arc<AtomicU64>,
}

// === impl Metrics ===

impl Metrics {
    /// Metrics over `sources`; methods named by `routes` become label values
    /// as registered ones do.
    pub fn new(sources: Sources, routes: &[RouteConfig]) -> Arc<Self> {
        let requests = Arc::new(RequestMetrics::new(sources.registry.clone(), routes));
        let front = Arc::new(FrontMetrics::default());
        let uploads = Arc::new(UploadMetrics::default());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(requests.clone()));
        registry.register_collector(Box::new(front.clone()));
        registry.register_collector(Box::new(UpstreamCollector {
            clusters: sources.clusters,
        }));
        registry.register_collector(Box::new(GatewayCollector {
            registry: sources.registry,
            budget: sources.budget,
            dropped: sources.access_log_dropped,
            uploads: uploads.clone(),
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Arc::new(Self {
            registry,
            requests,
            front,
            uploads,
        })
    }

    /// The counters of the listener named `name` (one per listener, made at
    /// start).
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let m = Arc::new(ListenerMetrics::new(name));
        self.front
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(m.clone());
        m
    }

    /// Encodes every metric: OpenMetrics when `openmetrics`, else the
    /// Prometheus text format.
    pub fn encode(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

/// Whether an `Accept` header asks for OpenMetrics (as Prometheus does by
/// default: `application/openmetrics-text;version=1.0.0,...;q=0.5,...`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';');
            let essence = params.next().unwrap_or_default().trim();
            // Refused explicitly with q=0.
            essence.eq_ignore_ascii_case("application/openmetrics-text")
                && !params.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q <= 0.0))
                })
        })
    })
}

// === requests ===

/// The request series: counter, duration histogram and response bytes by
/// listener, cluster, gRPC service and method, protocol, gRPC code and HTTP
/// status class.
pub struct RequestMetrics {
    descriptors: Arc<Registry>,
    /// Methods (`/pkg.Service/Method`) named by a route.
    named_methods: HashSet<String>,
    /// Services named by a route (without a method).
    named_services: HashSet<String>,
    /// Series by the hash of their labels; a `Vec` holds the (unlikely)
    /// collisions.
    series: ArcSwap<HashMap<u64, Vec<Arc<Series>>>>,
    /// Serializes the publication of new series (first request of a label
    /// set only).
    insert: Mutex<()>,
    hasher: std::hash::RandomState,
}

/// One label set's numbers.
struct Series {
    labels: SeriesLabels,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
    response_bytes: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesLabels {
    listener: Arc<str>,
    cluster: Arc<str>,
    service: Arc<str>,
    method: Arc<str>,
    protocol: &'static str,
    code: &'static str,
    class: &'static str,
}

/// The labels of one record, borrowed.
#[derive(Hash)]
struct LabelsRef<'a> {
    listener: &'a str,
    cluster: &'a str,
    service: &'a str,
    method: &'a str,
    protocol: &'static str,
    code: &'static str,
    class: &'static str,
}

impl LabelsRef<'_> {
    fn matches(&self, l: &SeriesLabels) -> bool {
        *l.listener == *self.listener
            && *l.cluster == *self.cluster
            && *l.service == *self.service
            && *l.method == *self.method
            && l.protocol == self.protocol
            && l.code == self.code
            && l.class == self.class
    }

    fn to_owned(&self) -> SeriesLabels {
        SeriesLabels {
            listener: self.listener.into(),
            cluster: self.cluster.into(),
            service: self.service.into(),
            method: self.method.into(),
            protocol: self.protocol,
            code: self.code,
            class: self.class,
        }
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    /// Request series whose method labels come from `descriptors` and the
    /// methods and services `routes` name.
    pub fn new(descriptors: Arc<Registry>, routes: &[RouteConfig]) -> Self {
        let mut named_methods = HashSet::new();
        let mut named_services = HashSet::new();
        for r in routes {
            let m = &r.matcher;
            if let Some(path) = &m.path
                && split_grpc_path(path).is_some()
            {
                named_methods.insert(path.clone());
            }
            match (&m.service, &m.method) {
                (Some(s), Some(method)) => {
                    named_methods.insert(format!("/{s}/{method}"));
                }
                (Some(s), None) => {
                    named_services.insert(s.clone());
                }
                _ => {}
            }
        }
        Self {
            descriptors,
            named_methods,
            named_services,
            series: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Records one finished request from its access-log record.
    pub fn record(&self, rec: &LogRecord) {
        let snapshot = self.descriptors.snapshot();
        let path = rec.path.split('?').next().unwrap_or_default();
        match rec.protocol {
            // A JSON call names its method by a REST rule or by its path.
            "json" => {
                if let Some(m) = snapshot.match_http(&rec.method, path) {
                    return self.add(rec, &m.method.service, &m.method.name);
                }
                let (service, method) = self.grpc_labels(&snapshot, path);
                self.add(rec, service, method);
            }
            // Plain HTTP proxied to an HTTP cluster: no method.
            "http" => self.add(rec, UNKNOWN, UNKNOWN),
            _ => {
                let (service, method) = self.grpc_labels(&snapshot, path);
                self.add(rec, service, method);
            }
        }
    }

    /// The (service, method) labels of a gRPC path: both when the method is
    /// registered or named by a route, the service alone when only it is
    /// known, else `unknown`.
    fn grpc_labels<'p>(
        &self,
        snapshot: &descriptors::registry::Snapshot,
        path: &'p str,
    ) -> (&'p str, &'p str) {
        let Some((service, method)) = split_grpc_path(path) else {
            return (UNKNOWN, UNKNOWN);
        };
        if snapshot.method(path).is_some() || self.named_methods.contains(path) {
            (service, method)
        } else if self.named_services.contains(service)
            || snapshot.pool().get_service_by_name(service).is_some()
        {
            (service, UNKNOWN)
        } else {
            (UNKNOWN, UNKNOWN)
        }
    }

    fn add(&self, rec: &LogRecord, service: &str, method: &str) {
        let labels = LabelsRef {
            listener: &rec.listener,
            cluster: rec.cluster.as_deref().unwrap_or(UNKNOWN),
            service,
            method,
            protocol: protocol_label(rec.protocol),
            code: code_label(rec.grpc_status),
            class: class_label(rec.status),
        };
        let hash = self.hasher.hash_one(&labels);
        // Observed under the (lock-free) guard: no reference count taken
        // on the shared series in the common case.
        if let Some(s) = self
            .series
            .load()
            .get(&hash)
            .and_then(|v| v.iter().find(|s| labels.matches(&s.labels)))
        {
            s.observe(rec);
            return;
        }
        self.insert(hash, &labels).observe(rec);
    }

    /// Publishes a new series (cold: once per label set).
    #[cold]
    fn insert(&self, hash: u64, labels: &LabelsRef<'_>) -> Arc<Series> {
        let _serialized = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.series.load_full();
        if let Some(s) = current
            .get(&hash)
            .and_then(|v| v.iter().find(|s| labels.matches(&s.labels)))
        {
            return s.clone();
        }
        let series = Arc::new(Series::new(labels.to_owned()));
        let mut next = (*current).clone();
        next.entry(hash).or_default().push(series.clone());
        self.series.store(Arc::new(next));
        series
    }

    /// How many request series exist (for tests of cardinality).
    pub fn series_count(&self) -> usize {
        self.series.load().values().map(Vec::len).sum()
    }

    fn sorted_series(&self) -> Vec<Arc<Series>> {
        let mut all: Vec<Arc<Series>> = self.series.load().values().flatten().cloned().collect();
        all.sort_by(|a, b| {
            let key = |s: &Series| {
                let l = &s.labels;
                (
                    l.listener.clone(),
                    l.cluster.clone(),
                    l.service.clone(),
                    l.method.clone(),
                    l.protocol,
                    l.code,
                    l.class,
                )
            };
            key(a).cmp(&key(b))
        });
        all
    }
}

/// `("pkg.Service", "Method")` from `/pkg.Service/Method`.
fn split_grpc_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

fn protocol_label(p: &str) -> &'static str {
    match p {
        "grpc" => "grpc",
        "json" => "json",
        "http" => "http",
        "grpc-web" => "grpc_web",
        "grpc-web-text" => "grpc_web_text",
        _ => "other",
    }
}

fn code_label(code: Option<i32>) -> &'static str {
    match code {
        None => "none",
        Some(c) => usize::try_from(c)
            .ok()
            .and_then(|c| GRPC_CODES.get(c))
            .copied()
            .unwrap_or("invalid"),
    }
}

fn class_label(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "none",
    }
}

// === impl Series ===

impl Series {
    fn new(labels: SeriesLabels) -> Self {
        Self {
            labels,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        }
    }

    fn observe(&self, rec: &LogRecord) {
        let secs = rec.total.as_secs_f64();
        let i = DURATION_BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS_SECONDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(rec.total.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        if rec.bytes > 0 {
            self.response_bytes.fetch_add(rec.bytes, Relaxed);
        }
    }

    /// (per-bucket counts, not cumulative, as the encoder wants them;
    /// count; sum in seconds).
    fn histogram(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            let le = DURATION_BUCKETS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        (buckets, count, sum)
    }

    fn label_pairs(&self) -> [(&'static str, &str); 7] {
        let l = &self.labels;
        [
            ("listener", &l.listener),
            ("cluster", &l.cluster),
            ("grpc_service", &l.service),
            ("grpc_method", &l.method),
            ("protocol", l.protocol),
            ("grpc_code", l.code),
            ("http_status_class", l.class),
        ]
    }
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("series", &self.series_count())
            .finish_non_exhaustive()
    }
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let all = self.sorted_series();
        {
            let mut e = encoder.encode_descriptor(
                "gateway_requests",
                "Requests finished, by listener, cluster, gRPC service and method (registered or named by a route, else unknown), entry protocol, final gRPC code and HTTP status class.",
                None,
                MetricType::Counter,
            )?;
            for s in &all {
                let (_, count, _) = s.histogram();
                e.encode_family(&s.label_pairs())?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        &count, None,
                    )?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "gateway_request_duration",
                "Time from the request head to the end of the response (the whole stream for streaming calls).",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for s in &all {
                let (buckets, count, sum) = s.histogram();
                e.encode_family(&s.label_pairs())?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "gateway_response_body_bytes",
            "Response body bytes sent downstream.",
            None,
            MetricType::Counter,
        )?;
        for s in &all {
            e.encode_family(&s.label_pairs())?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                    &s.response_bytes.load(Relaxed),
                    None,
                )?;
        }
        Ok(())
    }
}

// === front ===

/// Shards of a listener's per-request and per-socket-call counters:
/// connections (by accept order) spread over them, so connections served on
/// different cores rarely write the same cache line.
const SHARDS: usize = 16;

/// One shard, alone on its cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    in_flight: AtomicI64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

/// One front listener's connection counters, bumped by `listener` and
/// `conn` (atomics; no lock).
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    name: Arc<str>,
    /// Connections accepted (refused ones included).
    pub accepted: AtomicU64,
    /// Connections being served.
    pub open: AtomicI64,
    /// Connections closed at once: the listener was at `max_connections`.
    pub refused_full: AtomicU64,
    /// Connections closed at once: the client IP was at its cap.
    pub refused_per_ip: AtomicU64,
    /// Idle connections asked to close to make room (`shed_idle_when_full`).
    pub shed: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failed: AtomicU64,
    /// TLS handshakes that timed out.
    pub tls_timed_out: AtomicU64,
    /// Requests in flight and bytes moved, per shard.
    shards: [Shard; SHARDS],
}

impl ListenerMetrics {
    /// Counters for the listener `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    fn shard(&self, conn: u64) -> &Shard {
        &self.shards[(conn % SHARDS as u64) as usize]
    }

    /// A request started on connection `conn` (its accept order).
    pub fn request_started(&self, conn: u64) {
        self.shard(conn).in_flight.fetch_add(1, Relaxed);
    }

    /// A request on connection `conn` ended (its response ended or was
    /// dropped).
    pub fn request_ended(&self, conn: u64) {
        self.shard(conn).in_flight.fetch_sub(1, Relaxed);
    }

    /// `n` bytes read from connection `conn`.
    pub fn received(&self, conn: u64, n: usize) {
        self.shard(conn).received_bytes.fetch_add(n as u64, Relaxed);
    }

    /// `n` bytes written to connection `conn`.
    pub fn sent(&self, conn: u64, n: usize) {
        self.shard(conn).sent_bytes.fetch_add(n as u64, Relaxed);
    }

    /// Requests whose response has not ended.
    pub fn in_flight(&self) -> i64 {
        self.shards.iter().map(|s| s.in_flight.load(Relaxed)).sum()
    }

    /// Bytes read from downstream connections.
    pub fn received_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.received_bytes.load(Relaxed))
            .sum()
    }

    /// Bytes written to downstream connections.
    pub fn sent_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.sent_bytes.load(Relaxed)).sum()
    }

    /// Counts an open connection until the guard drops.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }
}

/// An open downstream connection in [`ListenerMetrics::open`].
pub struct OpenConnection(Arc<ListenerMetrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Default)]
struct FrontMetrics {
    listeners: Mutex<Vec<Arc<ListenerMetrics>>>,
}

fn encode_per_listener(
    encoder: &mut DescriptorEncoder,
    listeners: &[Arc<ListenerMetrics>],
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&ListenerMetrics) -> u64,
) -> Result<(), fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for l in listeners {
        let labels = [("listener", &*l.name)];
        let mut f = e.encode_family(&labels)?;
        encode_value(&mut f, kind, &value(l))?;
    }
    Ok(())
}

fn encode_value<T>(e: &mut MetricEncoder, kind: MetricType, v: &T) -> Result<(), fmt::Error>
where
    T: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    match kind {
        MetricType::Counter => {
            e.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(v, None)
        }
        _ => e.encode_gauge(v),
    }
}

impl Collector for FrontMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ls = &listeners[..];
        let e = &mut encoder;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_connections_accepted",
            "Downstream connections accepted, those closed at once included.",
            MetricType::Counter,
            |l| l.accepted.load(Relaxed),
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_connections_open",
            "Downstream connections being served.",
            MetricType::Gauge,
            |l| l.open.load(Relaxed).max(0) as u64,
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_connections_shed",
            "Idle downstream connections asked to close (GOAWAY) to make room when the listener was full.",
            MetricType::Counter,
            |l| l.shed.load(Relaxed),
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_requests_in_flight",
            "Requests whose response has not ended.",
            MetricType::Gauge,
            |l| l.in_flight().max(0) as u64,
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_received_bytes",
            "Bytes read from downstream connections after the TLS handshake (TLS records and HTTP framing included).",
            MetricType::Counter,
            |l| l.received_bytes(),
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_sent_bytes",
            "Bytes written to downstream connections after the TLS handshake (TLS records and HTTP framing included).",
            MetricType::Counter,
            |l| l.sent_bytes(),
        )?;
        {
            let mut m = e.encode_descriptor(
                "gateway_downstream_connections_refused",
                "Downstream connections closed at once: the listener was at max_connections, or the client IP at max_connections_per_ip.",
                None,
                MetricType::Counter,
            )?;
            for l in ls {
                for (reason, v) in [
                    ("max_connections", &l.refused_full),
                    ("max_connections_per_ip", &l.refused_per_ip),
                ] {
                    m.encode_family(&[("listener", &*l.name), ("reason", reason)])?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &v.load(Relaxed),
                            None,
                        )?;
                }
            }
        }
        let mut m = e.encode_descriptor(
            "gateway_downstream_tls_handshake_failures",
            "Downstream TLS handshakes that failed (error) or did not finish in tls_handshake_timeout_ms (timeout).",
            None,
            MetricType::Counter,
        )?;
        for l in ls {
            for (reason, v) in [("error", &l.tls_failed), ("timeout", &l.tls_timed_out)] {
                m.encode_family(&[("listener", &*l.name), ("reason", reason)])?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        &v.load(Relaxed),
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

// === upstream (scrape time) ===

/// Reads the balancer's public state at scrape time.
struct UpstreamCollector {
    clusters: Clusters,
}

impl fmt::Debug for UpstreamCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamCollector").finish_non_exhaustive()
    }
}

/// The state `GET /v1/clusters` shows.
const ENDPOINT_STATES: [&str; 4] = ["UP", "DOWN", "BACKOFF", "EJECTED"];

fn endpoint_state(e: &balancer::endpoint::Endpoint) -> &'static str {
    if !e.is_healthy() {
        "DOWN"
    } else if e.is_ejected() {
        "EJECTED"
    } else if e.is_eligible() {
        "UP"
    } else {
        "BACKOFF"
    }
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let endpoints: Vec<(Arc<str>, Arc<balancer::endpoint::Endpoint>)> = self
            .clusters
            .iter()
            .flat_map(|c| {
                let name: Arc<str> = c.name().as_arc();
                c.endpoints()
                    .iter()
                    .map(|e| (name.clone(), e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        {
            let mut m = encoder.encode_descriptor(
                "gateway_upstream_endpoint_state",
                "1 for the endpoint's current state (UP; DOWN by health check; BACKOFF after a failed connect; EJECTED by outlier detection), 0 for the others. Read at scrape time.",
                None,
                MetricType::Gauge,
            )?;
            for (cluster, e) in &endpoints {
                let now = endpoint_state(e);
                for state in ENDPOINT_STATES {
                    m.encode_family(&[
                        ("cluster", &**cluster),
                        ("endpoint", &*e.name),
                        ("state", state),
                    ])?
                    .encode_gauge(&i64::from(state == now))?;
                }
            }
        }
        type Read = fn(&balancer::endpoint::Endpoint) -> u64;
        let per_endpoint: [(&str, &str, MetricType, Read); 5] = [
            (
                "gateway_upstream_connections_open",
                "Open HTTP connections to the endpoint. Read at scrape time.",
                MetricType::Gauge,
                |e| e.connections() as u64,
            ),
            (
                "gateway_upstream_streams_in_flight",
                "Requests (HTTP/2 streams) in flight on the endpoint. Read at scrape time.",
                MetricType::Gauge,
                |e| u64::from(e.in_flight()),
            ),
            (
                "gateway_upstream_requests",
                "Requests sent to the endpoint. Read at scrape time from the balancer's own count.",
                MetricType::Counter,
                balancer::endpoint::Endpoint::total,
            ),
            (
                "gateway_upstream_failures",
                "Failed attempts on the endpoint: connect failures and broken exchanges (resets, transport errors); a gRPC error status is not one. Read at scrape time.",
                MetricType::Counter,
                balancer::endpoint::Endpoint::failures,
            ),
            (
                "gateway_upstream_ejections",
                "Times outlier detection ejected the endpoint. Read at scrape time.",
                MetricType::Counter,
                |e| u64::from(e.ejections()),
            ),
        ];
        for (name, help, kind, read) in per_endpoint {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            for (cluster, e) in &endpoints {
                let labels = [("cluster", &**cluster), ("endpoint", &*e.name)];
                let mut f = m.encode_family(&labels)?;
                encode_value(&mut f, kind, &read(e))?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "gateway_upstream_queued_requests",
            "Requests waiting in the cluster's queue for a stream slot. Read at scrape time.",
            None,
            MetricType::Gauge,
        )?;
        for c in self.clusters.iter() {
            m.encode_family(&[("cluster", &*c.name().as_arc())])?
                .encode_gauge(&(c.queued() as u64))?;
        }
        Ok(())
    }
}

// === registry, budget, access log ===

/// Descriptor uploads through the admin API.
#[derive(Debug, Default)]
pub struct UploadMetrics {
    /// Uploads registered.
    pub accepted: AtomicU64,
    /// Uploads refused (auth, validation, conflicts, limits).
    pub refused: AtomicU64,
}

struct GatewayCollector {
    registry: Arc<Registry>,
    budget: MemoryBudget,
    dropped: Arc<AtomicU64>,
    uploads: Arc<UploadMetrics>,
}

impl fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayCollector").finish_non_exhaustive()
    }
}

fn encode_one<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    v: T,
) -> Result<(), fmt::Error>
where
    T: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut e = encoder.encode_descriptor(name, help, unit, kind)?;
    encode_value(&mut e, kind, &v)
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = self.registry.snapshot();
        let e = &mut encoder;
        encode_one(
            e,
            "gateway_registry_descriptor_sets",
            "Descriptor sets registered.",
            None,
            MetricType::Gauge,
            snap.sets().count() as u64,
        )?;
        encode_one(
            e,
            "gateway_registry_methods",
            "gRPC methods registered (across all descriptor sets).",
            None,
            MetricType::Gauge,
            snap.methods().count() as u64,
        )?;
        {
            let mut m = e.encode_descriptor(
                "gateway_registry_set_version",
                "Version of each registered descriptor set (1 for its first upload, +1 for each replacement).",
                None,
                MetricType::Gauge,
            )?;
            for set in snap.sets() {
                m.encode_family(&[("set", set.name.as_str())])?
                    .encode_gauge(&set.version)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "gateway_registry_uploads",
                "Descriptor set uploads (PUT /v1/descriptor-sets/{name}) accepted or refused.",
                None,
                MetricType::Counter,
            )?;
            for (result, v) in [
                ("accepted", &self.uploads.accepted),
                ("refused", &self.uploads.refused),
            ] {
                m.encode_family(&[("result", result)])?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        &v.load(Relaxed),
                        None,
                    )?;
            }
        }
        encode_one(
            e,
            "gateway_buffered_request",
            "Request bytes held in buffers now (JSON bodies, NDJSON lines, retry copies), from the [limits] budget.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            self.budget.used() as u64,
        )?;
        encode_one(
            e,
            "gateway_buffered_request_limit",
            "The [limits] max_buffered_request_bytes budget.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            self.budget.limit() as u64,
        )?;
        encode_one(
            e,
            "gateway_access_log_dropped_lines",
            "Access-log lines dropped because the writer's queue was full.",
            None,
            MetricType::Counter,
            self.dropped.load(Relaxed),
        )?;
        let mut m = e.encode_descriptor(
            "gateway_build_info",
            "Always 1; the labels say which build is running.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1i64)?;
        Ok(())
    }
}

// === process (scrape time, from /proc) ===

#[derive(Debug)]
struct ProcessCollector;

/// What `/proc` says about this process; `None` where it cannot be read
/// (not Linux).
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kb| kb * 1024);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<u64>().ok())
            });
        Self {
            cpu_seconds: fields
                .map(|(utime, stime, _)| (utime + stime) as f64 / PROC_TICKS_PER_SECOND),
            resident_bytes,
            open_fds,
            max_fds,
            start_time_seconds: fields
                .zip(btime)
                .map(|((_, _, start), btime)| btime as f64 + start as f64 / PROC_TICKS_PER_SECOND),
        }
    }
}

/// `(utime, stime, starttime)` in ticks from `/proc/<pid>/stat`; the
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn stat_fields(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so field n is f[n - 3].
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((get(14)?, get(15)?, get(22)?))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let p = ProcessStats::read();
        let e = &mut encoder;
        if let Some(v) = p.cpu_seconds {
            let mut m = e.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)?;
        }
        if let Some(v) = p.resident_bytes {
            encode_one(
                e,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                MetricType::Gauge,
                v,
            )?;
        }
        if let Some(v) = p.open_fds {
            encode_one(
                e,
                "process_open_fds",
                "Open file descriptors.",
                None,
                MetricType::Gauge,
                v,
            )?;
        }
        if let Some(v) = p.max_fds {
            encode_one(
                e,
                "process_max_fds",
                "Limit on open file descriptors.",
                None,
                MetricType::Gauge,
                v,
            )?;
        }
        if let Some(v) = p.start_time_seconds {
            let mut m = e.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            m.encode_gauge(&v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(split_grpc_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_grpc_path("/a.B/C/D"), None);
        assert_eq!(split_grpc_path("/a.B/"), None);
        assert_eq!(split_grpc_path("a.B/C"), None);
        assert_eq!(code_label(Some(5)), "NOT_FOUND");
        assert_eq!(code_label(Some(99)), "invalid");
        assert_eq!(code_label(Some(-1)), "invalid");
        assert_eq!(code_label(None), "none");
        assert_eq!(class_label(404), "4xx");
        assert_eq!(class_label(0), "none");
        assert_eq!(protocol_label("grpc-web"), "grpc_web");
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn proc_stat() {
        let stat = "1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 4200 1000 200";
        assert_eq!(stat_fields(stat), Some((250, 50, 4200)));
        if cfg!(target_os = "linux") {
            let p = ProcessStats::read();
            assert!(p.cpu_seconds.is_some() && p.resident_bytes.is_some_and(|r| r > 0));
            assert!(p.open_fds.is_some_and(|n| n > 0));
            assert!(p.start_time_seconds.is_some_and(|t| t > 1.0e9));
        }
    }
}
