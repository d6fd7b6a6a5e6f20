//! Tracing of requests (W3C trace context, OpenTelemetry spans), when
//! `[tracing] enabled`: [`Tracer::start`] reads the client's `traceparent`
//! at the pipeline's entry (or starts a trace) and gives the request its
//! [`RequestTrace`]; the balancer tells it each upstream attempt
//! ([`AttemptObserver`]), which gets its own span id, written to that
//! attempt's `traceparent`; transcoding reports its steps; and at the
//! request's end (`AccessLog::emit`, like the metrics) a sampled trace
//! becomes spans for export: one server span, a child per transcoding
//! step and per attempt (retries visible).

mod context;
mod export;

use std::{
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use balancer::{AttemptObserver, AttemptOutcome, ErrorChain};
use http::HeaderMap;
use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tokio_util::sync::CancellationToken;

use crate::{access_log::LogRecord, config::trace::TracingConfig};

pub(crate) use context::{TRACEPARENT, TRACESTATE};
pub use export::ExportCounters;

/// The process's tracing: sampling and where spans go.
pub struct Tracer {
    /// Traces the gateway starts are sampled when the low 64 bits of their
    /// id are below this (OpenTelemetry's `TraceIdRatioBased`).
    ratio_bound: u64,
    sink: Option<export::SpanSink>,
    scope: InstrumentationScope,
}

impl Tracer {
    /// The tracer of `cfg`, or none when tracing is off; starts the export
    /// task when an OTLP endpoint is set (needs the runtime), counting
    /// into `counters`.
    pub fn new(
        cfg: &TracingConfig,
        counters: Arc<ExportCounters>,
        shutdown: CancellationToken,
    ) -> Result<Option<Arc<Self>>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let sink = cfg
            .otlp_endpoint
            .as_deref()
            .map(|ep| export::SpanSink::start(cfg, ep, counters, shutdown))
            .transpose()?;
        Ok(Some(Arc::new(Self {
            ratio_bound: ratio_bound(cfg.sampling_ratio),
            sink,
            scope: InstrumentationScope::builder("gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })))
    }

    /// The trace of a request with `headers`: the client's when its
    /// `traceparent` is valid (its sampled flag kept), else a new one
    /// (sampled by ratio; the client's `tracestate` goes with its invalid
    /// parent).
    pub(crate) fn start(self: &Arc<Self>, headers: &mut HeaderMap) -> Arc<RequestTrace> {
        let parent = headers.get(&TRACEPARENT).and_then(context::parse);
        let (trace_id, parent_span, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.span_id), p.sampled),
            None => {
                headers.remove(&TRACESTATE);
                let id = new_trace_id();
                (id, None, (id as u64) < self.ratio_bound)
            }
        };
        let recording = sampled && self.sink.is_some();
        Arc::new(RequestTrace {
            trace_id,
            span_id: new_span_id(),
            parent_span,
            sampled,
            tracer: self.clone(),
            children: recording.then(|| Mutex::new(Vec::new())),
        })
    }
}

/// One request's trace: its ids, and when it is sampled and exported, its
/// child spans as they happen.
pub struct RequestTrace {
    /// The trace.
    pub trace_id: u128,
    /// The gateway's (server) span.
    pub span_id: u64,
    parent_span: Option<u64>,
    sampled: bool,
    tracer: Arc<Tracer>,
    /// Child spans; none when not recorded (not sampled, or no export).
    children: Option<Mutex<Vec<Child>>>,
}

/// A child span of the server span.
struct Child {
    span_id: u64,
    start: SystemTime,
    end: Option<SystemTime>,
    what: ChildKind,
}

enum ChildKind {
    /// An upstream attempt.
    Attempt {
        n: u32,
        endpoint: Option<String>,
        /// Why it was not the answer.
        failure: Option<String>,
        grpc_status: Option<i32>,
    },
    /// A transcoding step (`json_to_proto`, `proto_to_json`).
    Transcode(&'static str),
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RequestTrace({:032x}/{:016x})",
            self.trace_id, self.span_id
        )
    }
}

impl RequestTrace {
    /// The trace id as written in logs (32 hex digits).
    pub(crate) fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Notes a transcoding step that began at `started` and ends now.
    pub(crate) fn transcoded(&self, step: &'static str, started: Instant) {
        let Some(children) = &self.children else {
            return;
        };
        let now = SystemTime::now();
        let child = Child {
            span_id: new_span_id(),
            start: now - started.elapsed(),
            end: Some(now),
            what: ChildKind::Transcode(step),
        };
        if let Ok(mut c) = children.lock() {
            c.push(child);
        }
    }

    /// At the request's end: the spans of a recorded trace go to export.
    pub(crate) fn finish(&self, rec: &LogRecord) {
        let (Some(children), Some(sink)) = (&self.children, &self.tracer.sink) else {
            return;
        };
        let children = match children.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        let end = rec.accepted + rec.total;
        let rpc = rpc_names(rec);
        let name: String = match rpc {
            Some((service, method)) => format!("{service}/{method}"),
            None => rec.method.to_string(),
        };
        let mut attrs = vec![
            KeyValue::new("client.address", rec.client.ip().to_string()),
            KeyValue::new("client.port", i64::from(rec.client.port())),
            KeyValue::new("http.request.method", rec.method.to_string()),
            KeyValue::new(
                "url.path",
                rec.path.split('?').next().unwrap_or("").to_string(),
            ),
            KeyValue::new("gateway.listener", rec.listener.to_string()),
            KeyValue::new("gateway.protocol", rec.protocol),
            KeyValue::new("gateway.termination", rec.termination.as_str()),
            KeyValue::new("gateway.retries", i64::from(rec.retries)),
        ];
        if rec.status != 0 {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(rec.status),
            ));
        }
        if let Some((service, method)) = rpc {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            attrs.push(KeyValue::new("rpc.service", service.to_string()));
            attrs.push(KeyValue::new("rpc.method", method.to_string()));
        }
        if let Some(code) = rec.grpc_status {
            attrs.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        }
        if let Some(c) = &rec.cluster {
            attrs.push(KeyValue::new("gateway.cluster", c.to_string()));
        }
        if let Some(s) = &rec.server {
            attrs.push(KeyValue::new("server.address", s.to_string()));
        }
        let status = if server_error(rec) {
            Status::error(format!(
                "HTTP {} grpc-status {}",
                rec.status,
                rec.grpc_status
                    .map_or_else(|| "-".to_string(), |c| c.to_string())
            ))
        } else {
            Status::Unset
        };
        let mut spans = Vec::with_capacity(1 + children.len());
        spans.push(self.span(
            self.span_id,
            self.parent_span.unwrap_or(0),
            self.parent_span.is_some(),
            SpanKind::Server,
            name.clone(),
            (rec.accepted, end),
            attrs,
            status,
        ));
        for child in children {
            let when = (child.start, child.end.unwrap_or(end).max(child.start));
            let span = match child.what {
                ChildKind::Transcode(step) => self.span(
                    child.span_id,
                    self.span_id,
                    false,
                    SpanKind::Internal,
                    format!("transcode {step}"),
                    when,
                    vec![KeyValue::new("gateway.transcode", step)],
                    Status::Unset,
                ),
                ChildKind::Attempt {
                    n,
                    endpoint,
                    failure,
                    grpc_status,
                } => {
                    let mut attrs = vec![KeyValue::new("gateway.attempt", i64::from(n))];
                    if let Some((service, method)) = rpc {
                        attrs.push(KeyValue::new("rpc.system", "grpc"));
                        attrs.push(KeyValue::new("rpc.service", service.to_string()));
                        attrs.push(KeyValue::new("rpc.method", method.to_string()));
                    }
                    if let Some(ep) = endpoint {
                        attrs.push(KeyValue::new("server.address", ep));
                    }
                    // The answer's status is the request's; a retried one
                    // carries its own.
                    let code = if failure.is_some() {
                        grpc_status
                    } else {
                        rec.grpc_status
                    };
                    if let Some(code) = code {
                        attrs.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                    }
                    let status = match failure {
                        Some(why) => Status::error(why),
                        None => Status::Unset,
                    };
                    self.span(
                        child.span_id,
                        self.span_id,
                        false,
                        SpanKind::Client,
                        name.clone(),
                        when,
                        attrs,
                        status,
                    )
                }
            };
            spans.push(span);
        }
        sink.send(spans);
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: u64,
        parent: u64,
        parent_remote: bool,
        kind: SpanKind,
        name: String,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(self.trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name: name.into(),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.tracer.scope.clone(),
        }
    }

    fn with_children(&self, f: impl FnOnce(&mut Vec<Child>)) {
        if let Some(children) = &self.children
            && let Ok(mut c) = children.lock()
        {
            f(&mut c);
        }
    }
}

impl AttemptObserver for RequestTrace {
    fn sending(&self, n: u32, started: Instant, endpoint: &str, headers: &mut HeaderMap) {
        let span_id = new_span_id();
        headers.insert(
            TRACEPARENT,
            context::format(self.trace_id, span_id, self.sampled),
        );
        self.with_children(|c| {
            c.push(Child {
                span_id,
                start: SystemTime::now() - started.elapsed(),
                end: None,
                what: ChildKind::Attempt {
                    n,
                    endpoint: Some(endpoint.to_string()),
                    failure: None,
                    grpc_status: None,
                },
            });
        });
    }

    fn ended(&self, n: u32, started: Instant, outcome: AttemptOutcome<'_>) {
        let (why, code) = match outcome {
            AttemptOutcome::Status(code) => (format!("retried on grpc-status {code}"), Some(code)),
            AttemptOutcome::Error(e) => (ErrorChain(e).to_string(), None),
        };
        self.with_children(|c| {
            let now = SystemTime::now();
            let found = c
                .iter_mut()
                .rev()
                .find(|ch| matches!(ch.what, ChildKind::Attempt { n: m, .. } if m == n));
            match found {
                Some(child) => {
                    child.end = Some(now);
                    if let ChildKind::Attempt {
                        failure,
                        grpc_status,
                        ..
                    } = &mut child.what
                    {
                        *failure = Some(why);
                        *grpc_status = code;
                    }
                }
                // Failed before it was sent (no connection).
                None => c.push(Child {
                    span_id: new_span_id(),
                    start: now - started.elapsed(),
                    end: Some(now),
                    what: ChildKind::Attempt {
                        n,
                        endpoint: None,
                        failure: Some(why),
                        grpc_status: code,
                    },
                }),
            }
        });
    }
}

/// (service, method) of a gRPC or JSON call, from its gRPC path.
fn rpc_names(rec: &LogRecord) -> Option<(&str, &str)> {
    let path = rec.grpc_method.as_deref().or(match rec.protocol {
        "grpc" => Some(rec.path.as_str()),
        _ => None,
    })?;
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// A server span is an error for the gRPC codes OpenTelemetry counts as
/// server faults, and for HTTP 5xx.
fn server_error(rec: &LogRecord) -> bool {
    matches!(rec.grpc_status, Some(2 | 4 | 12 | 13 | 14 | 15)) || rec.status >= 500
}

fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * u64::MAX as f64) as u64
    }
}

fn new_trace_id() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}
