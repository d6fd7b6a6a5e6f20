//! Harness for the integration tests: sample backends, a gateway from a
//! TOML snippet, gRPC clients, test certificates and captured logs. Every
//! socket is on 127.0.0.1 with an ephemeral port bound before use.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use gateway::{Gateway, config::GatewayConfig};
pub use sample_services::{SampleServer, ServerOptions, TlsPem};
use tonic::transport::{Channel, Endpoint};

/// A loopback address with an ephemeral port.
pub fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// Starts a sample server (CodenameCreator + Echo + health + reflection).
pub async fn spawn_sample(id: &str) -> SampleServer {
    spawn_sample_with(ServerOptions::new(id)).await
}

/// Starts a sample server with options.
pub async fn spawn_sample_with(opts: ServerOptions) -> SampleServer {
    sample_services::spawn_on(loopback(), opts)
        .await
        .expect("start sample server")
}

/// Starts a gateway from TOML text (listener addresses should be
/// `127.0.0.1:0`).
pub async fn spawn_gateway(toml: &str) -> Gateway {
    capture_logs();
    // The admin API defaults to 127.0.0.1:9901; tests use a free port.
    let toml = if toml.contains("[admin]") {
        toml.to_string()
    } else {
        format!("{toml}\n[admin]\naddress = \"127.0.0.1:0\"\n")
    };
    let cfg = GatewayConfig::from_toml(&toml).unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    Gateway::start(cfg).await.expect("start gateway")
}

/// A config with one cleartext listener `front`, one cluster `backend`
/// over `servers` (names `s0`, `s1`, ...), and one catch-all route, plus
/// `extra` TOML appended (more clusters, routes after the catch-all do not
/// match; put specific routes in `extra_routes_first`).
pub fn simple_config(servers: &[&SampleServer], extra: &str) -> String {
    format!(
        "{}\n[[routes]]\ncluster = \"backend\"\n{extra}",
        base_config(servers)
    )
}

/// Listener `front`, cluster `backend` over `endpoints` (TOML inline
/// tables such as `{ address = "127.0.0.1:1" }`) with `cluster_extra`
/// keys, and a catch-all route to it.
pub fn cluster_config(endpoints: &[String], cluster_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{}]\n{cluster_extra}\n\
         [[routes]]\ncluster = \"backend\"\n",
        endpoints.join(", ")
    )
}

/// Listener `front` and cluster `backend`, no routes.
pub fn base_config(servers: &[&SampleServer]) -> String {
    let eps: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ name = \"{}\", address = \"{}\" }}", s.id, s.addr))
        .collect();
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{}]\n",
        eps.join(", ")
    )
}

/// An h2c channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Reads a text file, or "" when missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits (polling a file, up to 5 s) until `path` contains `needle`;
/// returns the content. The access log is written by a background task.
pub async fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = read(path);
        if text.contains(needle) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Diagnostic log lines captured from every gateway in this process.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global tracing subscriber that keeps what it logs.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    LOGS.get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .unwrap_or_default()
}

/// Waits (up to 5 s) for a log line containing all of `needles`.
pub async fn wait_for_log(needles: &[&str]) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(line.to_string());
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test certificate authority and files in a temporary directory.
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// CA certificate (PEM file).
    pub ca_file: PathBuf,
    /// The server certificate and key, for `localhost` and 127.0.0.1.
    pub server: TlsPem,
    /// Server certificate (PEM file).
    pub cert_file: PathBuf,
    /// Server key (PEM file).
    pub key_file: PathBuf,
    /// CA certificate (PEM text).
    pub ca_pem: Vec<u8>,
    /// A client certificate the CA signed (PEM file), for mutual TLS.
    pub client_cert_file: PathBuf,
    /// Its key (PEM file).
    pub client_key_file: PathBuf,
}

impl TestPki {
    /// A fresh CA and a server certificate it signs.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, data: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).expect("write pem");
            p
        };
        let ca_file = write("ca.pem", &ca_cert.pem());
        let client_key = KeyPair::generate().expect("client key");
        let mut client_params =
            CertificateParams::new(vec!["gateway-client".to_string()]).expect("params");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .expect("client cert");
        let client_cert_file = write("client.pem", &client_cert.pem());
        let client_key_file = write("client.key", &client_key.serialize_pem());
        let cert_file = write("server.pem", &cert.pem());
        let key_file = write("server.key", &key.serialize_pem());
        Self {
            server: TlsPem {
                cert_pem: cert.pem().into_bytes(),
                key_pem: key.serialize_pem().into_bytes(),
            },
            dir,
            ca_pem: ca_cert.pem().into_bytes(),
            ca_file,
            cert_file,
            key_file,
            client_cert_file,
            client_key_file,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `fut` with a time limit, failing the test with `what` on timeout.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Path to a file in the repository (tests run from the `tests` crate).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Result alias for tests.
pub type TestResult = anyhow::Result<()>;

/// Context helper re-export.
pub use anyhow::Context as _;

/// A whole HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status.
    pub status: http::StatusCode,
    /// Version it came over.
    pub version: http::Version,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: bytes::Bytes,
    /// Trailers, if any.
    pub trailers: Option<http::HeaderMap>,
}

impl HttpResponse {
    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as NDJSON: one JSON value per line (panics with the body
    /// text on a line that is not).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let text = self.text();
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {text:?}"))
            })
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text ("" when missing).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// Request body for the HTTP helpers.
pub type ReqBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// A request body of one chunk.
pub fn body(b: impl Into<bytes::Bytes>) -> ReqBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into()).boxed()
}

/// A request body fed chunk by chunk through the returned sender
/// (chunked on HTTP/1.1).
pub fn channel_body() -> (tokio::sync::mpsc::Sender<bytes::Bytes>, ReqBody) {
    use http_body_util::BodyExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)));
    (tx, http_body_util::StreamBody::new(stream).boxed())
}

use tokio_stream::StreamExt as _;

/// An h2c connection to `addr` (hyper's client), for raw HTTP/2 requests
/// on one connection (any path, any headers).
pub async fn h2_sender(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<ReqBody> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// Which HTTP version a helper speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 (keep-alive, chunked bodies).
    H1,
    /// HTTP/2 with prior knowledge (cleartext).
    H2,
}

/// Sends one request on a new connection and returns the response head
/// and its streaming body.
pub async fn http_send(
    addr: SocketAddr,
    v: HttpVersion,
    mut req: http::Request<ReqBody>,
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    if !req.headers().contains_key(http::header::HOST) {
        req.headers_mut()
            .insert(http::header::HOST, addr.to_string().parse().expect("host"));
    }
    match v {
        HttpVersion::H1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h1 response")
        }
        HttpVersion::H2 => {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            req.headers_mut().remove(http::header::HOST);
            let uri = format!(
                "http://{addr}{}",
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            *req.uri_mut() = uri.parse().expect("uri");
            send.send_request(req).await.expect("h2 response")
        }
    }
}

/// Sends one request and reads the whole response.
pub async fn http_call(
    addr: SocketAddr,
    v: HttpVersion,
    req: http::Request<ReqBody>,
) -> HttpResponse {
    use http_body_util::BodyExt;
    let resp = http_send(addr, v, req).await;
    let (parts, b) = resp.into_parts();
    let collected = within(20, "response body", b.collect())
        .await
        .expect("body");
    HttpResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
    }
}

/// Reads a streaming body chunk by chunk, with the time each arrived.
pub async fn timed_chunks(body: hyper::body::Incoming) -> Vec<(std::time::Instant, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = within(20, "next chunk", body.frame()).await {
        let frame = frame.expect("frame");
        // (An HTTP/2 stream may end with an empty DATA frame.)
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            out.push((std::time::Instant::now(), data));
        }
    }
    out
}

/// A JSON request.
pub fn json_request(method: &str, path: &str, json: &str) -> http::Request<ReqBody> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body(json.to_string()))
        .expect("request")
}

/// A Python gRPC server of the tests (`tests/python/*.py`, which print their
/// port on the first line of standard output), killed when dropped: a server
/// of another implementation than ours.
pub struct PyBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: tokio::process::Child,
}

/// Runs `tests/python/<script>` with `args` (standard input kept open, so a
/// script may end when the test does) and waits for its port.
pub async fn spawn_python_server(script: &str, args: &[PathBuf]) -> PyBackend {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new("python3")
        .arg(repo_path(&format!("tests/python/{script}")))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with grpcio and grpcio-tools (scripts/test.sh installs them)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    within(
        30,
        "python server port",
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("read port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script} did not start: {line:?}"));
    PyBackend {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _child: child,
    }
}

/// Runs `tests/python/<script>` with `args` to its end (at most `secs`
/// seconds; killed when the test ends first) and returns the JSON its
/// standard output holds; panics with its output and `context` when it
/// fails. The clients of another implementation than ours.
pub async fn run_python_script(
    script: &str,
    args: &[String],
    secs: u64,
    context: &str,
) -> serde_json::Value {
    let out = within(
        secs,
        script,
        tokio::process::Command::new("python3")
            .arg(repo_path(&format!("tests/python/{script}")))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python3 with grpcio, grpcio-tools and grpcio-status (scripts/test.sh installs them)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({context}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}"))
}

/// The Python grpcio Echo backend (`tests/python/grpcio_echo_server.py`;
/// needs grpcio-status too).
pub async fn spawn_py_backend() -> PyBackend {
    spawn_python_server(
        "grpcio_echo_server.py",
        &[repo_path("sample-services/proto")],
    )
    .await
}
