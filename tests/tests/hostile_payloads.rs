//! Hostile payloads over real sockets: inputs that used to abort the whole
//! gateway (a stack overflow is not a panic: no task boundary contains it).
//! A JSON gateway in front of a raw HTTP/2 backend that answers whatever
//! bytes a test asks for (`x-reply` metadata), on the recursive schema of
//! descriptors/tests/protos/example/hostile/v1/hostile.proto:
//!
//! - a REST GET whose query string nests `child.` 5,000 levels -> 400, never
//!   sent upstream;
//! - a reply holding `google.protobuf.Any` nested 20,000 deep, or a `Struct`
//!   nested 20,000 deep -> a 500 JSON error, fast, without a memory balloon;
//! - a `grpc-status-details-bin` nested deep -> the status without details;
//!
//! and after each, the gateway still answers the next call.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gateway::Gateway;
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tests::*;
use tokio::net::TcpListener;

const HOSTILE_PROTO: &str =
    include_str!("../../descriptors/tests/protos/example/hostile/v1/hostile.proto");
const NODE_URL: &str = "type.googleapis.com/example.hostile.v1.Node";

// === wire builders (as in descriptors/tests/it/hostile.rs) ===

/// A message under construction, bytes reversed: wrapping it in one more
/// level is an append, so a 20,000-level message costs O(size) to build.
struct Rev(Vec<u8>);

impl Rev {
    fn new(inner: &[u8]) -> Self {
        Self(inner.iter().rev().copied().collect())
    }

    fn prepend(&mut self, bytes: &[u8]) {
        self.0.extend(bytes.iter().rev());
    }

    fn wrap(&mut self, number: u32) {
        let mut head = Vec::new();
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut head,
        );
        prost::encoding::encode_varint(self.0.len() as u64, &mut head);
        self.prepend(&head);
    }

    fn prepend_field(&mut self, number: u32, value: &[u8]) {
        let mut field = Vec::new();
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut field,
        );
        prost::encoding::encode_varint(value.len() as u64, &mut field);
        field.extend_from_slice(value);
        self.prepend(&field);
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_iter().rev().collect()
    }
}

/// `Node { any: Any(Node { any: ... Node { name: "leaf" } }) }`.
fn nested_any(levels: usize) -> Vec<u8> {
    let mut rev = Rev::new(b"\x12\x04leaf");
    for _ in 0..levels {
        rev.wrap(2);
        rev.prepend_field(1, NODE_URL.as_bytes());
        rev.wrap(8);
    }
    rev.finish()
}

/// `Node { data: {"a": {"a": ... {}}} }`: a Struct nested `levels` deep.
fn nested_struct(levels: usize) -> Vec<u8> {
    let mut rev = Rev::new(b"");
    for _ in 0..levels {
        rev.wrap(5); // Value.struct_value
        rev.wrap(2); // entry.value
        rev.prepend_field(1, b"a"); // entry.key
        rev.wrap(1); // Struct.fields
    }
    rev.wrap(9); // Node.data
    rev.finish()
}

/// A `google.rpc.Status { code: INTERNAL, details: [Any(detail)] }`.
fn status_with_detail(detail: &[u8]) -> Vec<u8> {
    let mut rev = Rev::new(detail);
    rev.wrap(2);
    rev.prepend_field(1, NODE_URL.as_bytes());
    rev.wrap(3);
    rev.prepend(b"\x08\x0d");
    rev.finish()
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

/// Standard base64 with padding (what `-bin` metadata carries).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// === the raw backend ===

type Body = BoxBody<Bytes, Infallible>;

/// What the backend answers, chosen by the request's `x-reply` metadata.
fn reply(kind: &str) -> http::Response<Body> {
    let grpc = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let message = match kind {
        "deep-any" => nested_any(20_000),
        "deep-struct" => nested_struct(20_000),
        "deep-details" => {
            let details = base64(&status_with_detail(&nested_any(2_000)));
            return grpc
                .header("grpc-status", "13")
                .header("grpc-message", "deep details")
                .header("grpc-status-details-bin", details)
                .body(http_body_util::Empty::new().boxed())
                .expect("response");
        }
        _ => b"\x12\x02ok".to_vec(), // Node { name: "ok" }
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(http_body::Frame::data(grpc_frame(&message))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    grpc.body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .expect("response")
}

/// An h2c server answering every request with [`reply`]; counts requests.
async fn spawn_raw_backend() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let kind = req
                        .headers()
                        .get("x-reply")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("ok")
                        .to_owned();
                    async move { Ok::<_, Infallible>(reply(&kind)) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

/// The gateway with the hostile schema preloaded, in front of the backend.
async fn hostile_gateway(backend: &str) -> (Gateway, tempfile::TempDir) {
    let set = descriptors::compile_protos(&[descriptors::SourceFile {
        path: "example/hostile/v1/hostile.proto".to_owned(),
        source: HOSTILE_PROTO.to_owned(),
    }])
    .expect("compile hostile.proto");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("hostile.pb");
    std::fs::write(&file, set).expect("write");
    let gw = spawn_gateway(&format!(
        "[registry]\npreload = [\"{}\"]\n{}",
        file.display(),
        cluster_config(&[format!("{{ address = \"{backend}\" }}")], "")
    ))
    .await;
    (gw, dir)
}

fn get(path_and_query: &str, reply: &str) -> http::Request<ReqBody> {
    http::Request::get(path_and_query)
        .header("x-reply", reply)
        .body(body(Bytes::new()))
        .expect("request")
}

/// Peak resident memory of this process (each nextest test is a process).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The gateway answers an ordinary call.
async fn still_answers(gw: &Gateway) {
    let r = http_call(gw.first_addr(), HttpVersion::H1, get("/v1/nodes/n1", "ok")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "ok");
}

#[tokio::test]
async fn a_query_chain_of_5000_levels_is_400_and_never_sent() {
    let (backend, requests) = spawn_raw_backend().await;
    let (gw, _dir) = hostile_gateway(&backend).await;
    still_answers(&gw).await;
    let before = requests.load(Ordering::SeqCst);

    let query = format!("{}name=x", "child.".repeat(5_000));
    assert!(query.len() > 30_000);
    for version in [HttpVersion::H1, HttpVersion::H2] {
        let started = Instant::now();
        let r = http_call(
            gw.first_addr(),
            version,
            get(&format!("/v1/nodes/n1?{query}"), "ok"),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let json = r.json();
        assert_eq!(json["code"], 3, "{json}");
        assert!(
            json["message"]
                .as_str()
                .unwrap_or_default()
                .contains("deeper than"),
            "{json}"
        );
        assert!(r.body.len() < 1_000, "the 30 KB name is not echoed back");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "nothing went upstream"
    );
    still_answers(&gw).await;
}

#[tokio::test]
async fn replies_nested_20000_deep_are_a_clean_500_without_a_balloon() {
    let (backend, _) = spawn_raw_backend().await;
    let (gw, _dir) = hostile_gateway(&backend).await;
    still_answers(&gw).await;
    assert!(nested_any(20_000).len() > 900_000);
    let peak_before = peak_rss_kib();

    for kind in ["deep-any", "deep-struct"] {
        for version in [HttpVersion::H1, HttpVersion::H2] {
            let started = Instant::now();
            let r = http_call(gw.first_addr(), version, get("/v1/nodes/n1", kind)).await;
            assert_eq!(r.status, 500, "{kind}: {}", r.text());
            let json = r.json();
            assert_eq!(json["code"], 13, "{kind}: {json}");
            assert!(
                json["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("upstream reply"),
                "{kind}: {json}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{kind}: {:?}",
                started.elapsed()
            );
            still_answers(&gw).await;
        }
    }
    // The reply bytes are ~1 MB; rendering them used to take 9 GB.
    let grown_mib = peak_rss_kib().saturating_sub(peak_before) / 1024;
    assert!(grown_mib < 200, "peak RSS grew by {grown_mib} MiB");
}

#[tokio::test]
async fn deep_status_details_leave_the_status_without_details() {
    let (backend, _) = spawn_raw_backend().await;
    let (gw, _dir) = hostile_gateway(&backend).await;
    for version in [HttpVersion::H1, HttpVersion::H2] {
        let started = Instant::now();
        let r = http_call(
            gw.first_addr(),
            version,
            get("/v1/nodes/n1", "deep-details"),
        )
        .await;
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(
            r.json(),
            serde_json::json!({ "code": 13, "message": "deep details", "details": [] })
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        still_answers(&gw).await;
    }
}
