//! The load scenarios and their clients: gRPC over tonic channels (HTTP/2), JSON over hyper
//! HTTP/1.1 keep-alive connections.
//!
//! Every call is checked (status, sizes, message counts), so a fast stream of errors never
//! passes for throughput: failures are counted apart and shown in the table.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::ValueEnum;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use sample_services::{
    echo::{EchoRequest, echo_client::EchoClient},
    library::{AllTypes, WatchRequest, library_service_client::LibraryServiceClient},
};
use serde::Serialize;
use tokio::{
    net::TcpStream,
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::{
    load::{self, Recorder, Sample, Window, timed},
    targets::TargetKind,
};

/// TCP connect (+ HTTP/2 handshake) timeout for load connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JSON response body read.
const MAX_JSON_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Payload of `grpc-unary-64b` and `grpc-bidi-msgs` messages, each way.
const SMALL_PAYLOAD_BYTES: usize = 64;
/// Payload of `grpc-unary-16k`, each way.
const LARGE_PAYLOAD_BYTES: usize = 16 * 1024;
/// Messages per `json-stream-ndjson` call.
const STREAM_MESSAGES: i32 = 100;
/// `json-unary-small`'s path and body (the default JSON route of Echo/Unary).
const ECHO_UNARY_PATH: &str = "/sample.echo.v1.Echo/Unary";
const SMALL_JSON_BODY: &str = r#"{"message":"hello"}"#;
/// `json-unary-nested`'s path (`google.api.http` rule of LibraryService.EchoTypes).
const ECHO_TYPES_PATH: &str = "/v1/types:echo";
/// Books in `json-unary-nested`'s body (about 1.2 KiB in all).
const NESTED_BOOKS: usize = 4;
/// Books in `json-unary-nested-16k`'s body (16,458 B in all).
const NESTED_16K_BOOKS: usize = 86;
/// `json-stream-ndjson`'s path (`google.api.http` rule of LibraryService.Watch).
const WATCH_PATH: &str = "/v1/shelves/1:watch?count=100&intervalMs=0";

/// A load scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub(crate) enum Scenario {
    /// Unary gRPC Echo/Unary, 64-byte payload each way.
    #[value(name = "grpc-unary-64b")]
    #[serde(rename = "grpc-unary-64b")]
    GrpcUnary64b,
    /// Unary gRPC Echo/Unary, 16 KiB payload each way.
    #[value(name = "grpc-unary-16k")]
    #[serde(rename = "grpc-unary-16k")]
    GrpcUnary16k,
    /// Echo/BidiStream ping-pong: one message each way per round trip.
    #[value(name = "grpc-bidi-msgs")]
    #[serde(rename = "grpc-bidi-msgs")]
    GrpcBidiMsgs,
    /// Echo/BidiStream with `--bidi-window` messages in flight per stream, one reply each.
    #[value(name = "grpc-bidi-pipelined")]
    #[serde(rename = "grpc-bidi-pipelined")]
    GrpcBidiPipelined,
    /// POST /sample.echo.v1.Echo/Unary `{"message":"hello"}` over HTTP/1.1.
    #[value(name = "json-unary-small")]
    #[serde(rename = "json-unary-small")]
    JsonUnarySmall,
    /// POST /v1/types:echo with ~1 KiB of nested and repeated fields over HTTP/1.1.
    #[value(name = "json-unary-nested")]
    #[serde(rename = "json-unary-nested")]
    JsonUnaryNested,
    /// The same call with ~16 KiB of the same kinds of fields (more books).
    #[value(name = "json-unary-nested-16k")]
    #[serde(rename = "json-unary-nested-16k")]
    JsonUnaryNested16k,
    /// GET /v1/shelves/1:watch?count=100&intervalMs=0 as NDJSON over HTTP/1.1.
    #[value(name = "json-stream-ndjson")]
    #[serde(rename = "json-stream-ndjson")]
    JsonStreamNdjson,
}

/// What a rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unit {
    /// Unary calls.
    Req,
    /// Streamed messages (bidi: round trips, one message each way).
    Msg,
}

impl Unit {
    /// Short name for the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Req => "req",
            Self::Msg => "msg",
        }
    }
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub(crate) const ALL: [Self; 8] = [
        Self::GrpcUnary64b,
        Self::GrpcUnary16k,
        Self::GrpcBidiMsgs,
        Self::GrpcBidiPipelined,
        Self::JsonUnarySmall,
        Self::JsonUnaryNested,
        Self::JsonUnaryNested16k,
        Self::JsonStreamNdjson,
    ];

    /// Name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::GrpcUnary64b => "grpc-unary-64b",
            Self::GrpcUnary16k => "grpc-unary-16k",
            Self::GrpcBidiMsgs => "grpc-bidi-msgs",
            Self::GrpcBidiPipelined => "grpc-bidi-pipelined",
            Self::JsonUnarySmall => "json-unary-small",
            Self::JsonUnaryNested => "json-unary-nested",
            Self::JsonUnaryNested16k => "json-unary-nested-16k",
            Self::JsonStreamNdjson => "json-stream-ndjson",
        }
    }

    /// What the rate counts.
    pub(crate) fn unit(self) -> Unit {
        match self {
            Self::GrpcBidiMsgs | Self::GrpcBidiPipelined | Self::JsonStreamNdjson => Unit::Msg,
            _ => Unit::Req,
        }
    }

    /// True when grpc-gateway (built from the same `google.api.http` rules) serves the
    /// scenario's route: the LibraryService ones (Echo/Unary has no REST rule).
    pub(crate) fn grpc_gateway_serves(self) -> bool {
        matches!(
            self,
            Self::JsonUnaryNested | Self::JsonUnaryNested16k | Self::JsonStreamNdjson
        )
    }

    /// True when clients speak gRPC to every target (so HAProxy and nginx can run it too);
    /// false for JSON scenarios, whose direct baseline is the same call in gRPC.
    pub(crate) fn is_grpc(self) -> bool {
        matches!(
            self,
            Self::GrpcUnary64b | Self::GrpcUnary16k | Self::GrpcBidiMsgs | Self::GrpcBidiPipelined
        )
    }
}

/// How much load, and for how long.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LoadParams {
    /// HTTP/2 connections per gRPC run.
    pub(crate) connections: usize,
    /// Concurrent calls (or bidi streams) per HTTP/2 connection in gRPC scenarios.
    pub(crate) streams: usize,
    /// HTTP/1.1 connections (one sequential worker each) in JSON scenarios, one row per
    /// count; the direct gRPC baseline runs as many concurrent calls over `connections`
    /// HTTP/2 connections.
    pub(crate) json_connections: Vec<usize>,
    /// Messages in flight per stream in `grpc-bidi-pipelined`.
    pub(crate) bidi_window: usize,
    /// Warm-up before each measured window.
    #[serde(serialize_with = "as_secs")]
    pub(crate) warmup: Duration,
    /// Measured window.
    #[serde(serialize_with = "as_secs")]
    pub(crate) duration: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Request bodies and messages built once.
pub(crate) struct Payloads {
    /// `json-unary-nested`'s body.
    nested: Nested,
    /// `json-unary-nested-16k`'s body.
    nested_16k: Nested,
}

/// One EchoTypes body, as JSON and as the same message in protobuf (for the direct baseline).
struct Nested {
    json: Bytes,
    proto: AllTypes,
}

impl Payloads {
    /// Builds the nested messages from their JSON through the sample descriptors, so the
    /// gRPC baseline sends exactly what the JSON client sends.
    pub(crate) fn new() -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(sample_services::FILE_DESCRIPTOR_SET)
            .context("decode the sample descriptor set")?;
        let descriptor = pool
            .get_message_by_name("sample.library.v1.AllTypes")
            .context("sample.library.v1.AllTypes missing from the sample descriptors")?;
        let nested = |books| -> anyhow::Result<Nested> {
            let json = nested_json(books);
            let mut deserializer = serde_json::Deserializer::from_str(&json);
            let dynamic = DynamicMessage::deserialize(descriptor.clone(), &mut deserializer)
                .context("the nested JSON body does not fit AllTypes")?;
            let proto = AllTypes::decode(dynamic.encode_to_vec().as_slice())
                .context("re-decode AllTypes")?;
            Ok(Nested {
                json: Bytes::from(json),
                proto,
            })
        };
        Ok(Self {
            nested: nested(NESTED_BOOKS)?,
            nested_16k: nested(NESTED_16K_BOOKS)?,
        })
    }

    /// Size of `json-unary-nested`'s body, bytes.
    pub(crate) fn nested_json_len(&self) -> usize {
        self.nested.json.len()
    }

    /// Size of `json-unary-nested-16k`'s body, bytes.
    pub(crate) fn nested_16k_json_len(&self) -> usize {
        self.nested_16k.json.len()
    }

    /// The EchoTypes body of a nested scenario.
    fn nested_for(&self, scenario: Scenario) -> Option<&Nested> {
        match scenario {
            Scenario::JsonUnaryNested => Some(&self.nested),
            Scenario::JsonUnaryNested16k => Some(&self.nested_16k),
            _ => None,
        }
    }
}

/// A nested EchoTypes body with `books` books (4: 1,216 B; each book adds about 186 B):
/// a nested message, repeated messages, repeated scalars, a map, well-known types and every
/// scalar kind.
fn nested_json(books: usize) -> String {
    let books: Vec<serde_json::Value> = (1..=books)
        .map(|i| {
            serde_json::json!({
                "name": format!("shelves/1/books/{i}"),
                "title": format!("Benchmark volume {i}"),
                "author": "A. N. Author",
                "pages": 100 + i,
                "published": "2001-02-03T04:05:06Z",
                "tags": ["bench", "nested", "repeated"],
                "genre": "SCIENCE",
            })
        })
        .collect();
    serde_json::json!({
        "d": 3.5, "f": 1.25, "i32": -42, "i64": "-9000000000", "u32": 42, "u64": "18000000000",
        "s32": -7, "s64": "-70000000000", "fx32": 7, "fx64": "70000000000",
        "sfx32": -8, "sfx64": "-80000000000", "b": true,
        "s": "a string field of moderate length", "by": "AAECAwQFBgcICQoLDA0ODw==",
        "genre": "FICTION",
        "nested": { "name": "shelves/1", "theme": "science", "bookCount": "4" },
        "books": books,
        "nums": [1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
        "counts": { "alpha": "1", "beta": "2" },
        "ts": "2024-01-02T03:04:05Z",
        "dur": "1.500s",
        "snakeCaseField": "snake",
    })
    .to_string()
}

/// Runs one measured run of `scenario` against `kind` at `addrs` (the backends for direct
/// runs, the proxy's front otherwise); `proxy_pid` is measured. JSON scenarios run
/// `json_connections` clients (gRPC scenarios ignore it).
pub(crate) async fn run(
    scenario: Scenario,
    kind: TargetKind,
    addrs: &[SocketAddr],
    proxy_pid: Option<u32>,
    params: &LoadParams,
    json_connections: Option<usize>,
    payloads: &Payloads,
) -> anyhow::Result<Sample> {
    ensure!(!addrs.is_empty(), "no address to send load to");
    let json_connections = json_connections.unwrap_or(1).max(1);
    let json_over_http1 = !scenario.is_grpc() && kind != TargetKind::Direct;
    let mut workers = JoinSet::new();
    let window;
    if json_over_http1 {
        let mut conns = Vec::with_capacity(json_connections);
        for i in 0..json_connections {
            let addr = addrs[i % addrs.len()];
            conns.push(Http1Conn::connect(addr).await?);
        }
        let call = match scenario {
            Scenario::JsonUnarySmall => JsonCall::Unary {
                path: ECHO_UNARY_PATH,
                body: Bytes::from_static(SMALL_JSON_BODY.as_bytes()),
            },
            Scenario::JsonUnaryNested | Scenario::JsonUnaryNested16k => JsonCall::Unary {
                path: ECHO_TYPES_PATH,
                body: payloads
                    .nested_for(scenario)
                    .map(|n| n.json.clone())
                    .context("no nested body")?,
            },
            Scenario::JsonStreamNdjson => JsonCall::Ndjson {
                path: WATCH_PATH,
                lines: STREAM_MESSAGES as u64,
            },
            _ => bail!("{} is not a JSON scenario", scenario.name()),
        };
        preflight_json(&mut conns[0], &call, scenario, payloads).await?;
        window = Window::after(params.warmup, params.duration);
        for conn in conns {
            spawn_json_worker(&mut workers, window, conn, call.clone());
        }
    } else {
        let channels = channels(addrs, params.connections).await?;
        let concurrency = if scenario.is_grpc() {
            params.connections * params.streams
        } else {
            json_connections
        };
        let call = match scenario {
            Scenario::GrpcUnary64b | Scenario::GrpcBidiMsgs | Scenario::GrpcBidiPipelined => {
                GrpcCall::Echo(echo_request(SMALL_PAYLOAD_BYTES))
            }
            Scenario::GrpcUnary16k => GrpcCall::Echo(echo_request(LARGE_PAYLOAD_BYTES)),
            Scenario::JsonUnarySmall => GrpcCall::Echo(EchoRequest {
                message: "hello".into(),
                ..EchoRequest::default()
            }),
            Scenario::JsonUnaryNested | Scenario::JsonUnaryNested16k => {
                GrpcCall::EchoTypes(Box::new(
                    payloads
                        .nested_for(scenario)
                        .map(|n| n.proto.clone())
                        .context("no nested body")?,
                ))
            }
            Scenario::JsonStreamNdjson => GrpcCall::Watch(WatchRequest {
                parent: "shelves/1".into(),
                count: STREAM_MESSAGES,
                interval_ms: 0,
                ..WatchRequest::default()
            }),
        };
        let bidi = matches!(
            scenario,
            Scenario::GrpcBidiMsgs | Scenario::GrpcBidiPipelined
        );
        let first = channels[0].clone();
        if bidi {
            preflight_bidi(first, &call).await?;
        } else {
            timed(grpc_call(first, &call)).await.context("first call")?;
        }
        window = Window::after(params.warmup, params.duration);
        for i in 0..concurrency {
            let channel = channels[i % channels.len()].clone();
            if scenario == Scenario::GrpcBidiPipelined {
                if let GrpcCall::Echo(request) = &call {
                    spawn_bidi_pipelined_worker(
                        &mut workers,
                        window,
                        channel,
                        request.clone(),
                        params.bidi_window,
                    );
                }
            } else if bidi {
                spawn_bidi_worker(&mut workers, window, channel, call.clone());
            } else {
                let call = Arc::new(call.clone());
                spawn_closed_loop(&mut workers, window, move || {
                    let (channel, call) = (channel.clone(), call.clone());
                    async move { grpc_call(channel, &call).await }
                });
            }
        }
    }
    load::measure(window, workers, proxy_pid).await
}

/// A worker that calls `call` back to back until the window closes.
fn spawn_closed_loop<F, Fut>(workers: &mut JoinSet<Recorder>, window: Window, mut call: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    workers.spawn(async move {
        let mut recorder = Recorder::new(window);
        while !recorder.done() {
            let started = Instant::now();
            let outcome = timed(call()).await;
            recorder.record(started, outcome).await;
        }
        recorder
    });
}

// === gRPC ===

/// `connections` h2c channels, spread over `addrs` round robin; each is one HTTP/2 connection.
pub(crate) async fn channels(
    addrs: &[SocketAddr],
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(connections);
    for i in 0..connections.max(1) {
        let addr = addrs[i % addrs.len()];
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .context("endpoint URI")?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect (HTTP/2) to {addr}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// An Echo request with `bytes` of payload that asks for `bytes` back.
fn echo_request(bytes: usize) -> EchoRequest {
    EchoRequest {
        payload: vec![b'x'; bytes],
        response_bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        ..EchoRequest::default()
    }
}

/// One gRPC call kind with its request.
#[derive(Clone)]
enum GrpcCall {
    /// Echo/Unary (or, in the bidi scenario, each bidi message).
    Echo(EchoRequest),
    /// LibraryService/EchoTypes.
    EchoTypes(Box<AllTypes>),
    /// LibraryService/Watch, every message read.
    Watch(WatchRequest),
}

/// Makes one call and checks the answer; returns the units it counts for.
async fn grpc_call(channel: Channel, call: &GrpcCall) -> anyhow::Result<u64> {
    match call {
        GrpcCall::Echo(request) => {
            let response = EchoClient::new(channel)
                .unary(request.clone())
                .await
                .context("Echo/Unary")?
                .into_inner();
            ensure!(
                response.payload.len() == request.response_bytes as usize
                    && response.message == request.message,
                "Echo/Unary answered {} payload bytes, asked for {}",
                response.payload.len(),
                request.response_bytes
            );
            Ok(1)
        }
        GrpcCall::EchoTypes(message) => {
            let response = LibraryServiceClient::new(channel)
                .echo_types(AllTypes::clone(message))
                .await
                .context("LibraryService/EchoTypes")?
                .into_inner();
            ensure!(
                response.books.len() == message.books.len(),
                "EchoTypes answered another message"
            );
            Ok(1)
        }
        GrpcCall::Watch(request) => {
            let mut stream = LibraryServiceClient::new(channel)
                .watch(request.clone())
                .await
                .context("LibraryService/Watch")?
                .into_inner();
            let mut messages = 0u64;
            while stream.message().await.context("Watch stream")?.is_some() {
                messages += 1;
            }
            ensure!(
                messages == u64::try_from(request.count).unwrap_or(0),
                "Watch sent {messages} messages, asked for {}",
                request.count
            );
            Ok(messages)
        }
    }
}

/// An open Echo/BidiStream: send one message, read one reply.
struct BidiStream {
    requests: mpsc::Sender<EchoRequest>,
    responses: tonic::Streaming<sample_services::echo::EchoResponse>,
}

impl BidiStream {
    /// Opens a stream; its first message (`first`) is queued before the call, so a proxy
    /// that waits for request data before answering headers does not deadlock it.
    async fn open(channel: Channel, first: EchoRequest) -> anyhow::Result<Self> {
        let (requests, rx) = mpsc::channel(1);
        requests
            .send(first)
            .await
            .context("queue the first bidi message")?;
        let responses = EchoClient::new(channel)
            .bidi_stream(ReceiverStream::new(rx))
            .await
            .context("open Echo/BidiStream")?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    /// Reads the reply to the message sent last.
    async fn reply(&mut self, expected_bytes: usize) -> anyhow::Result<u64> {
        let reply = self
            .responses
            .message()
            .await
            .context("Echo/BidiStream reply")?
            .context("Echo/BidiStream ended early")?;
        ensure!(
            reply.payload.len() == expected_bytes,
            "bidi reply had {} payload bytes, expected {expected_bytes}",
            reply.payload.len()
        );
        Ok(1)
    }

    /// Sends the next message.
    async fn send(&mut self, request: EchoRequest) -> anyhow::Result<()> {
        self.requests
            .send(request)
            .await
            .context("Echo/BidiStream request stream closed")
    }
}

async fn preflight_bidi(channel: Channel, call: &GrpcCall) -> anyhow::Result<()> {
    let GrpcCall::Echo(request) = call else {
        bail!("bidi needs an Echo request");
    };
    let expected = request.response_bytes as usize;
    timed(async {
        let mut stream = BidiStream::open(channel, request.clone()).await?;
        stream.reply(expected).await?;
        stream.send(request.clone()).await?;
        stream.reply(expected).await
    })
    .await
    .context("first bidi round trips")?;
    Ok(())
}

/// A worker that keeps one bidi stream open and ping-pongs on it; each round trip (one message
/// each way) is one unit, its latency the round trip. A broken stream is reopened.
fn spawn_bidi_worker(
    workers: &mut JoinSet<Recorder>,
    window: Window,
    channel: Channel,
    call: GrpcCall,
) {
    workers.spawn(async move {
        let mut recorder = Recorder::new(window);
        let GrpcCall::Echo(request) = call else {
            recorder
                .record(Instant::now(), Err(anyhow::anyhow!("bidi needs Echo")))
                .await;
            return recorder;
        };
        let expected = request.response_bytes as usize;
        let mut stream: Option<BidiStream> = None;
        while !recorder.done() {
            let started = Instant::now();
            let outcome = timed(async {
                match stream.as_mut() {
                    Some(open) => open.send(request.clone()).await?,
                    None => {
                        stream = Some(BidiStream::open(channel.clone(), request.clone()).await?)
                    }
                }
                match stream.as_mut() {
                    Some(open) => open.reply(expected).await,
                    None => bail!("bidi stream not open"),
                }
            })
            .await;
            if outcome.is_err() {
                stream = None;
            }
            recorder.record(started, outcome).await;
        }
        recorder
    });
}

/// A worker that keeps one bidi stream open with `depth` messages in flight: a sender queues
/// a message whenever fewer than `depth` await their reply; each reply is one unit, its latency
/// measured from when its request was queued. At the window's end the sender half-closes and
/// the stream ends; a broken stream is reopened.
fn spawn_bidi_pipelined_worker(
    workers: &mut JoinSet<Recorder>,
    window: Window,
    channel: Channel,
    request: EchoRequest,
    depth: usize,
) {
    workers.spawn(async move {
        let mut recorder = Recorder::new(window);
        while !recorder.done() {
            let opened = Instant::now();
            let stream =
                pipelined_stream(&mut recorder, window, channel.clone(), &request, depth).await;
            if let Err(error) = stream {
                recorder.record(opened, Err(error)).await;
            }
        }
        recorder
    });
}

/// One pipelined stream, until the window closes or the stream fails.
async fn pipelined_stream(
    recorder: &mut Recorder,
    window: Window,
    channel: Channel,
    request: &EchoRequest,
    depth: usize,
) -> anyhow::Result<()> {
    let expected = request.response_bytes as usize;
    let (requests, rx) = mpsc::channel::<EchoRequest>(depth);
    // When each message in flight was queued: at most `depth` (the first goes before the call,
    // see `BidiStream::open`).
    let (sent_tx, mut sent_rx) = mpsc::channel::<Instant>(depth);
    sent_tx.send(Instant::now()).await.context("queue")?;
    requests.send(request.clone()).await.context("queue")?;
    let mut responses = timed(async {
        Ok(EchoClient::new(channel)
            .bidi_stream(ReceiverStream::new(rx))
            .await
            .context("open Echo/BidiStream")?
            .into_inner())
    })
    .await?;
    let sender = async move {
        while Instant::now() < window.end {
            // Waits while `depth` messages are in flight; fails once the receiver is gone.
            if sent_tx.send(Instant::now()).await.is_err()
                || requests.send(request.clone()).await.is_err()
            {
                break;
            }
        }
        // Dropping `requests` half-closes the stream, and the server ends it.
    };
    let receiver = async move {
        loop {
            let reply =
                timed(async { responses.message().await.context("Echo/BidiStream reply") }).await?;
            let Some(reply) = reply else {
                return Ok(());
            };
            let sent = sent_rx.recv().await.context("a reply to nothing")?;
            ensure!(
                reply.payload.len() == expected,
                "bidi reply had {} payload bytes, expected {expected}",
                reply.payload.len()
            );
            recorder.record(sent, Ok(1)).await;
        }
    };
    let ((), received) = tokio::join!(sender, receiver);
    received
}

// === JSON over HTTP/1.1 ===

/// One JSON call kind.
#[derive(Clone)]
enum JsonCall {
    /// POST `path` with `body`, expect 200 and a JSON body.
    Unary { path: &'static str, body: Bytes },
    /// GET `path`, expect 200 and `lines` NDJSON lines.
    Ndjson { path: &'static str, lines: u64 },
}

/// An HTTP/1.1 keep-alive client connection; its driver task ends with it.
struct Http1Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Http1Conn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let io = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        io.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        let driver = tokio::spawn(async move {
            // The connection ends with an error when the peer goes away; the next send says so.
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).context("host header")?;
        Ok(Self {
            addr,
            host,
            sender,
            driver,
        })
    }

    /// Sends `call`; returns the units it counts for, and the body for unary calls.
    async fn call(&mut self, call: &JsonCall) -> anyhow::Result<(u64, Option<Bytes>)> {
        let (method, path, body) = match call {
            JsonCall::Unary { path, body } => (Method::POST, *path, body.clone()),
            JsonCall::Ndjson { path, .. } => (Method::GET, *path, Bytes::new()),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host.clone());
        if matches!(call, JsonCall::Unary { .. }) {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).context("build request")?;
        self.sender.ready().await.context("connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("{path} via {}", self.addr))?;
        let status = response.status();
        let body = response.into_body();
        if status != StatusCode::OK {
            let text = read_body(body).await.unwrap_or_default();
            bail!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(300)])
            );
        }
        match call {
            JsonCall::Unary { .. } => {
                let body = read_body(body).await?;
                ensure!(!body.is_empty(), "{path}: empty body");
                Ok((1, Some(body)))
            }
            JsonCall::Ndjson { lines, .. } => {
                let got = count_lines(body).await?;
                ensure!(
                    got == *lines,
                    "{path}: {got} NDJSON lines, expected {lines}"
                );
                Ok((got, None))
            }
        }
    }
}

impl Drop for Http1Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn read_body(body: Incoming) -> anyhow::Result<Bytes> {
    Ok(Limited::new(body, MAX_JSON_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("read body: {e}"))?
        .to_bytes())
}

/// Counts newline-terminated lines as the body streams in; a line holding an `"error"` record
/// fails the call.
async fn count_lines(mut body: Incoming) -> anyhow::Result<u64> {
    let mut lines = 0u64;
    let mut last = Bytes::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("read NDJSON body")?;
        if let Ok(data) = frame.into_data() {
            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
            last = data;
        }
    }
    // An error after the stream started is its final record.
    ensure!(
        !last.starts_with(b"{\"error\""),
        "stream ended with {}",
        String::from_utf8_lossy(&last[..last.len().min(300)])
    );
    Ok(lines)
}

/// One call before the load, checked in depth: the nested echo must come back equal.
async fn preflight_json(
    conn: &mut Http1Conn,
    call: &JsonCall,
    scenario: Scenario,
    payloads: &Payloads,
) -> anyhow::Result<()> {
    let (_, body) = timed(conn.call(call)).await.context("first JSON call")?;
    if let Some(body) = body {
        let answer: serde_json::Value =
            serde_json::from_slice(&body).context("the answer is not JSON")?;
        if let Some(nested) = payloads.nested_for(scenario) {
            let sent: serde_json::Value =
                serde_json::from_slice(&nested.json).context("the nested body is not JSON")?;
            if answer != sent {
                eprintln!(
                    "warning: {}: the echoed message differs from the one sent \
                     (mapping differences?):\n  sent: {sent}\n  got:  {answer}",
                    scenario.name()
                );
            }
        } else if answer.get("message").and_then(|m| m.as_str()) != Some("hello") {
            bail!("{}: unexpected answer {answer}", scenario.name());
        }
    }
    Ok(())
}

/// A worker on one HTTP/1.1 connection, sequential calls, reconnecting after a failure.
fn spawn_json_worker(
    workers: &mut JoinSet<Recorder>,
    window: Window,
    conn: Http1Conn,
    call: JsonCall,
) {
    workers.spawn(async move {
        let mut recorder = Recorder::new(window);
        let addr = conn.addr;
        let mut conn = Some(conn);
        while !recorder.done() {
            let started = Instant::now();
            let outcome = timed(async {
                if conn.is_none() {
                    conn = Some(Http1Conn::connect(addr).await?);
                }
                match conn.as_mut() {
                    Some(open) => open.call(&call).await.map(|(units, _)| units),
                    None => bail!("not connected"),
                }
            })
            .await;
            if outcome.is_err() {
                conn = None;
            }
            recorder.record(started, outcome).await;
        }
        recorder
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_bodies_are_about_1_2_and_16_kib_and_fit_all_types() {
        let payloads = Payloads::new().unwrap();
        let len = payloads.nested_json_len();
        assert!((1_100..1_400).contains(&len), "{len} bytes");
        let len = payloads.nested_16k_json_len();
        assert!((15_900..17_000).contains(&len), "{len} bytes");
        assert_eq!(payloads.nested.proto.books.len(), NESTED_BOOKS);
        assert_eq!(payloads.nested_16k.proto.books.len(), NESTED_16K_BOOKS);
        for nested in [&payloads.nested, &payloads.nested_16k] {
            assert_eq!(nested.proto.i64, -9_000_000_000);
            assert_eq!(nested.proto.nums.len(), 10);
        }
    }
}
