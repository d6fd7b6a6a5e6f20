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
use balancer::{
    Clusters,
    config::RouteConfig,
    stats::{AtomicHistogram, HistogramSnapshot},
};
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
    syncs: Arc<SyncMetrics>,
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
    /// What span export did.
    pub spans: Arc<crate::trace::ExportCounters>,
}

// === impl Metrics ===

impl Metrics {
    /// Metrics over `sources`; methods named by `routes` become label values
    /// as registered ones do.
    pub fn new(sources: Sources, routes: &[RouteConfig]) -> Arc<Self> {
        let requests = Arc::new(RequestMetrics::new(sources.registry.clone(), routes));
        let front = Arc::new(FrontMetrics::default());
        let uploads = Arc::new(UploadMetrics::default());
        let syncs = Arc::new(SyncMetrics::default());
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
            spans: sources.spans,
            uploads: uploads.clone(),
        }));
        registry.register_collector(Box::new(syncs.clone()));
        registry.register_collector(Box::new(ProcessCollector));
        Arc::new(Self {
            registry,
            requests,
            front,
            uploads,
            syncs,
        })
    }

    /// The reflection-sync counters of the cluster named `cluster` (one per
    /// `descriptors_from_reflection` cluster, made at start).
    pub fn reflection_syncs(&self, cluster: &str) -> Arc<ReflectionSyncs> {
        let m = Arc::new(ReflectionSyncs {
            cluster: cluster.into(),
            ..ReflectionSyncs::default()
        });
        self.syncs
            .clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(m.clone());
        m
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

/// Upper bounds of the messages-per-request histogram (`+Inf` implicit).
pub const MESSAGE_BUCKETS: [f64; 9] =
    [0.0, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0];
/// Upper bounds of the transcoding time histogram, in seconds, per message.
pub const TRANSCODE_BUCKETS_SECONDS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
    0.1, 1.0,
];

/// The series maps' keys are hashes already: used as they are.
type KeyIsHash = std::hash::BuildHasherDefault<IdentityHasher>;

/// A `Hasher` for `u64` keys that are hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Series of one kind, found without a lock: an `ArcSwap`ed map from the
/// hash of their labels (a `Vec` holds the unlikely collisions), copied
/// whole under a mutex only when a new label set first appears.
struct SeriesMap<S> {
    series: ArcSwap<HashMap<u64, Vec<Arc<S>>, KeyIsHash>>,
    /// Serializes the publication of new series (cold).
    insert: Mutex<()>,
}

impl<S> SeriesMap<S> {
    fn new() -> Self {
        Self {
            series: ArcSwap::from_pointee(HashMap::default()),
            insert: Mutex::new(()),
        }
    }

    /// Runs `f` on the series of `hash` that `matches`, made by `make` the
    /// first time.
    fn with<R>(
        &self,
        hash: u64,
        matches: impl Fn(&S) -> bool,
        make: impl FnOnce() -> S,
        f: impl FnOnce(&S) -> R,
    ) -> R {
        // Observed under the (lock-free) guard: no reference count taken
        // on the shared series in the common case.
        if let Some(s) = self
            .series
            .load()
            .get(&hash)
            .and_then(|v| v.iter().find(|s| matches(s)))
        {
            return f(s);
        }
        f(&self.insert(hash, &matches, make))
    }

    /// The series of `hash` that `matches` (made by `make` the first
    /// time), with a reference of the caller's own.
    fn get(&self, hash: u64, matches: impl Fn(&S) -> bool, make: impl FnOnce() -> S) -> Arc<S> {
        if let Some(s) = self
            .series
            .load()
            .get(&hash)
            .and_then(|v| v.iter().find(|s| matches(s)))
        {
            return s.clone();
        }
        self.insert(hash, &matches, make)
    }

    /// Publishes a new series (cold: once per label set).
    #[cold]
    fn insert(&self, hash: u64, matches: &impl Fn(&S) -> bool, make: impl FnOnce() -> S) -> Arc<S> {
        let _serialized = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.series.load_full();
        if let Some(s) = current
            .get(&hash)
            .and_then(|v| v.iter().find(|s| matches(s)))
        {
            return s.clone();
        }
        let series = Arc::new(make());
        let mut next = (*current).clone();
        next.entry(hash).or_default().push(series.clone());
        self.series.store(Arc::new(next));
        series
    }

    fn len(&self) -> usize {
        self.series.load().values().map(Vec::len).sum()
    }

    fn all(&self) -> Vec<Arc<S>> {
        self.series.load().values().flatten().cloned().collect()
    }
}

/// The request series: counter, duration histogram, body bytes and
/// messages per request by listener, route, cluster, gRPC service and
/// method, protocol (and, but for messages, gRPC code and HTTP status
/// class); and the JSON transcoding series by method.
pub struct RequestMetrics {
    descriptors: Arc<Registry>,
    /// Services named by a route (without a method).
    named_services: HashSet<String>,
    series: SeriesMap<Series>,
    messages: SeriesMap<MessageSeries>,
    transcode: SeriesMap<TranscodeSeries>,
    transcode_errors: Arc<TranscodeErrors>,
    /// Hashes label sets: fast and fixed (label values are bounded, and a
    /// collision only costs a comparison).
    hasher: foldhash::fast::FixedState,
}

/// One label set's numbers.
struct Series {
    labels: SeriesLabels,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
    response_bytes: AtomicU64,
    request_bytes: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesLabels {
    listener: Arc<str>,
    route: Arc<str>,
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
    route: &'a str,
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
            && *l.route == *self.route
            && *l.cluster == *self.cluster
            && *l.service == *self.service
            && *l.method == *self.method
            && l.protocol == self.protocol
            && l.code == self.code
            && l.class == self.class
    }

    /// The same labels without the outcome (the messages series).
    fn call(&self) -> LabelsRef<'_> {
        LabelsRef {
            code: "",
            class: "",
            ..*self
        }
    }

    fn owned(self) -> SeriesLabels {
        SeriesLabels {
            listener: self.listener.into(),
            route: self.route.into(),
            cluster: self.cluster.into(),
            service: self.service.into(),
            method: self.method.into(),
            protocol: self.protocol,
            code: self.code,
            class: self.class,
        }
    }
}

impl Clone for LabelsRef<'_> {
    fn clone(&self) -> Self {
        *self
    }
}

impl Copy for LabelsRef<'_> {}

/// Messages per gRPC or JSON call, each way.
struct MessageSeries {
    /// The request labels without `grpc_code` and `http_status_class`.
    labels: SeriesLabels,
    request: AtomicHistogram,
    response: AtomicHistogram,
}

/// Time spent in the JSON codec for one method, per message.
pub struct TranscodeSeries {
    grpc_path: Arc<str>,
    json_to_proto: AtomicHistogram,
    proto_to_json: AtomicHistogram,
    errors: Arc<TranscodeErrors>,
}

/// Which way a message went through the JSON codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodeDirection {
    /// A request: JSON to protobuf.
    JsonToProto,
    /// A reply: protobuf to JSON.
    ProtoToJson,
}

/// Why transcoding failed (the `kind` label of
/// `gateway_transcode_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodeErrorKind {
    /// Request JSON (or a path or query parameter) that does not parse or
    /// does not fit the message.
    InvalidJson,
    /// A request field the message does not have (`ignore_unknown_fields`
    /// off).
    UnknownField,
    /// A request body, message or NDJSON line, or a reply message or its
    /// JSON rendering, over its limit.
    TooLarge,
    /// Request JSON or a reply message nested deeper than allowed.
    TooDeep,
    /// A reply that cannot be rendered: a bad frame, two messages for a
    /// unary call, no message, protobuf that does not decode.
    BadReply,
}

impl TranscodeErrorKind {
    /// Every kind, in the order of [`TranscodeErrors`].
    pub const ALL: [Self; 5] = [
        Self::InvalidJson,
        Self::UnknownField,
        Self::TooLarge,
        Self::TooDeep,
        Self::BadReply,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownField => "unknown_field",
            Self::TooLarge => "too_large",
            Self::TooDeep => "too_deep",
            Self::BadReply => "bad_reply",
        }
    }
}

/// Transcoding failures by kind.
#[derive(Debug, Default)]
pub struct TranscodeErrors([AtomicU64; TranscodeErrorKind::ALL.len()]);

impl TranscodeErrors {
    /// Counts one failure.
    pub fn count(&self, kind: TranscodeErrorKind) {
        self.0[kind as usize].fetch_add(1, Relaxed);
    }

    /// Failures of `kind` so far.
    pub fn get(&self, kind: TranscodeErrorKind) -> u64 {
        self.0[kind as usize].load(Relaxed)
    }
}

// === impl TranscodeSeries ===

impl TranscodeSeries {
    /// Runs one codec call, timing it.
    pub fn time<T>(&self, direction: TranscodeDirection, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = f();
        let h = match direction {
            TranscodeDirection::JsonToProto => &self.json_to_proto,
            TranscodeDirection::ProtoToJson => &self.proto_to_json,
        };
        h.observe_duration(start.elapsed());
        out
    }

    /// Counts one failure.
    pub fn error(&self, kind: TranscodeErrorKind) {
        self.errors.count(kind);
    }
}

impl fmt::Debug for TranscodeSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranscodeSeries")
            .field("grpc_path", &self.grpc_path)
            .finish_non_exhaustive()
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    /// Request series whose method labels come from `descriptors` and the
    /// services `routes` name (the methods routes name come with the
    /// record: `resolve` sets them).
    pub fn new(descriptors: Arc<Registry>, routes: &[RouteConfig]) -> Self {
        let named_services = routes
            .iter()
            .filter(|r| r.matcher.method.is_none())
            .filter_map(|r| r.matcher.service.clone())
            .collect();
        Self {
            descriptors,
            named_services,
            series: SeriesMap::new(),
            messages: SeriesMap::new(),
            transcode: SeriesMap::new(),
            transcode_errors: Arc::default(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    /// Records one finished request from its access-log record. Its method
    /// was named once, by `resolve` (`LogRecord::grpc_method`); only a
    /// call without one is looked at again, for a known service.
    pub fn record(&self, rec: &LogRecord) {
        let (service, method) = match (&rec.grpc_method, rec.protocol) {
            // Plain HTTP proxied to an HTTP cluster, or unroutable: no method.
            (_, "http") => (UNKNOWN, UNKNOWN),
            (Some(m), _) => split_grpc_path(m).unwrap_or((UNKNOWN, UNKNOWN)),
            (None, _) => {
                let path = rec.path.split('?').next().unwrap_or_default();
                (self.known_service(path), UNKNOWN)
            }
        };
        let labels = LabelsRef {
            listener: &rec.listener,
            route: rec.route.as_deref().unwrap_or(UNKNOWN),
            cluster: rec.cluster.as_deref().unwrap_or(UNKNOWN),
            service,
            method,
            protocol: protocol_label(rec.protocol),
            code: code_label(rec.grpc_status),
            class: class_label(rec.status),
        };
        let hash = self.hasher.hash_one(labels);
        self.series.with(
            hash,
            |s| labels.matches(&s.labels),
            || Series::new(labels.owned()),
            |s| s.observe(rec),
        );
        if matches!(rec.protocol, "grpc" | "json") {
            let call = labels.call();
            let hash = self.hasher.hash_one(call);
            self.messages.with(
                hash,
                |s| call.matches(&s.labels),
                || MessageSeries {
                    labels: call.owned(),
                    request: AtomicHistogram::counts(&MESSAGE_BUCKETS),
                    response: AtomicHistogram::counts(&MESSAGE_BUCKETS),
                },
                |s| {
                    let c = &rec.counts;
                    s.request.observe_count(c.request_messages.load(Relaxed));
                    s.response.observe_count(c.response_messages.load(Relaxed));
                },
            );
        }
    }

    /// The service of a gRPC path whose method is neither registered nor
    /// named by a route: itself when registered or named by a route, else
    /// `unknown`.
    fn known_service<'p>(&self, path: &'p str) -> &'p str {
        let Some((service, _)) = split_grpc_path(path) else {
            return UNKNOWN;
        };
        if self.named_services.contains(service) || self.descriptors.snapshot().has_service(service)
        {
            service
        } else {
            UNKNOWN
        }
    }

    /// The transcoding series of the registered method `grpc_path` (one
    /// lookup per call; each message then only touches its atomics).
    pub fn transcode(&self, grpc_path: &str) -> Arc<TranscodeSeries> {
        let hash = self.hasher.hash_one(grpc_path);
        self.transcode.get(
            hash,
            |s| *s.grpc_path == *grpc_path,
            || TranscodeSeries {
                grpc_path: grpc_path.into(),
                json_to_proto: AtomicHistogram::seconds(&TRANSCODE_BUCKETS_SECONDS),
                proto_to_json: AtomicHistogram::seconds(&TRANSCODE_BUCKETS_SECONDS),
                errors: self.transcode_errors.clone(),
            },
        )
    }

    /// Transcoding failures by kind.
    pub fn transcode_errors(&self) -> &TranscodeErrors {
        &self.transcode_errors
    }

    /// How many request series exist (for tests of cardinality).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn sorted_series(&self) -> Vec<Arc<Series>> {
        let mut all = self.series.all();
        all.sort_by(|a, b| a.labels.sort_key().cmp(&b.labels.sort_key()));
        all
    }
}

impl SeriesLabels {
    #[allow(clippy::type_complexity)]
    fn sort_key(&self) -> (&str, &str, &str, &str, &str, &str, &str, &str) {
        (
            &self.listener,
            &self.route,
            &self.cluster,
            &self.service,
            &self.method,
            self.protocol,
            self.code,
            self.class,
        )
    }

    fn pairs(&self) -> [(&'static str, &str); 8] {
        [
            ("listener", &self.listener),
            ("route", &self.route),
            ("cluster", &self.cluster),
            ("grpc_service", &self.service),
            ("grpc_method", &self.method),
            ("protocol", self.protocol),
            ("grpc_code", self.code),
            ("http_status_class", self.class),
        ]
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
            request_bytes: AtomicU64::new(0),
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
        let received = rec.counts.request_bytes.load(Relaxed);
        if received > 0 {
            self.request_bytes.fetch_add(received, Relaxed);
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
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("series", &self.series_count())
            .finish_non_exhaustive()
    }
}

fn encode_histogram(
    e: &mut MetricEncoder,
    labels: &[(&str, &str)],
    h: &HistogramSnapshot,
) -> Result<(), fmt::Error> {
    e.encode_family(&labels)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, h.count, &h.buckets, None,
        )
}

fn encode_counter(
    e: &mut MetricEncoder,
    labels: &[(&str, &str)],
    v: u64,
) -> Result<(), fmt::Error> {
    e.encode_family(&labels)?
        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let all = self.sorted_series();
        {
            let mut e = encoder.encode_descriptor(
                "gateway_requests",
                "Requests finished, by listener, route, cluster, gRPC service and method (registered or named by a route, else unknown), entry protocol, final gRPC code and HTTP status class.",
                None,
                MetricType::Counter,
            )?;
            for s in &all {
                let (_, count, _) = s.histogram();
                encode_counter(&mut e, &s.labels.pairs(), count)?;
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
                e.encode_family(&s.labels.pairs())?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        for (name, help, read) in [
            (
                "gateway_response_body_bytes",
                "Response body bytes sent downstream.",
                (|s: &Series| s.response_bytes.load(Relaxed)) as fn(&Series) -> u64,
            ),
            (
                "gateway_request_body_bytes",
                "Request body bytes received from downstream (as they streamed: forwarded upstream for gRPC and plain HTTP, read for JSON).",
                |s: &Series| s.request_bytes.load(Relaxed),
            ),
        ] {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &all {
                encode_counter(&mut e, &s.labels.pairs(), read(s))?;
            }
        }
        {
            let mut messages = self.messages.all();
            messages.sort_by(|a, b| a.labels.sort_key().cmp(&b.labels.sort_key()));
            let mut e = encoder.encode_descriptor(
                "gateway_stream_messages",
                "gRPC messages per gRPC or JSON call, each way (unary = 1; counted from the frame headers as the bodies pass, for JSON the messages transcoded).",
                None,
                MetricType::Histogram,
            )?;
            for s in &messages {
                let [l, r, c, sv, m, p, _, _] = s.labels.pairs();
                for (direction, h) in [("request", &s.request), ("response", &s.response)] {
                    let labels = [l, r, c, sv, m, p, ("direction", direction)];
                    encode_histogram(&mut e, &labels, &h.snapshot())?;
                }
            }
        }
        {
            let mut transcode = self.transcode.all();
            transcode.sort_by(|a, b| a.grpc_path.cmp(&b.grpc_path));
            let mut e = encoder.encode_descriptor(
                "gateway_transcode_duration",
                "Time spent converting one message between JSON and protobuf, by direction and method.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for s in &transcode {
                let (service, method) = split_grpc_path(&s.grpc_path).unwrap_or((UNKNOWN, UNKNOWN));
                for (direction, h) in [
                    ("json_to_proto", &s.json_to_proto),
                    ("proto_to_json", &s.proto_to_json),
                ] {
                    let labels = [
                        ("direction", direction),
                        ("grpc_service", service),
                        ("grpc_method", method),
                    ];
                    encode_histogram(&mut e, &labels, &h.snapshot())?;
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "gateway_transcode_errors",
            "JSON transcoding failures by kind: invalid_json, unknown_field, too_large, too_deep (requests or replies), bad_reply.",
            None,
            MetricType::Counter,
        )?;
        for kind in TranscodeErrorKind::ALL {
            encode_counter(
                &mut e,
                &[("kind", kind.as_str())],
                self.transcode_errors.get(kind),
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
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Connections ended by an HTTP protocol error of the client's.
    pub protocol_errors: AtomicU64,
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
            "gateway_downstream_tls_handshakes",
            "Downstream TLS handshakes completed.",
            MetricType::Counter,
            |l| l.tls_handshakes.load(Relaxed),
        )?;
        encode_per_listener(
            e,
            ls,
            "gateway_downstream_protocol_errors",
            "Downstream connections ended by an HTTP protocol error of the client's (an unparsable HTTP/1.1 request; an HTTP/2 connection error such as PROTOCOL_ERROR, HEADERS before SETTINGS included).",
            MetricType::Counter,
            |l| l.protocol_errors.load(Relaxed),
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
        let per_endpoint: [(&str, &str, MetricType, Read); 9] = [
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
            (
                "gateway_upstream_connect_attempts",
                "New connections tried to the endpoint (TCP, TLS and HTTP handshake). Read at scrape time.",
                MetricType::Counter,
                |e| e.connection_stats().connect_attempts(),
            ),
            (
                "gateway_upstream_connect_failures",
                "New connections to the endpoint that failed (refused, timed out, TLS or HTTP handshake failed). Read at scrape time.",
                MetricType::Counter,
                |e| e.connection_stats().connect_failures(),
            ),
            (
                "gateway_upstream_goaways_received",
                "HTTP/2 GOAWAY frames the endpoint sent. Read at scrape time.",
                MetricType::Counter,
                |e| e.connection_stats().goaways_received(),
            ),
            (
                "gateway_upstream_resets_received",
                "HTTP/2 RST_STREAM frames the endpoint sent with an error code (NO_ERROR, which ends an unneeded request body after a complete answer, aside). Read at scrape time.",
                MetricType::Counter,
                |e| e.connection_stats().resets_received(),
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
        {
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
        }
        type ReadCluster = fn(&balancer::Cluster) -> u64;
        let per_cluster: [(&str, &str, ReadCluster); 2] = [
            (
                "gateway_upstream_retries",
                "Retries: attempts made after a failed one (connect failure, not sent, REFUSED_STREAM or GOAWAY, a listed status). Read at scrape time.",
                balancer::Cluster::retries_total,
            ),
            (
                "gateway_upstream_retry_budget_exhausted",
                "Retries the policy allowed but the cluster's retry budget refused. Read at scrape time.",
                balancer::Cluster::retry_budget_exhausted_total,
            ),
        ];
        for (name, help, read) in per_cluster {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in self.clusters.iter() {
                encode_counter(&mut m, &[("cluster", &*c.name().as_arc())], read(c))?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "gateway_upstream_queue_wait",
            "Time requests waited for a stream slot in the cluster's queue (0 when one was free at once; timed-out waits included). Read at scrape time.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for c in self.clusters.iter() {
            encode_histogram(&mut m, &[("cluster", &*c.name().as_arc())], &c.queue_wait())?;
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

/// How each reflection sync of one cluster ended.
#[derive(Debug, Default)]
pub struct ReflectionSyncs {
    cluster: Arc<str>,
    /// Fetched and registered (new or changed descriptors).
    pub registered: AtomicU64,
    /// Fetched, the same as registered already.
    pub unchanged: AtomicU64,
    /// Fetched, and refused by the registry (invalid, or conflicting with
    /// the routes).
    pub refused: AtomicU64,
    /// No endpoint answered the reflection fetch.
    pub failed: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncMetrics {
    clusters: Mutex<Vec<Arc<ReflectionSyncs>>>,
}

impl Collector for SyncMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let clusters = self
            .clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut m = encoder.encode_descriptor(
            "gateway_registry_reflection_syncs",
            "Descriptor syncs by gRPC reflection (descriptors_from_reflection clusters), by result: registered, unchanged, refused, failed.",
            None,
            MetricType::Counter,
        )?;
        for c in &clusters {
            for (result, v) in [
                ("registered", &c.registered),
                ("unchanged", &c.unchanged),
                ("refused", &c.refused),
                ("failed", &c.failed),
            ] {
                encode_counter(
                    &mut m,
                    &[("cluster", &*c.cluster), ("result", result)],
                    v.load(Relaxed),
                )?;
            }
        }
        Ok(())
    }
}

struct GatewayCollector {
    registry: Arc<Registry>,
    budget: MemoryBudget,
    dropped: Arc<AtomicU64>,
    spans: Arc<crate::trace::ExportCounters>,
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
        encode_one(
            e,
            "gateway_registry_descriptor_pool_built",
            "1 while the prost-reflect descriptor pool is built (reflection, proto2 groups/extensions, an Any the codec leaves to prost-reflect; dropped after 30 s unused), else 0.",
            None,
            MetricType::Gauge,
            u64::from(self.registry.pool_is_built()),
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
        for (name, help, v) in [
            (
                "gateway_trace_spans_exported",
                "Spans the OTLP collector accepted.",
                &self.spans.exported,
            ),
            (
                "gateway_trace_spans_export_failed",
                "Spans whose OTLP export call failed or timed out.",
                &self.spans.failed,
            ),
            (
                "gateway_trace_spans_dropped",
                "Spans dropped because the export queue was full.",
                &self.spans.dropped,
            ),
        ] {
            encode_one(e, name, help, None, MetricType::Counter, v.load(Relaxed))?;
        }
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
