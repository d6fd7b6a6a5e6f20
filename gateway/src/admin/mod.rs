//! The admin API, on its own listener (default `127.0.0.1:9901`): upload,
//! list, fetch and delete descriptor sets (binary FileDescriptorSets or
//! `.proto` sources compiled in-process), list services and clusters,
//! health. Mutating calls need `Authorization: Bearer <token>` (compared in
//! constant time). Uploads are validated completely, persisted, then
//! swapped in atomically; a rejected upload changes nothing.

pub mod store;

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use balancer::{Clusters, RouteTable, config::LbPolicy};
use descriptors::{DescriptorError, ErrorKind, Registry, SetInfo, SetMeta, compile};

use crate::{access_log::haproxy_date, respond::ResponseBody};
use store::{Store, StoredMeta};

pub use crate::config::admin::{AdminConfig, TOKEN_ENV};

/// Longest the admin listener keeps serving connections after the drain
/// of the front listeners.
const ADMIN_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin handlers work on.
pub struct AdminState {
    /// The descriptor registry (shared with the request path).
    pub registry: Arc<Registry>,
    /// Persistence, when `registry.data_dir` is set.
    pub store: Option<Store>,
    /// The bearer token; none = mutating calls are refused.
    pub token: Option<String>,
    /// Clusters, for bindings and `GET /v1/clusters`.
    pub clusters: Clusters,
    /// Routes, to show which cluster serves each method.
    pub routes: RouteTable,
    /// Upload limit.
    pub max_upload: usize,
    /// Uploads in progress; `try_acquire` fails past the cap.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the gateway drains: `/healthz` answers 503 then.
    pub draining: CancellationToken,
    /// What `GET /metrics` reports; uploads are counted here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The admin listener's settings, compiled from `[admin]`.
pub struct AdminListener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS acceptor, when `[admin] tls` is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// HTTP/1.1 request head timeout.
    pub header_read_timeout: Duration,
    /// Concurrent connections.
    pub max_connections: usize,
}

/// Serves the admin API until `stop`, which the gateway cancels after the
/// front listeners drained, so `/healthz` says "draining" (503) meanwhile.
pub async fn run(l: AdminListener, state: Arc<AdminState>, stop: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(l.max_connections));
    // Connection tasks, joined (up to a deadline) when the loop ends.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        // Wait for a free connection slot before accepting more.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        // `accept` is cancel-safe.
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = l.tcp.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    warn!(%error, "Admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = AdminConn {
            builder: builder.clone(),
            state: state.clone(),
            stop: stop.clone(),
            idle_timeout: l.header_read_timeout,
        };
        let tls = l.tls.clone();
        conns.spawn(
            async move {
                let _permit = permit;
                match tls {
                    None => conn.serve(io).await,
                    Some(acceptor) => {
                        // The handshake gets the head's time budget.
                        match tokio::time::timeout(conn.idle_timeout, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => conn.serve(stream).await,
                            Ok(Err(error)) => debug!(%error, "Admin TLS handshake failed"),
                            Err(_) => debug!("Admin TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(info_span!("admin", client.addr = %peer)),
        );
    }
    drop(l.tcp);
    // Each connection got a graceful shutdown from `stop`; the rest are
    // aborted when the set drops.
    let _ = tokio::time::timeout(ADMIN_CLOSE_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// What one admin connection needs.
struct AdminConn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<AdminState>,
    stop: CancellationToken,
    /// A connection with no request in progress for this long is closed
    /// (before its first byte, between keep-alive requests, an idle HTTP/2
    /// connection), so idle connections cannot hold the connection cap.
    idle_timeout: Duration,
}

impl AdminConn {
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let state = self.state;
        let busy = activity.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            let request = busy.begin();
            async move {
                let _request = request;
                Ok::<_, Infallible>(handle(&state, req).await)
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            // Cancel-safe branches: the connection future is polled by
            // reference, `cancelled` and `idle_for` keep no state.
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(error) = res {
                        debug!(%error, "Admin connection ended");
                    }
                    return;
                }
                _ = self.stop.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = activity.idle_for(self.idle_timeout), if !closing => {
                    debug!(timeout = ?self.idle_timeout, "Admin connection idle; closing");
                    closing = true;
                    // Responses being written still finish.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Requests in progress on one connection, and when that last changed.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    changed: std::sync::Mutex<tokio::time::Instant>,
}

/// One request in progress; its end restarts the idle clock.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            changed: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once no request has been in progress for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let since = self
                .changed
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|_| tokio::time::Instant::now());
            let busy = self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0;
            if !busy && since.elapsed() >= idle {
                return;
            }
            let wake = if busy {
                tokio::time::Instant::now() + idle
            } else {
                since + idle
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.changed.lock() {
            *t = tokio::time::Instant::now();
        }
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// An admin API error: HTTP status and message, as
/// `{"error": {"code": <status>, "message": "..."}}`.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self(status, msg.into())
    }

    fn from_descriptor(e: &DescriptorError) -> Self {
        let status = match e.kind() {
            ErrorKind::InvalidUpload | ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidResponse | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut r = Response::new(crate::respond::full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: ApiError) -> Response<ResponseBody> {
    json_response(
        e.0,
        &json!({ "error": { "code": e.0.as_u16(), "message": e.1 } }),
    )
}

/// Routes one admin request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = route(state, req).await;
    let resp = result.unwrap_or_else(error_response);
    if method != Method::GET || !resp.status().is_success() {
        info!(%method, %path, status = resp.status().as_u16(), "Admin call");
    }
    resp
}

async fn route(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["healthz"]) => Ok(if state.draining.is_cancelled() {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "draining" }),
            )
        } else {
            json_response(StatusCode::OK, &json!({ "status": "ok" }))
        }),
        (Method::GET, ["metrics"]) => metrics(state, req.headers()),
        (Method::GET, ["v1", "descriptor-sets"]) => Ok(list_sets(state)),
        (Method::GET, ["v1", "descriptor-sets", name]) => {
            get_set(state, &decode(name)?, req.uri().query())
        }
        (Method::PUT, ["v1", "descriptor-sets", name]) => {
            let name = name.to_string();
            let result = async {
                authorize(state, req.headers())?;
                let name = decode(&name)?;
                // Held while the upload is read and compiled.
                let _upload = state.uploads.clone().try_acquire_owned().map_err(|_| {
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many uploads in progress; retry when one has finished",
                    )
                })?;
                put_set(state, &name, req).await
            }
            .await;
            let uploads = &state.metrics.uploads;
            match &result {
                Ok(_) => uploads
                    .accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                Err(_) => uploads
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
            result
        }
        (Method::DELETE, ["v1", "descriptor-sets", name]) => {
            authorize(state, req.headers())?;
            delete_set(state, &decode(name)?).await
        }
        (Method::GET, ["v1", "services"]) => Ok(list_services(state)),
        (Method::GET, ["v1", "clusters"]) => Ok(list_clusters(state)),
        (
            _,
            ["healthz"]
            | ["metrics"]
            | ["v1", "descriptor-sets"]
            | ["v1", "descriptor-sets", _]
            | ["v1", "services"]
            | ["v1", "clusters"],
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {path}"),
        )),
    }
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus
/// does), else the Prometheus text format.
fn metrics(state: &AdminState, headers: &HeaderMap) -> Result<Response<ResponseBody>, ApiError> {
    let openmetrics = crate::metrics::wants_openmetrics(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    let text = state.metrics.encode(openmetrics).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
    })?;
    let mut r = Response::new(crate::respond::full(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if openmetrics {
            crate::metrics::OPENMETRICS_CONTENT_TYPE
        } else {
            crate::metrics::PROMETHEUS_CONTENT_TYPE
        }),
    );
    Ok(r)
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("no admin token configured: set admin.token or {TOKEN_ENV} to allow changes"),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid admin token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        )),
    }
}

/// Percent-decodes a path segment and checks it is a valid set name.
fn decode(segment: &str) -> Result<String, ApiError> {
    let name = crate::respond::percent_decode(segment.as_bytes());
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    if ok {
        Ok(name)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid set name `{name}`: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with .)"
            ),
        ))
    }
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| crate::respond::percent_decode(v.replace('+', " ").as_bytes()))
    })
}

fn set_json(info: &SetInfo) -> Value {
    let uploaded = std::time::UNIX_EPOCH + Duration::from_millis(info.uploaded_at_unix_ms);
    json!({
        "name": info.name,
        "version": info.version,
        "size_bytes": info.size_bytes,
        "files": info.files,
        "services": info.services,
        "methods": info.methods,
        "http_rules": info.http_rules,
        "cluster": info.cluster,
        "uploaded_at": rfc3339(uploaded),
        "uploaded_at_unix_ms": info.uploaded_at_unix_ms,
    })
}

fn rfc3339(t: std::time::SystemTime) -> String {
    // From the log date (dd/Mon/yyyy:hh:mm:ss.mmm) to RFC 3339.
    let d = haproxy_date(t);
    let month = |m: &str| {
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|x| *x == m)
        .map_or(1, |i| i + 1)
    };
    let parts: Vec<&str> = d.splitn(4, ['/', ':']).collect();
    match parts.as_slice() {
        [day, mon, year, time] => format!("{year}-{:02}-{day}T{time}Z", month(mon)),
        _ => d,
    }
}

fn list_sets(state: &AdminState) -> Response<ResponseBody> {
    let snap = state.registry.snapshot();
    let sets: Vec<Value> = snap.sets().map(set_json).collect();
    json_response(StatusCode::OK, &json!({ "descriptor_sets": sets }))
}

fn get_set(
    state: &AdminState,
    name: &str,
    query: Option<&str>,
) -> Result<Response<ResponseBody>, ApiError> {
    let snap = state.registry.snapshot();
    let info = snap.set(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no descriptor set named `{name}`"),
        )
    })?;
    if query_param(query, "format").as_deref() == Some("binary") {
        let bytes = snap.set_bytes(name).unwrap_or_default();
        let mut r = Response::new(crate::respond::full(Bytes::copy_from_slice(bytes)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    Ok(json_response(StatusCode::OK, &set_json(info)))
}

/// What an upload body holds.
enum Upload {
    Binary(Bytes),
    Sources(Vec<compile::SourceFile>),
}

async fn read_upload(req: Request<Incoming>, max: usize) -> Result<Upload, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "multipart/form-data" {
        // The boundary is case-sensitive.
        let boundary = multer::parse_boundary(&ct).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("bad multipart request: {e}"),
            )
        })?;
        let stream = http_body_util::BodyStream::new(Limited::new(req.into_body(), max))
            .map(|r| r.map(|f| f.into_data().unwrap_or_default()));
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut files = Vec::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| upload_error(&e.to_string(), max))?
        {
            let path = field
                .file_name()
                .or(field.name())
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::new(StatusCode::BAD_REQUEST, "a multipart part has no file name")
                })?;
            let source = field
                .text()
                .await
                .map_err(|e| upload_error(&e.to_string(), max))?;
            files.push(compile::SourceFile { path, source });
        }
        return Ok(Upload::Sources(files));
    }
    let bytes = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|e| upload_error(&e.to_string(), max))?
        .to_bytes();
    match essence.as_str() {
        "application/json" => {
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON upload: {e}"))
            })?;
            let map = v.get("files").unwrap_or(&v);
            let obj = map.as_object().ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "expected {\"files\": {\"path.proto\": \"source\", ...}}",
                )
            })?;
            let mut files = Vec::with_capacity(obj.len());
            for (path, source) in obj {
                let source = source.as_str().ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the source of `{path}` must be a string"),
                    )
                })?;
                files.push(compile::SourceFile {
                    path: path.clone(),
                    source: source.to_string(),
                });
            }
            Ok(Upload::Sources(files))
        }
        "application/octet-stream"
        | "application/x-protobuf"
        | "application/protobuf"
        | "application/vnd.google.protobuf" => Ok(Upload::Binary(bytes)),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content-type `{other}`: send a binary FileDescriptorSet (application/octet-stream), \
                 .proto sources as multipart/form-data, or {{\"files\": {{path: source}}}} as application/json"
            ),
        )),
    }
}

fn upload_error(msg: &str, max: usize) -> ApiError {
    if msg.contains("length limit") {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload exceeds {max} bytes"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the upload: {msg}"),
        )
    }
}

async fn put_set(
    state: &AdminState,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let cluster = query_param(req.uri().query(), "cluster").filter(|c| !c.is_empty());
    if let Some(c) = &cluster
        && !state.clusters.contains(&balancer::ClusterName::new(c))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("no cluster named `{c}`"),
        ));
    }
    let upload = read_upload(req, state.max_upload).await?;
    let registry = state.registry.clone();
    let store = state.store.clone();
    let routes = state.routes.clone();
    let name = name.to_string();
    let started = std::time::Instant::now();
    // Compiling and indexing are CPU-bound: off the runtime threads.
    let outcome = tokio::task::spawn_blocking(move || {
        let bytes: Bytes = match upload {
            Upload::Binary(b) => b,
            Upload::Sources(files) => compile::compile_protos(&files)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?
                .into(),
        };
        let meta = SetMeta {
            cluster: cluster.clone(),
            uploaded_at_unix_ms: 0,
        };
        registry
            .put_with(&name, &bytes, meta, |info| {
                if let Some(c) = &info.cluster {
                    crate::proxy::check_binding(&routes, c, &info.methods).map_err(|message| {
                        warn!(set = %name, %message, "Descriptor set binding refused");
                        DescriptorError::Refused {
                            name: name.clone(),
                            message,
                        }
                    })?;
                }
                match &store {
                    None => Ok(()),
                    Some(store) => store
                        .write(
                            &name,
                            &bytes,
                            &StoredMeta {
                                cluster: info.cluster.clone(),
                                uploaded_at_unix_ms: info.uploaded_at_unix_ms,
                            },
                        )
                        .map_err(|e| DescriptorError::Storage {
                            name: name.clone(),
                            message: e.to_string(),
                        }),
                }
            })
            .map_err(|e| ApiError::from_descriptor(&e))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "upload task failed"))??;
    info!(
        set = %outcome.set.name,
        version = outcome.set.version,
        replaced = outcome.replaced,
        services = outcome.set.services.len(),
        methods = outcome.set.methods.len(),
        took = ?started.elapsed(),
        "Descriptor set registered"
    );
    let status = if outcome.replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = set_json(&outcome.set);
    body["replaced"] = json!(outcome.replaced);
    Ok(json_response(status, &body))
}

async fn delete_set(state: &AdminState, name: &str) -> Result<Response<ResponseBody>, ApiError> {
    let registry = state.registry.clone();
    let store = state.store.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        registry
            .remove_with(&name, || match &store {
                None => Ok(()),
                Some(s) => s.delete(&name).map_err(|e| DescriptorError::Storage {
                    name: name.clone(),
                    message: e.to_string(),
                }),
            })
            .map_err(|e| ApiError::from_descriptor(&e))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "delete task failed"))??;
    let mut r = Response::new(crate::respond::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

fn list_services(state: &AdminState) -> Response<ResponseBody> {
    let snap = state.registry.snapshot();
    let empty = HeaderMap::new();
    let mut services: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut service_set: BTreeMap<String, String> = BTreeMap::new();
    for m in snap.methods() {
        let cluster = snap
            .cluster_for(&m.grpc_path)
            .map(str::to_string)
            .or_else(|| {
                state
                    .routes
                    .route(&m.grpc_path, &empty)
                    .map(|r| r.cluster.to_string())
            });
        service_set.insert(m.service().to_owned(), m.set_name.to_string());
        services
            .entry(m.service().to_owned())
            .or_default()
            .push(json!({
                "name": m.name(),
                "grpc_path": m.grpc_path,
                "json_path": format!("POST {}", m.grpc_path),
                "http_rules": m.bindings.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
                "input_type": m.input_name(),
                "output_type": m.output_name(),
                "cluster": cluster,
            }));
    }
    let list: Vec<Value> = services
        .into_iter()
        .map(|(name, mut methods)| {
            methods.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            json!({
                "name": name,
                "descriptor_set": service_set.get(&name),
                "cluster": snap.set(service_set.get(&name).map_or("", String::as_str)).and_then(|s| s.cluster.clone()),
                "methods": methods,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "services": list }))
}

fn list_clusters(state: &AdminState) -> Response<ResponseBody> {
    let clusters: Vec<Value> = state
        .clusters
        .iter()
        .map(|c| {
            let endpoints: Vec<Value> = c
                .endpoints()
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "state": if !e.is_healthy() { "DOWN" } else if e.is_ejected() { "EJECTED" } else if e.is_eligible() { "UP" } else { "BACKOFF" },
                        "last_check": e.last_check(),
                        "ejections": e.ejections(),
                        "healthy": e.is_healthy(),
                        "in_flight": e.in_flight(),
                        "connections": e.connections(),
                        "total_requests": e.total(),
                        "failures": e.failures(),
                    })
                })
                .collect();
            json!({
                "name": c.name().to_string(),
                "lb": match c.policy() { LbPolicy::RoundRobin => "round_robin", LbPolicy::Random => "random", LbPolicy::LeastRequest => "least_request", LbPolicy::Hash => "hash" },
                "queued": c.queued(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "clusters": clusters }))
}

use futures_util::StreamExt as _;
