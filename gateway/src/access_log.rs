//! The access log: one line per request, HAProxy `option httplog`-like text
//! or JSON, written by a background task fed through a bounded queue, so
//! the request path never waits on disk (a full queue drops and counts).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, Method, Version};
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tracing::{info, warn};

use crate::config::{AccessLogConfig, CaptureConfig, LogFormat};

/// Lines waiting to be written before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;
/// Longest request path (with its query) written to a log line, in bytes
/// after escaping; a longer one is cut and ends with `...`.
pub const MAX_LOG_PATH_BYTES: usize = 1024;
/// Longest request method written, in bytes (extension methods are tokens
/// of any length).
pub const MAX_LOG_METHOD_BYTES: usize = 32;
/// Longest header value written by `debug_headers`, in bytes.
pub const MAX_LOG_HEADER_BYTES: usize = 1024;
/// What marks a value cut to its bound.
const CUT_MARK: &str = "...";

/// Handle used by the request path to emit lines.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
    format: LogFormat,
    /// Log all headers and trailers (debug switch).
    pub debug_headers: bool,
    dropped: Arc<AtomicU64>,
    /// Request metrics, recorded from every record's end (logged or not).
    metrics: Option<Arc<crate::metrics::RequestMetrics>>,
}

/// When a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// At the response head (`log_at_start`).
    Start,
    /// When the exchange is over.
    End,
}

/// Everything a line says about one request.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Downstream address.
    pub client: SocketAddr,
    /// When the request was received.
    pub accepted: SystemTime,
    /// Listener name.
    pub listener: Arc<str>,
    /// Cluster chosen, if any.
    pub cluster: Option<Arc<str>>,
    /// Endpoint chosen, if any.
    pub server: Option<Arc<str>>,
    /// Queue wait.
    pub queue: Duration,
    /// Connect time, when a connection was opened.
    pub connect: Option<Duration>,
    /// Time to the response head.
    pub response: Option<Duration>,
    /// Total time so far.
    pub total: Duration,
    /// HTTP status sent.
    pub status: u16,
    /// Final gRPC status (trailers, or trailers-only headers).
    pub grpc_status: Option<i32>,
    /// Response body bytes sent downstream.
    pub bytes: u64,
    /// Captured request headers.
    pub request_captures: Vec<String>,
    /// Captured response headers.
    pub response_captures: Vec<String>,
    /// HAProxy-style termination state (two letters).
    pub termination: crate::error::Termination,
    /// Request method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// HTTP version.
    pub version: Version,
    /// Downstream protocol.
    pub protocol: &'static str,
    /// Extra attempts on other endpoints.
    pub retries: u32,
    /// Active streams on the chosen endpoint at the response head.
    pub server_in_flight: u32,
    /// Requests waiting in the cluster's queue at the response head.
    pub cluster_queued: usize,
    /// The name of the first matching route, if any.
    pub route: Option<Arc<str>>,
    /// The gRPC method (`/pkg.Service/Method`), set by `resolve` when it is
    /// registered or named by a route (JSON: the method a rule matched).
    pub grpc_method: Option<Arc<str>>,
    /// What the bodies carried, counted as they stream; shared by the
    /// record's copies (the request body may still be on its way upstream
    /// when the response starts).
    pub counts: Arc<BodyCounts>,
    /// The request's trace, when tracing is on.
    pub trace: Option<Arc<crate::trace::RequestTrace>>,
}

/// Request body bytes and gRPC messages each way of one request (atomics:
/// bumped from the body wrappers, read when the request ends).
#[derive(Debug, Default)]
pub struct BodyCounts {
    /// Downstream request body bytes received.
    pub request_bytes: AtomicU64,
    /// gRPC messages in the request (JSON: messages built from it).
    pub request_messages: AtomicU64,
    /// gRPC messages in the response (JSON: messages rendered from it).
    pub response_messages: AtomicU64,
}

impl BodyCounts {
    /// Adds `n` request body bytes.
    pub fn add_request_bytes(&self, n: usize) {
        if n > 0 {
            self.request_bytes.fetch_add(n as u64, Relaxed);
        }
    }

    /// Adds `n` request messages.
    pub fn add_request_messages(&self, n: u64) {
        if n > 0 {
            self.request_messages.fetch_add(n, Relaxed);
        }
    }

    /// Adds `n` response messages.
    pub fn add_response_messages(&self, n: u64) {
        if n > 0 {
            self.response_messages.fetch_add(n, Relaxed);
        }
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer task; `None` path = standard output.
    pub async fn start(cfg: &AccessLogConfig) -> std::io::Result<Self> {
        let dropped = Arc::new(AtomicU64::new(0));
        if !cfg.enabled {
            return Ok(Self {
                tx: None,
                format: cfg.format,
                debug_headers: cfg.debug_headers,
                dropped,
                metrics: None,
            });
        }
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &cfg.path {
            None => Box::new(tokio::io::stdout()),
            Some(p) => Box::new(open_append(p).await?),
        };
        tokio::spawn(write_lines(rx, out, cfg.path.clone()));
        Ok(Self {
            tx: Some(tx),
            format: cfg.format,
            debug_headers: cfg.debug_headers,
            dropped,
            metrics: None,
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            format: LogFormat::Httplog,
            debug_headers: false,
            dropped: Arc::new(AtomicU64::new(0)),
            metrics: None,
        }
    }

    /// Records every request's end in `metrics` too: every request ends
    /// here (`emit` at [`Phase::End`], directly or through [`LogGuard`]),
    /// so the metrics count what the log shows.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::RequestMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The request metrics, if any (the JSON codec's series live there).
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::RequestMetrics>> {
        self.metrics.as_ref()
    }

    /// Lines dropped because the queue was full (for the metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Whether lines are written at all.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Formats and queues a line (and records the request's end in the
    /// metrics); never waits.
    pub fn emit(&self, r: &LogRecord, phase: Phase) {
        if phase == Phase::End {
            if let Some(m) = &self.metrics {
                m.record(r);
            }
            if let Some(t) = &r.trace {
                t.finish(r);
            }
        }
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            LogFormat::Httplog => httplog(r, phase),
            LogFormat::Json => json(r, phase),
        };
        if tx.try_send(line).is_err() {
            let n = self.dropped.fetch_add(1, Relaxed);
            if n.is_power_of_two() {
                warn!(dropped = n + 1, "Access log queue full; lines dropped");
            }
        }
    }

    /// Logs all headers (debug switch), redacting credentials.
    pub fn debug_headers(&self, what: &str, headers: &HeaderMap) {
        if !self.debug_headers {
            return;
        }
        let mut s = String::new();
        for (k, v) in headers {
            let v = if is_secret(k) {
                std::borrow::Cow::Borrowed("<redacted>")
            } else {
                log_safe(
                    &String::from_utf8_lossy(v.as_bytes()),
                    MAX_LOG_HEADER_BYTES,
                    "",
                )
                .into_owned()
                .into()
            };
            let _ = write!(s, "{k}: {v}; ");
        }
        info!(target: "gateway::headers", "{what}: {s}");
    }
}

fn is_secret(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    )
}

async fn open_append(p: &PathBuf) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
}

async fn write_lines(
    mut rx: mpsc::Receiver<String>,
    mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    path: Option<PathBuf>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(line) = rx.recv().await {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                }
                Err(_) => break,
            }
        }
        if let Err(error) = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await
        {
            warn!(%error, path = ?path, "Cannot write access log");
        }
        buf.clear();
    }
}

/// Owns a request's log record until the exchange is over; logs it once,
/// at `finish` or, if never finished, on drop (the client went away).
pub struct LogGuard {
    /// The record, filled in as the exchange goes.
    pub rec: LogRecord,
    log: AccessLog,
    started: std::time::Instant,
    done: bool,
}

impl LogGuard {
    /// Starts guarding `rec`.
    pub fn new(rec: LogRecord, log: AccessLog, started: std::time::Instant) -> Self {
        Self {
            rec,
            log,
            started,
            done: false,
        }
    }

    /// Logs the end of the exchange (once).
    pub fn finish(&mut self, termination: crate::error::Termination) {
        if self.done {
            return;
        }
        self.done = true;
        self.rec.termination = termination;
        self.rec.total = self.started.elapsed();
        self.log.emit(&self.rec, Phase::End);
    }

    /// Time since the exchange started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The access log (for header debugging).
    pub fn log(&self) -> &AccessLog {
        &self.log
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.finish(crate::error::Termination::ClientAbortedData);
    }
}

/// Captures the configured headers' values, cut to their length (HAProxy
/// cuts silently, so no mark) after escaping control characters and the
/// line's own separators (`"`, `\\`, `{`, `|`, `}`).
pub fn capture(headers: &HeaderMap, list: &[(HeaderName, usize)]) -> Vec<String> {
    list.iter()
        .map(|(name, len)| {
            let v = headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .unwrap_or_default();
            let mut v = escape(&v, *len, "{|}");
            v.truncate(v.len().min(*len));
            v
        })
        .collect()
}

/// `s` with control characters, `"`, `\\` and the characters in `extra`
/// escaped (`\\xHH`, `\\u{HHHH}`), so a value can neither end a log line nor
/// break its fields; at most `max` bytes, stopping before a character
/// whose escape would not fit.
fn escape(s: &str, max: usize, extra: &str) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let start = out.len();
        if c.is_control() || c == '"' || c == '\\' || extra.contains(c) {
            if c.is_ascii() {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            break;
        }
    }
    out
}

/// `s` escaped as in [`escape`], bounded to `max` bytes: a longer value is
/// cut and ends with `...`.
fn log_safe<'a>(s: &'a str, max: usize, extra: &str) -> std::borrow::Cow<'a, str> {
    let clean = |c: char| !(c.is_control() || c == '"' || c == '\\' || extra.contains(c));
    if s.len() <= max && s.chars().all(clean) {
        return s.into();
    }
    let whole = escape(s, usize::MAX, extra);
    if whole.len() <= max {
        return whole.into();
    }
    let mut cut = escape(s, max.saturating_sub(CUT_MARK.len()), extra);
    cut.push_str(CUT_MARK);
    cut.into()
}

/// `s` cut to `max` bytes (on a character boundary) with `...` when cut,
/// for the JSON format (serde escapes the rest).
fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut cut = max.saturating_sub(CUT_MARK.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{CUT_MARK}", &s[..cut]).into()
}

/// Compiles capture settings.
pub fn capture_list(cfg: &[CaptureConfig]) -> Vec<(HeaderName, usize)> {
    cfg.iter()
        .filter_map(|c| {
            HeaderName::try_from(c.name.as_str())
                .ok()
                .map(|n| (n, c.len))
        })
        .collect()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// `127.0.0.1:5000 [26/Nov/2026:14:30:00.123] fe be/srv 0/0/1/2/3 200 95 - - ---- 0/0/0/1/0 0/0 {cap} "POST /p HTTP/2.0" grpc-status=0 grpc-method=/pkg.Svc/M`
fn httplog(r: &LogRecord, phase: Phase) -> String {
    let plus = if phase == Phase::Start { "+" } else { "" };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} [{}] {} {}/{} 0/{}/{}/{}/{plus}{} {} {plus}{} - - {}-- 0/0/0/{}/{} 0/{} ",
        r.client,
        haproxy_date(r.accepted),
        r.listener,
        r.cluster.as_deref().unwrap_or("<NOSRV>"),
        r.server.as_deref().unwrap_or("<NOSRV>"),
        ms(r.queue),
        r.connect.map_or(0, ms),
        r.response.map_or(-1, |d| ms(d) as i128),
        ms(r.total),
        r.status,
        r.bytes,
        r.termination,
        r.server_in_flight,
        r.retries,
        r.cluster_queued,
    );
    if !r.request_captures.is_empty() {
        let _ = write!(s, "{{{}}} ", r.request_captures.join("|"));
    }
    if !r.response_captures.is_empty() {
        let _ = write!(s, "{{{}}} ", r.response_captures.join("|"));
    }
    let _ = write!(
        s,
        "\"{} {} {}\"",
        log_safe(r.method.as_str(), MAX_LOG_METHOD_BYTES, ""),
        log_safe(&r.path, MAX_LOG_PATH_BYTES, " "),
        version(r.version)
    );
    match r.grpc_status {
        Some(code) => {
            let _ = write!(s, " grpc-status={code}");
        }
        None if r.protocol != "http" => s.push_str(" grpc-status=-"),
        None => {}
    }
    // Bounded: only registered or route-named methods are set.
    match &r.grpc_method {
        Some(m) => {
            let _ = write!(s, " grpc-method={}", log_safe(m, MAX_LOG_PATH_BYTES, " "));
        }
        None if r.protocol != "http" => s.push_str(" grpc-method=-"),
        None => {}
    }
    if let Some(t) = &r.trace {
        let _ = write!(s, " trace={:032x}", t.trace_id);
    }
    s
}

fn json(r: &LogRecord, phase: Phase) -> String {
    serde_json::json!({
        "time": haproxy_date(r.accepted),
        "phase": if phase == Phase::Start { "start" } else { "end" },
        "client": r.client.to_string(),
        "listener": &*r.listener,
        "cluster": r.cluster,
        "server": r.server,
        "queue_ms": ms(r.queue) as u64,
        "connect_ms": r.connect.map(|d| ms(d) as u64),
        "response_ms": r.response.map(|d| ms(d) as u64),
        "total_ms": ms(r.total) as u64,
        "status": r.status,
        "grpc_status": r.grpc_status,
        "bytes": r.bytes,
        "termination": r.termination.as_str(),
        "retries": r.retries,
        "request_headers": r.request_captures,
        "response_headers": r.response_captures,
        "method": bounded(r.method.as_str(), MAX_LOG_METHOD_BYTES),
        "path": bounded(&r.path, MAX_LOG_PATH_BYTES),
        "version": version(r.version),
        "protocol": r.protocol,
        "grpc_method": r.grpc_method.as_deref(),
        "trace_id": r.trace.as_ref().map(|t| t.trace_id_hex()),
    })
    .to_string()
}

/// `26/Nov/2026:14:30:00.123` in UTC.
pub fn haproxy_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = descriptors::codec::time::civil_from_days(days);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn record() -> LogRecord {
        LogRecord {
            client: "127.0.0.1:5000".parse().expect("addr"),
            accepted: UNIX_EPOCH + Duration::from_millis(1_795_703_400_123),
            listener: "fe".into(),
            cluster: Some("be".into()),
            server: Some("srv".into()),
            queue: Duration::ZERO,
            connect: None,
            response: Some(Duration::from_millis(2)),
            total: Duration::from_millis(3),
            status: 200,
            grpc_status: Some(0),
            bytes: 95,
            request_captures: Vec::new(),
            response_captures: Vec::new(),
            termination: crate::error::Termination::Normal,
            method: Method::POST,
            path: "/pkg.Svc/M".into(),
            version: Version::HTTP_2,
            protocol: "grpc",
            retries: 0,
            server_in_flight: 1,
            cluster_queued: 0,
            route: Some("r".into()),
            grpc_method: Some("/pkg.Svc/M".into()),
            counts: Arc::default(),
            trace: None,
        }
    }

    #[test]
    fn lines_end_with_the_method() {
        let mut r = record();
        assert_eq!(
            httplog(&r, Phase::End),
            "127.0.0.1:5000 [26/Nov/2026:14:30:00.123] fe be/srv 0/0/0/2/3 200 95 - - ---- 0/0/0/1/0 0/0 \"POST /pkg.Svc/M HTTP/2.0\" grpc-status=0 grpc-method=/pkg.Svc/M"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&r, Phase::End)).expect("json");
        assert_eq!(j["grpc_method"], "/pkg.Svc/M");
        r.grpc_method = None;
        assert!(httplog(&r, Phase::End).ends_with(" grpc-status=0 grpc-method=-"));
        let j: serde_json::Value = serde_json::from_str(&json(&r, Phase::End)).expect("json");
        assert!(j["grpc_method"].is_null());
        r.protocol = "http";
        r.grpc_status = None;
        assert!(httplog(&r, Phase::End).ends_with("HTTP/2.0\""));
    }

    #[test]
    fn date() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_703_400_123);
        assert_eq!(haproxy_date(t), "26/Nov/2026:14:30:00.123");
        assert_eq!(haproxy_date(UNIX_EPOCH), "01/Jan/1970:00:00:00.000");
    }

    #[test]
    fn capture_cuts_on_char_boundary() {
        let mut h = HeaderMap::new();
        h.insert("x", "abcdef".parse().expect("value"));
        let got = capture(
            &h,
            &[
                (HeaderName::from_static("x"), 3),
                (HeaderName::from_static("y"), 3),
            ],
        );
        assert_eq!(got, ["abc", ""]);
    }

    #[test]
    fn log_values_are_escaped_and_bounded() {
        assert_eq!(log_safe("/a/b?c=d", 100, " "), "/a/b?c=d");
        assert_eq!(
            log_safe("/a\n\"b\\ c\u{85}", 100, " "),
            "/a\\x0a\\x22b\\x5c\\x20c\\u{0085}"
        );
        let long = "/".repeat(5000);
        let got = log_safe(&long, MAX_LOG_PATH_BYTES, " ");
        assert_eq!(got.len(), MAX_LOG_PATH_BYTES);
        assert!(got.ends_with("..."));
        // An escape is never cut in half.
        let got = log_safe("abcdef\n\n\n", 10, "");
        assert_eq!(got, "abcdef...");
        assert_eq!(bounded("abcdef", 5), "ab...");
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_bytes(b"a|b}\t\xff").expect("value"));
        let got = capture(&h, &[(HeaderName::from_static("x"), 100)]);
        assert_eq!(got, ["a\\x7cb\\x7d\\x09\u{fffd}"]);
    }
}
