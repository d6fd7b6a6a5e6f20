//! JSON <-> gRPC transcoding for HTTP/1.1 and HTTP/2 callers. A request is
//! matched to a method (a `google.api.http` rule, or the default
//! `POST /package.Service/Method`), turned into a gRPC call, sent through
//! the same route selection and cluster as native gRPC, and the reply is
//! turned back into JSON: one object for unary replies, NDJSON, SSE or a
//! JSON array streamed message by message for server streams.

mod ndjson;
mod stream;

pub(crate) mod metadata;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

pub(crate) use crate::config::transcode::TranscodeConfig;
use crate::linger::FrontBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;

use balancer::{
    body::{boxed, full},
    grpc::frame::{self as grpc_frame, FrameDecoder},
    headers::{GRPC_MESSAGE, GRPC_STATUS_DETAILS_BIN},
};
use descriptors::{JsonOptions, MethodInfo, Snapshot, json};

use crate::{
    access_log::LogRecord,
    error::Termination,
    forward::{self, Answer, deadline, grpc_status},
    metrics::{TranscodeDirection, TranscodeErrorKind, TranscodeSeries},
    proxy::ConnCtx,
    respond::{Code, GatewayError, ResponseBody, percent_decode},
};

pub(crate) use stream::StreamFormat;

/// The compiled settings.
#[derive(Debug, Clone)]
pub struct TranscodeSettings {
    json: JsonOptions,
    max_body: usize,
    max_message: usize,
    default_timeout: Option<Duration>,
    headers: metadata::HeaderPolicy,
}

impl TranscodeSettings {
    /// Compiles `[transcoding]`.
    pub fn new(cfg: &TranscodeConfig) -> Result<Self, balancer::config::ConfigError> {
        use balancer::config::ConfigError as E;
        if cfg.max_body_bytes == 0 || cfg.max_message_bytes == 0 {
            return Err(E::new(
                "transcoding",
                "max_body_bytes and max_message_bytes must be greater than 0",
            ));
        }
        if cfg.json.max_json_output_bytes == 0 {
            return Err(E::new(
                "transcoding.json",
                "max_json_output_bytes must be greater than 0",
            ));
        }
        Ok(Self {
            json: cfg.json.clone(),
            max_body: cfg.max_body_bytes,
            max_message: cfg.max_message_bytes,
            default_timeout: cfg.default_timeout_ms.map(Duration::from_millis),
            headers: metadata::HeaderPolicy::new(&cfg.forward_headers)?,
        })
    }
}

/// Where a failure of the request-body conversion (client streaming) is
/// left for the response side to report.
type FailureSlot = Arc<OnceLock<GatewayError>>;

fn invalid(e: &descriptors::DescriptorError) -> GatewayError {
    if e.is_client_error() {
        GatewayError::InvalidRequest(e.to_string())
    } else {
        tracing::warn!(error = %e, "Request conversion failed on our side");
        GatewayError::Internal
    }
}

/// Runs a conversion with no whole-pool build on this worker thread: when
/// it needs the prost-reflect pool (a type the codec leaves to it), the
/// pool is built on a blocking thread and the conversion runs again.
async fn off_loop<T>(
    method: &Arc<MethodInfo>,
    mut convert: impl FnMut() -> Result<T, descriptors::DescriptorError>,
) -> Result<T, descriptors::DescriptorError> {
    match descriptors::without_pool_builds(&mut convert) {
        Err(descriptors::DescriptorError::PoolNotBuilt) => {
            build_pool(method).await;
            descriptors::without_pool_builds(convert)
        }
        result => result,
    }
}

/// Builds the registry snapshot's prost-reflect pool of `method` on a
/// blocking thread.
async fn build_pool(method: &Arc<MethodInfo>) {
    let _ = spawn_pool_build(method).await;
}

/// Starts [`build_pool`] for a body or stream that polls for it: a message
/// waits in it meanwhile (a worker thread builds no pool).
fn spawn_pool_build(method: &Arc<MethodInfo>) -> tokio::task::JoinHandle<()> {
    let m = method.clone();
    tokio::task::spawn_blocking(move || m.build_pool())
}

/// The JSON codec's metrics for one call's method (none without metrics).
type Codec = Option<Arc<TranscodeSeries>>;

/// Runs one codec call, timed when there are metrics.
fn timed<T>(codec: &Codec, direction: TranscodeDirection, f: impl FnOnce() -> T) -> T {
    match codec {
        Some(c) => c.time(direction, f),
        None => f(),
    }
}

/// Counts a transcoding failure.
fn count_error(codec: &Codec, kind: TranscodeErrorKind) {
    if let Some(c) = codec {
        c.error(kind);
    }
}

/// The kind of a failure to turn request JSON (or parameters) into protobuf.
fn request_error_kind(e: &descriptors::DescriptorError) -> TranscodeErrorKind {
    use descriptors::DescriptorError as E;
    match e {
        E::InvalidJson { message, .. } | E::InvalidPath { message, .. }
            if message.contains("unrecognized field") || message.contains("unknown field") =>
        {
            TranscodeErrorKind::UnknownField
        }
        E::TooDeep { .. } | E::TooDeepMessage { .. } => TranscodeErrorKind::TooDeep,
        E::JsonTooLarge { .. } | E::AnyTooLarge { .. } => TranscodeErrorKind::TooLarge,
        _ => TranscodeErrorKind::InvalidJson,
    }
}

/// The kind of a failure to render a reply message as JSON.
fn reply_error_kind(e: &descriptors::DescriptorError) -> TranscodeErrorKind {
    use descriptors::DescriptorError as E;
    match e {
        E::TooDeep { .. } | E::TooDeepMessage { .. } => TranscodeErrorKind::TooDeep,
        E::JsonTooLarge { .. } | E::AnyTooLarge { .. } => TranscodeErrorKind::TooLarge,
        _ => TranscodeErrorKind::BadReply,
    }
}

/// The transcoding kind of a gateway error met while reading a reply.
fn reply_failure_kind(e: &GatewayError) -> Option<TranscodeErrorKind> {
    match e {
        GatewayError::ReplyTooLarge { .. } => Some(TranscodeErrorKind::TooLarge),
        GatewayError::UpstreamBadFrame(_) | GatewayError::UpstreamTwoMessages => {
            Some(TranscodeErrorKind::BadReply)
        }
        _ => None,
    }
}

use crate::limits::too_large;

/// What a JSON caller is told when the upstream reply cannot be rendered:
/// the limit it broke, or that it did not decode (the detail goes to the log).
fn unrenderable(e: &descriptors::DescriptorError) -> &'static str {
    use descriptors::DescriptorError as E;
    match e {
        E::TooDeepMessage { .. } => "upstream reply nests too deeply to render as JSON",
        E::AnyTooLarge { .. } => "upstream reply holds too many nested Any payloads",
        E::JsonTooLarge { .. } => "upstream reply exceeds the JSON output limit",
        _ => "upstream sent an undecodable message",
    }
}

/// A JSON error response for an upstream gRPC status, details decoded.
fn status_response(
    snapshot: &Snapshot,
    code: i32,
    message: &str,
    details: Option<&[u8]>,
) -> Response<ResponseBody> {
    let body = json::status_to_json(snapshot.codec(), code, message, details);
    let mut resp = Response::new(crate::respond::full(Bytes::from(body.to_string())));
    *resp.status_mut() = Code::from_i32(code).http_status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The status carried by a header or trailer map.
struct UpstreamStatus {
    code: i32,
    message: String,
    details: Option<Vec<u8>>,
}

impl UpstreamStatus {
    fn from_headers(h: &HeaderMap) -> Option<Self> {
        let code = grpc_status(h)?;
        let message = h
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        let details = h
            .get(GRPC_STATUS_DETAILS_BIN)
            .and_then(|v| decode_base64(v.as_bytes()));
        Some(Self {
            code,
            message,
            details,
        })
    }
}

/// `-bin` metadata: base64, padded or not (`descriptors::decode_base64`).
fn decode_base64(v: &[u8]) -> Option<Vec<u8>> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| descriptors::decode_base64(s).ok())
}

/// A JSON/REST call as resolved: the method (from `snapshot`), the rule
/// that matched, the route whose policy applies, the cluster.
pub(crate) struct JsonCall<'a> {
    /// The first matching route, if any.
    pub route: Option<&'a balancer::Route>,
    /// Where the call goes.
    pub cluster: &'a Arc<balancer::Cluster>,
    /// The registry snapshot the method came from.
    pub snapshot: Arc<Snapshot>,
    /// The gRPC method.
    pub method: Arc<MethodInfo>,
    /// The `google.api.http` rule that matched, if any.
    pub rule: Option<descriptors::HttpMatch>,
}

/// Transcodes one HTTP request; see the module docs.
pub(crate) async fn forward_json(
    conn: &ConnCtx,
    call: JsonCall<'_>,
    req: Request<FrontBody>,
    rec: &mut LogRecord,
    started: Instant,
) -> Result<Response<ResponseBody>, GatewayError> {
    rec.protocol = "json";
    let shared = &conn.shared;
    let settings = &shared.transcode;
    let JsonCall {
        route,
        cluster,
        snapshot,
        method,
        rule,
    } = call;
    if method.needs_pool_built() {
        // A type the codec does not cover goes through the prost-reflect
        // pool: built on a blocking thread, not on this connection's worker.
        build_pool(&method).await;
    }
    let (parts, body) = req.into_parts();
    let mut headers = settings.headers.metadata(&parts.headers);
    let deadline = deadline(&mut headers, route, settings.default_timeout, started);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let format = StreamFormat::from_accept(parts.headers.get(header::ACCEPT));
    let codec: Codec = shared
        .access_log
        .metrics()
        .map(|m| m.transcode(&method.grpc_path));

    let failure: FailureSlot = Arc::default();
    // The buffered request bytes, held from the budget until the upstream
    // answers (the encoded message is in flight until then).
    let mut _held = None;
    let upstream_body = if method.client_streaming {
        boxed(ndjson::NdjsonBody::new(
            body,
            method.clone(),
            settings.json.clone(),
            settings.max_message,
            failure.clone(),
            shared.limits.budget.reserve_empty(),
            codec.clone(),
            rec.counts.clone(),
        ))
    } else {
        let (bytes, mut held) = shared
            .limits
            .collect(body, settings.max_body)
            .await
            .inspect_err(|e| {
                if matches!(e, GatewayError::TooLarge { .. }) {
                    count_error(&codec, TranscodeErrorKind::TooLarge);
                }
            })?;
        rec.counts.add_request_bytes(bytes.len());
        let mut msg = Vec::with_capacity(bytes.len());
        let began = Instant::now();
        let built = off_loop(&method, || {
            msg.clear();
            timed(&codec, TranscodeDirection::JsonToProto, || match &rule {
                Some(m) => {
                    json::build_request(m, &bytes, parts.uri.query(), &settings.json, &mut msg)
                }
                None => json::request_to_proto(&method, &bytes, &settings.json, &mut msg),
            })
        })
        .await;
        if let Some(t) = &rec.trace {
            t.transcoded("json_to_proto", began);
        }
        built.map_err(|e| {
            count_error(&codec, request_error_kind(&e));
            invalid(&e)
        })?;
        if msg.len() > settings.max_message {
            count_error(&codec, TranscodeErrorKind::TooLarge);
            return Err(too_large("request message", settings.max_message));
        }
        rec.counts.add_request_messages(1);
        drop(bytes);
        if !held.set(msg.len()) {
            return Err(crate::limits::over_budget());
        }
        _held = Some(held);
        full(grpc_frame::encode(&msg))
    };
    let mut up_req = Request::new(upstream_body);
    *up_req.method_mut() = Method::POST;
    *up_req.uri_mut() = method
        .grpc_path
        .parse()
        .map_err(|_| GatewayError::Internal)?;
    *up_req.version_mut() = Version::HTTP_2;
    *up_req.headers_mut() = headers;

    let Answer {
        head: up_parts,
        body: up_body,
        mut exchange,
    } = match forward::call(conn, cluster, up_req, deadline, rec, started).await {
        Ok(answer) => answer,
        Err(e) => return Err(failure.get().cloned().unwrap_or(e)),
    };

    let mut resp_headers = HeaderMap::new();
    metadata::copy_response_headers(&up_parts.headers, &mut resp_headers);
    let resp = if up_parts.status != StatusCode::OK {
        let code = Code::from_http(up_parts.status);
        // Not a gRPC answer: a failure of the server, as for native gRPC.
        exchange.upstream_status(None);
        exchange.set_grpc_status(code as i32);
        status_response(
            &snapshot,
            code as i32,
            &format!("upstream answered HTTP {}", up_parts.status),
            None,
        )
    } else if let Some(st) =
        UpstreamStatus::from_headers(&up_parts.headers).filter(|_| up_body.is_end_stream())
    {
        // Trailers-only.
        exchange.upstream_status(Some(st.code));
        exchange.set_grpc_status(st.code);
        if st.code == 0 && method.server_streaming {
            stream::empty_response(format)
        } else if st.code == 0 {
            status_response(
                &snapshot,
                Code::Internal as i32,
                "upstream sent no response message",
                None,
            )
        } else {
            status_response(&snapshot, st.code, &st.message, st.details.as_deref())
        }
    } else if method.server_streaming {
        let mut s = stream::JsonStream::new(stream::JsonStreamParts {
            inner: up_body,
            exchange,
            snapshot: snapshot.clone(),
            method: method.clone(),
            binding: rule.as_ref().map(|m| m.binding.clone()),
            opts: settings.json.clone(),
            max_message: settings.max_message,
            format,
            deadline,
            failure,
            codec,
            counts: rec.counts.clone(),
        });
        // Wait for the first message or the end, so that a call failing at
        // once gets its proper HTTP status instead of a 200 stream.
        if let Some((code, message, details)) = s.first_event().await {
            let mut resp = status_response(&snapshot, code, &message, details.as_deref());
            resp.headers_mut().extend(resp_headers);
            return Ok(resp);
        }
        if conn.listener.log_at_start {
            s.log_start();
        }
        let mut resp = Response::new(s.boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        resp.headers_mut().extend(resp_headers);
        return Ok(resp);
    } else {
        let outcome = read_unary(up_body, settings.max_message, deadline).await;
        exchange.upstream_status(match &outcome {
            Ok((_, trailers)) => grpc_status(trailers),
            Err(_) => None,
        });
        exchange.release();
        match outcome {
            Err(e) => {
                if let Some(kind) = reply_failure_kind(&e) {
                    count_error(&codec, kind);
                }
                let e = failure.get().cloned().unwrap_or(e);
                exchange.set_grpc_status(e.code() as i32);
                let termination = e.termination();
                let resp = e.into_response(crate::classify::Protocol::Http);
                exchange.set_http_status(resp.status().as_u16());
                exchange.finish(termination);
                return Ok(resp);
            }
            Ok((msg, trailers)) => {
                let st = UpstreamStatus::from_headers(&trailers);
                metadata::copy_response_headers(&trailers, &mut resp_headers);
                match (st, msg) {
                    (None, _) => status_response(
                        &snapshot,
                        Code::Unknown as i32,
                        "upstream stream ended without a status",
                        None,
                    ),
                    (Some(st), _) if st.code != 0 => {
                        exchange.set_grpc_status(st.code);
                        status_response(&snapshot, st.code, &st.message, st.details.as_deref())
                    }
                    (Some(_), None) => {
                        count_error(&codec, TranscodeErrorKind::BadReply);
                        exchange.set_grpc_status(0);
                        status_response(
                            &snapshot,
                            Code::Internal as i32,
                            "upstream sent no response message",
                            None,
                        )
                    }
                    (Some(_), Some(msg)) => {
                        exchange.set_grpc_status(0);
                        rec.counts.add_response_messages(1);
                        let mut out = Vec::with_capacity(msg.len() * 2 + 16);
                        let binding = rule.as_ref().map(|m| &*m.binding);
                        let began = Instant::now();
                        let rendered = off_loop(&method, || {
                            out.clear();
                            timed(&codec, TranscodeDirection::ProtoToJson, || {
                                json::response_to_json(
                                    &method,
                                    binding,
                                    &msg,
                                    &settings.json,
                                    &mut out,
                                )
                            })
                        })
                        .await;
                        exchange.transcoded("proto_to_json", began);
                        match rendered {
                            Ok(()) => {
                                let mut r = Response::new(crate::respond::full(Bytes::from(out)));
                                r.headers_mut().insert(
                                    header::CONTENT_TYPE,
                                    HeaderValue::from_static("application/json"),
                                );
                                r
                            }
                            Err(e) => {
                                count_error(&codec, reply_error_kind(&e));
                                tracing::debug!(error = %e, method = %method.grpc_path, "Bad upstream message");
                                status_response(
                                    &snapshot,
                                    Code::Internal as i32,
                                    unrenderable(&e),
                                    None,
                                )
                            }
                        }
                    }
                }
            }
        }
    };
    let mut resp = resp;
    resp.headers_mut().extend(resp_headers);
    exchange.set_http_status(resp.status().as_u16());
    if let Some(n) = resp.body().size_hint().exact() {
        exchange.add_bytes(n as usize);
    }
    exchange.finish(Termination::Normal);
    Ok(resp)
}

/// Reads a unary reply: at most one message (bounded) and the trailers.
async fn read_unary(
    mut body: balancer::body::UpstreamIncoming,
    max: usize,
    deadline: Option<tokio::time::Instant>,
) -> Result<(Option<Bytes>, HeaderMap), GatewayError> {
    let read = async {
        let mut dec = FrameDecoder::new(max);
        let mut msg = None;
        let mut trailers = HeaderMap::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| GatewayError::UpstreamStreamFailed)?;
            match frame.into_data() {
                Ok(data) => {
                    dec.push(&data);
                    while let Some(m) = dec.next_message().map_err(frame_error)? {
                        if msg.replace(m).is_some() {
                            return Err(GatewayError::UpstreamTwoMessages);
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = t;
                    }
                }
            }
        }
        dec.finish().map_err(frame_error)?;
        Ok((msg, trailers))
    };
    match deadline {
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .unwrap_or(Err(GatewayError::DeadlineMidStream)),
        None => read.await,
    }
}

fn frame_error(e: grpc_frame::FrameError) -> GatewayError {
    match e {
        grpc_frame::FrameError::TooLarge { max, .. } => GatewayError::ReplyTooLarge { max },
        other => GatewayError::UpstreamBadFrame(other.to_string()),
    }
}
