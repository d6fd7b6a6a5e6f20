//! W3C trace context and OTLP span export ([tracing]): a real OTLP/gRPC
//! collector (the `opentelemetry-proto` trace service, served by tonic)
//! receives the spans; a raw h2c backend records the `traceparent` each
//! attempt carried.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tests::*;
use tokio::net::TcpListener;

// === the collector ===

/// Spans received, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().expect("lock");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn spawn() -> (Self, std::net::SocketAddr) {
        let listener = TcpListener::bind(loopback()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let me = Self::default();
        let svc = TraceServiceServer::new(me.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (me, addr)
    }

    /// The spans of `trace` once `n` have arrived (up to 10 s).
    async fn wait(&self, trace: &[u8], n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, s)| s.trace_id == trace)
                .map(|(_, s)| s.clone())
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spans of `trace` received so far.
    fn now(&self, trace: &[u8]) -> usize {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, s)| s.trace_id == trace)
            .count()
    }

    fn services(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn span_attr(span: &Span, key: &str) -> Option<String> {
    attr(&span.attributes, key)
}

// === the backend ===

type Body = BoxBody<Bytes, Infallible>;

/// An h2c backend answering `Echo/Unary`: its first `fail_first` requests
/// trailers-only UNAVAILABLE, then `EchoResponse { message: "traced" }`.
/// Records each request's `traceparent` (or "" when none).
async fn spawn_backend(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    (spawn_backend_into(fail_first, seen.clone()).await, seen)
}

/// [`spawn_backend`] recording into `log` (shared by several backends).
async fn spawn_backend_into(fail_first: usize, log: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let tp = req
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let n = {
                        let mut l = log.lock().expect("lock");
                        l.push(tp);
                        l.len()
                    };
                    async move { Ok::<_, Infallible>(answer(n <= fail_first)) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn answer(fail: bool) -> http::Response<Body> {
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if fail {
        return head
            .header("grpc-status", "14")
            .header("grpc-message", "try another")
            .body(http_body_util::Empty::new().boxed())
            .expect("response");
    }
    // EchoResponse { message: "traced" }
    let msg = b"\x0a\x06traced";
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(http_body::Frame::data(Bytes::from(frame))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    head.body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .expect("response")
}

// === the gateway ===

/// A gateway over `backends` (named b0, b1, ...), retrying UNAVAILABLE on
/// another server.
async fn traced_gateway(backends: &[&str], tracing: &str) -> gateway::Gateway {
    let eps: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ name = \"b{i}\", address = \"{a}\" }}"))
        .collect();
    let gw = spawn_gateway(&format!(
        "{}\n[tracing]\n{tracing}\n",
        cluster_config(
            &eps,
            "retry = { statuses = [\"UNAVAILABLE\"], max_attempts = 2 }",
        )
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register sample descriptors");
    gw
}

fn echo_json(traceparent: Option<&str>) -> http::Request<ReqBody> {
    let mut req = json_request("POST", "/sample.echo.v1.Echo/Unary", r#"{"message":"x"}"#);
    if let Some(tp) = traceparent {
        req.headers_mut()
            .insert("traceparent", tp.parse().expect("header"));
        req.headers_mut()
            .insert("tracestate", "vendor=opaque".parse().expect("header"));
    }
    req
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// (trace id, parent id, flags) of a `traceparent`.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(p[0], "00", "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_retried_json_call_exports_a_server_span_transcode_spans_and_two_attempts() {
    let (collector, otlp) = Collector::spawn().await;
    // Two servers: the first request either gets fails, the retry goes to
    // the other.
    let (a, seen) = spawn_backend(1).await;
    let b = spawn_backend_into(1, seen.clone()).await;
    let gw = traced_gateway(
        &[&a, &b],
        &format!(
            "enabled = true\notlp_endpoint = \"http://{otlp}\"\nexport_delay_ms = 50\nservice_name = \"edge-gw\""
        ),
    )
    .await;
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        echo_json(Some(&format!("00-{TRACE}-{CLIENT_SPAN}-01"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], "traced");

    // The backend saw two attempts, each with the trace and its own parent.
    let tps = seen.lock().expect("lock").clone();
    assert_eq!(tps.len(), 2, "{tps:?}");
    let (t1, p1, f1) = parts(&tps[0]);
    let (t2, p2, f2) = parts(&tps[1]);
    assert_eq!((t1.as_str(), t2.as_str()), (TRACE, TRACE));
    assert_eq!((f1.as_str(), f2.as_str()), ("01", "01"));
    assert_ne!(p1, p2, "each attempt is its own span");
    assert!(p1 != CLIENT_SPAN && p2 != CLIENT_SPAN);

    let spans = collector.wait(&unhex(TRACE), 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert!(collector.services().iter().all(|s| s == "edge-gw"));
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(
        hex(&server.parent_span_id),
        CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(server.name, "sample.echo.v1.Echo/Unary");
    assert_eq!(span_attr(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        span_attr(server, "rpc.service").as_deref(),
        Some("sample.echo.v1.Echo")
    );
    assert_eq!(span_attr(server, "rpc.method").as_deref(), Some("Unary"));
    assert_eq!(
        span_attr(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(
        span_attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        span_attr(server, "gateway.protocol").as_deref(),
        Some("json")
    );
    assert_eq!(span_attr(server, "gateway.retries").as_deref(), Some("1"));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);

    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind != SpanKind::Server as i32)
        .collect();
    assert!(
        children.iter().all(|s| s.parent_span_id == server.span_id),
        "every other span is the server span's child: {spans:#?}"
    );
    let mut transcode: Vec<String> = children
        .iter()
        .filter(|s| s.kind == SpanKind::Internal as i32)
        .map(|s| s.name.clone())
        .collect();
    transcode.sort();
    assert_eq!(
        transcode,
        ["transcode json_to_proto", "transcode proto_to_json"]
    );

    let mut attempts: Vec<&Span> = children
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| span_attr(s, "gateway.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    // The attempt spans are the parents the backend saw, in order.
    assert_eq!(hex(&attempts[0].span_id), p1);
    assert_eq!(hex(&attempts[1].span_id), p2);
    assert_eq!(
        span_attr(attempts[0], "gateway.attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        span_attr(attempts[0], "rpc.grpc.status_code").as_deref(),
        Some("14")
    );
    assert_eq!(
        attempts[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "the retried attempt failed"
    );
    let servers: Vec<_> = attempts
        .iter()
        .map(|a| span_attr(a, "server.address"))
        .collect();
    assert!(
        servers
            .iter()
            .all(|s| matches!(s.as_deref(), Some("b0" | "b1")))
            && servers[0] != servers[1],
        "the retry went to the other server: {servers:?}"
    );
    assert_eq!(
        span_attr(attempts[1], "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_ne!(
        attempts[1].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(attempts[0].end_time_unix_nano <= attempts[1].start_time_unix_nano);

    // The metrics count what went out.
    let admin = gw.admin_addr().expect("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_call(
            admin,
            HttpVersion::H1,
            http::Request::get("/metrics").body(body("")).expect("req"),
        )
        .await
        .text();
        if m.contains("gateway_trace_spans_exported_total 5\n") {
            assert!(m.contains("gateway_trace_spans_dropped_total 0\n"), "{m}");
            assert!(
                m.contains("gateway_trace_spans_export_failed_total 0\n"),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_a_client_trace_one_is_started_sampled_by_ratio_and_logged() {
    let (collector, otlp) = Collector::spawn().await;
    let (backend, seen) = spawn_backend(0).await;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("access.log");
    let gw = spawn_gateway(&format!(
        "[access_log]\npath = \"{}\"\n{}\n[tracing]\nenabled = true\notlp_endpoint = \"http://{otlp}\"\nexport_delay_ms = 50\nsampling_ratio = 0.0\n",
        log.display(),
        cluster_config(&[format!("{{ address = \"{backend}\" }}")], ""),
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    // No traceparent: a new trace, not sampled at ratio 0.
    let r = http_call(gw.first_addr(), HttpVersion::H2, echo_json(None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An invalid one (uppercase hex) starts a new trace too; its
    // tracestate is dropped with it.
    let mut req = echo_json(Some(&format!(
        "00-{}-{CLIENT_SPAN}-01",
        TRACE.to_uppercase()
    )));
    req.headers_mut()
        .insert("x-check", "invalid".parse().expect("header"));
    let r = http_call(gw.first_addr(), HttpVersion::H2, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A sampled client trace is exported whatever the ratio.
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H2,
        echo_json(Some(&format!("00-{TRACE}-{CLIENT_SPAN}-01"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let tps = seen.lock().expect("lock").clone();
    assert_eq!(tps.len(), 3, "{tps:?}");
    let (new1, _, flags1) = parts(&tps[0]);
    let (new2, _, flags2) = parts(&tps[1]);
    assert_eq!(new1.len(), 32);
    assert_ne!(new1, "0".repeat(32));
    assert_ne!(new1, new2, "each request starts its own trace");
    assert_ne!(
        new2,
        TRACE.to_lowercase(),
        "an invalid parent is not continued"
    );
    assert_eq!(
        (flags1.as_str(), flags2.as_str()),
        ("00", "00"),
        "not sampled at ratio 0"
    );

    // The sampled trace arrives; the unsampled ones never do.
    let spans = collector.wait(&unhex(TRACE), 4).await;
    assert_eq!(spans.len(), 4, "server, 2 transcode, 1 attempt: {spans:#?}");
    // (Spans go out in the order requests end, so theirs would be here.)
    assert_eq!(collector.now(&unhex(&new1)), 0);
    assert_eq!(collector.now(&unhex(&new2)), 0);

    // The access log names each request's trace.
    let text = wait_for_text(&log, TRACE).await;
    for t in [&new1, &new2] {
        assert!(text.contains(&format!("trace={t}")), "{text}");
    }
}

#[tokio::test]
async fn with_tracing_off_the_client_trace_context_passes_untouched() {
    let (backend, seen) = spawn_backend(0).await;
    let gw = traced_gateway(&[&backend], "enabled = false").await;
    let tp = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = http_call(gw.first_addr(), HttpVersion::H1, echo_json(Some(&tp))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http_call(gw.first_addr(), HttpVersion::H1, echo_json(None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(*seen.lock().expect("lock"), [tp, String::new()]);
}

#[tokio::test]
#[ignore = "needs python3 with grpcio (scripts/test.sh installs it)"]
async fn a_native_grpc_call_to_a_grpcio_backend_carries_the_attempt_span() {
    let (collector, otlp) = Collector::spawn().await;
    let py = spawn_py_backend().await;
    let gw = traced_gateway(
        &[&py.addr.to_string()],
        &format!("enabled = true\notlp_endpoint = \"http://{otlp}\"\nexport_delay_ms = 50"),
    )
    .await;
    let mut echo =
        sample_services::echo::echo_client::EchoClient::new(channel(gw.first_addr()).await);
    let mut req = tonic::Request::new(sample_services::echo::EchoRequest {
        message: "traceparent".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .expect("metadata"),
    );
    let seen = echo.unary(req).await.expect("call").into_inner().message;
    let (trace, parent, flags) = parts(&seen);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));

    let spans = collector.wait(&unhex(TRACE), 2).await;
    assert_eq!(spans.len(), 2, "server and one attempt: {spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("server span");
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("attempt span");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(
        hex(&attempt.span_id),
        parent,
        "the grpcio server's parent is the attempt span"
    );
    assert_eq!(
        span_attr(server, "gateway.protocol").as_deref(),
        Some("grpc")
    );
    assert_eq!(span_attr(server, "rpc.method").as_deref(), Some("Unary"));
    assert_eq!(
        span_attr(attempt, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
}
