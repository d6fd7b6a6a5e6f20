//! Front-end policy and plumbing: deny rules, captured headers and the
//! access log, TLS on both sides, HTTP/1.1 + h2c on one port, config
//! errors, graceful shutdown.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use futures_util::StreamExt;
use sample_services::{
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
    echo::{EchoRequest, echo_client::EchoClient},
};
use tests::*;
use tonic::{
    Code, Request,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};

fn access_log_toml(path: &std::path::Path, extra: &str) -> String {
    format!("[access_log]\npath = \"{}\"\n{extra}\n", path.display())
}

#[tokio::test]
async fn deny_rule_with_and_without_header_and_capture_in_log() {
    let s = spawn_sample("s0").await;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("access.log");
    let toml = format!(
        "[[listeners]]\nname = \"fe_proxy\"\naddress = \"127.0.0.1:0\"\n\
         deny_unless = [{{ name = \"mysecretpassphrase\", exact = \"abc123\" }}]\n\
         capture_request_headers = [{{ name = \"mysecretpassphrase\", len = 100 }}]\n\
         [[clusters]]\nname = \"be_codenameservers\"\nendpoints = [{{ name = \"codenamesvc1\", address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"be_codenameservers\"\n{}",
        s.addr,
        access_log_toml(&log, "")
    );
    let gw = spawn_gateway(&toml).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);

    let err = client
        .get_codename(NameRequest::default())
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut wrong = Request::new(NameRequest::default());
    wrong
        .metadata_mut()
        .insert("mysecretpassphrase", "nope".parse().expect("v"));
    assert_eq!(
        client.get_codename(wrong).await.expect_err("denied").code(),
        Code::PermissionDenied
    );
    assert_eq!(
        s.stats.requests(),
        0,
        "denied calls never reach the backend"
    );

    let mut ok = Request::new(NameRequest::default());
    ok.metadata_mut()
        .insert("mysecretpassphrase", "abc123".parse().expect("v"));
    client.get_codename(ok).await.expect("allowed");

    let text = wait_for_text(&log, "{abc123}").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let allowed = lines
        .iter()
        .find(|l| l.contains("{abc123}"))
        .expect("captured header in log");
    for part in [
        " fe_proxy be_codenameservers/codenamesvc1 ",
        " 200 ",
        "\"POST /CodenameCreator/GetCodename HTTP/2.0\"",
        // Neither registered nor named by a route here: no method label.
        "grpc-status=0 grpc-method=-",
        "127.0.0.1:",
    ] {
        assert!(allowed.contains(part), "{part:?} missing in {allowed}");
    }
    let denied: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("grpc-status=7"))
        .collect();
    assert_eq!(denied.len(), 2, "{text}");
    assert!(
        denied
            .iter()
            .all(|l| l.contains("PR--") && l.contains("<NOSRV>")),
        "{text}"
    );
    assert!(denied.iter().any(|l| l.contains("{nope}")), "{text}");
}

#[tokio::test]
async fn log_at_start_logs_long_streams_twice_and_json_format() {
    let s = spawn_sample("s0").await;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("access.log");
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\nlog_at_start = true\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\n{}",
        s.addr,
        access_log_toml(&log, "format = \"json\"")
    );
    let gw = spawn_gateway(&toml).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let mut stream = echo
        .server_stream(EchoRequest {
            count: 3,
            interval_ms: 300,
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    stream.next().await.expect("first").expect("ok");
    // The stream is still open, and its start is already logged.
    let text = wait_for_text(&log, "\"phase\":\"start\"").await;
    assert_eq!(text.lines().count(), 1, "{text}");
    let start: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("line")).expect("json line");
    assert_eq!(start["path"], "/sample.echo.v1.Echo/ServerStream");
    assert_eq!(start["grpc_status"], serde_json::Value::Null);
    while let Some(m) = stream.next().await {
        m.expect("ok");
    }
    let text = wait_for_text(&log, "\"phase\":\"end\"").await;
    let end: serde_json::Value =
        serde_json::from_str(text.lines().nth(1).expect("end line")).expect("json");
    assert_eq!(end["grpc_status"], 0);
    assert_eq!(end["status"], 200);
    assert!(end["total_ms"].as_u64().expect("total") >= 500, "{end}");
    assert!(end["bytes"].as_u64().expect("bytes") > 0);
}

#[tokio::test]
async fn tls_front_negotiates_h2_and_http11() {
    let pki = TestPki::new();
    let s = spawn_sample("s0").await;
    let toml = format!(
        "[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\ncluster = \"backend\"\n",
        pki.cert_file.display(),
        pki.key_file.display(),
        s.addr
    );
    let gw = spawn_gateway(&toml).await;
    let addr = gw.first_addr();

    // ALPN as a raw TLS client sees it.
    let ca = std::fs::read(&pki.ca_file).expect("ca");
    for (offer, want) in [
        (vec!["h2", "http/1.1"], "h2"),
        (vec!["http/1.1"], "http/1.1"),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.expect("pem")).expect("root");
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = offer.iter().map(|p| p.as_bytes().to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want.as_bytes()));
    }

    // A real gRPC client over TLS.
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS");
    let r = CodenameCreatorClient::new(channel)
        .get_codename(NameRequest::default())
        .await
        .expect("call");
    assert_eq!(r.metadata().get("x-server-id").expect("id"), "s0");
}

fn tls_upstream_toml(s: &SampleServer, ca_file: &std::path::Path) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"secure\"\nendpoints = [{{ name = \"tls-server\", address = \"{}\" }}]\n\
         tls = {{ ca_file = \"{}\", server_name = \"localhost\" }}\n[[routes]]\ncluster = \"secure\"\n",
        s.addr,
        ca_file.display()
    )
}

#[tokio::test]
async fn tls_upstream_verified_with_ca_file() {
    let pki = TestPki::new();
    let mut opts = ServerOptions::new("tls-backend");
    opts.tls = Some(pki.server.clone());
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&tls_upstream_toml(&s, &pki.ca_file)).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    for _ in 0..3 {
        let r = echo
            .unary(EchoRequest {
                message: "over tls".into(),
                ..Default::default()
            })
            .await
            .expect("call");
        assert_eq!(r.into_inner().server_id, "tls-backend");
    }
}

#[tokio::test]
async fn tls_upstream_wrong_ca_is_unavailable_and_logged() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let mut opts = ServerOptions::new("tls-backend");
    opts.tls = Some(pki.server.clone());
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&tls_upstream_toml(&s, &other.ca_file)).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let err = echo
        .unary(EchoRequest::default())
        .await
        .expect_err("bad CA");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains("certificate"),
        "no internal detail to the client"
    );
    let line = wait_for_log(&[
        "Upstream connect failed",
        "tls-server",
        "invalid peer certificate",
    ])
    .await;
    assert!(line.is_some(), "log should say why:\n{}", logs());
    assert_eq!(s.stats.requests(), 0);
}

#[tokio::test]
async fn http11_and_h2c_share_the_cleartext_port() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let addr = gw.first_addr();
    // HTTP/1.1: a plain request gets an HTTP answer (JSON error shape).
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = http::Request::get("/nothing/here")
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("h1 response");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    // h2c prior knowledge on the same port.
    let r = CodenameCreatorClient::new(channel(addr).await)
        .get_codename(NameRequest::default())
        .await;
    assert!(r.is_ok());
}

#[tokio::test]
async fn invalid_configs_are_rejected_with_a_clear_message() {
    let cases = [
        (
            "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"ghost\"\n",
            "routes[0].cluster: unknown cluster `ghost`",
        ),
        (
            "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n[[clusters]]\nname = \"c\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\ntls = { ca_file = \"/no/such/ca.pem\" }\n",
            "clusters[0].tls.ca_file: cannot read `/no/such/ca.pem`",
        ),
        (
            "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n[[clusters]]\nname = \"c\"\nendpoints = [{ address = \"nocolon\" }]\n",
            "clusters[0].endpoints[0].address: `nocolon` is not host:port",
        ),
        (
            "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\ndeny_unless = [{ name = \"x\", exact = \"1\", prefix = \"2\" }]\n",
            "listeners[0].deny_unless[0]: give exactly one of `exact`, `prefix` or `present`",
        ),
        (
            "[[listeners]]\nname = \"a\"\nadress = \"127.0.0.1:0\"\n",
            "unknown field `adress`",
        ),
    ];
    for (toml, want) in cases {
        let err = match gateway::config::GatewayConfig::from_toml(toml) {
            Err(e) => e.to_string(),
            Ok(cfg) => match gateway::Gateway::start(cfg).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted: {toml}"),
            },
        };
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // The shipped examples are valid.
    for file in ["examples/haproxy-demo.toml", "examples/minimal.toml"] {
        gateway::config::GatewayConfig::load(&repo_path(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_calls_finish() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "drain_timeout_ms = 5000\n{}",
        simple_config(&[&s], "")
    ))
    .await;
    let addr = gw.first_addr();
    let mut echo = EchoClient::new(channel(addr).await);
    let call = tokio::spawn(async move {
        echo.slow(EchoRequest {
            interval_ms: 500,
            message: "slow".into(),
            ..Default::default()
        })
        .await
    });
    within(
        5,
        "call in flight",
        s.stats.wait_until(|s| s.in_flight() == 1),
    )
    .await;
    let shutdown = tokio::spawn(gw.shutdown());
    let r = within(5, "in-flight call", call)
        .await
        .expect("join")
        .expect("finishes OK");
    assert_eq!(r.into_inner().message, "slow");
    within(5, "shutdown completes", shutdown)
        .await
        .expect("join");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn debug_headers_switch_logs_request_and_response_headers_redacting_secrets() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "{}\n[access_log]\ndebug_headers = true\n",
        simple_config(&[&s], "")
    ))
    .await;
    let mut req = Request::new(NameRequest::default());
    req.metadata_mut()
        .insert("x-debug-marker", "marker-4711".parse().expect("v"));
    req.metadata_mut()
        .insert("authorization", "Bearer topsecret".parse().expect("v"));
    CodenameCreatorClient::new(channel(gw.first_addr()).await)
        .get_codename(req)
        .await
        .expect("call");
    let line = wait_for_log(&["request headers", "marker-4711"])
        .await
        .expect("request headers logged");
    assert!(
        line.contains("authorization: <redacted>") && !line.contains("topsecret"),
        "{line}"
    );
    assert!(
        wait_for_log(&["response headers", "x-server-id: s0"])
            .await
            .is_some(),
        "{}",
        logs()
    );
    assert!(
        wait_for_log(&["response trailers", "grpc-status: 0"])
            .await
            .is_some(),
        "{}",
        logs()
    );
}

#[tokio::test]
async fn the_demo_config_serves_codenames_round_robin() {
    let s1 = spawn_sample("codenamesvc1").await;
    let s2 = spawn_sample("codenamesvc2").await;
    let cfg = gateway::demo::config(loopback(), s1.addr, s2.addr).expect("demo config is valid");
    let gw = gateway::Gateway::start(cfg)
        .await
        .expect("demo gateway starts");
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = client
            .get_codename(NameRequest::default())
            .await
            .expect("call");
        ids.push(
            r.metadata()
                .get("x-server-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        ids.contains(&"codenamesvc1".to_string()) && ids.contains(&"codenamesvc2".to_string()),
        "{ids:?}"
    );
}

/// A plain HTTP/1.1 web app: answers `web <method> <path> host=<host> body=<body>`
/// and counts the connections it accepted.
async fn web_app() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let (parts, b) = req.into_parts();
                        let body = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let host = parts
                            .headers
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let text = format!(
                            "web {} {} host={host} version={:?} body={}",
                            parts.method,
                            parts.uri,
                            parts.version,
                            String::from_utf8_lossy(&body)
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(text)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn plain_http_cluster_serves_a_web_app_behind_the_same_front() {
    let s = spawn_sample("grpc-backend").await;
    let (web, conns) = web_app().await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[clusters]]\nname = \"web\"\nprotocol = \"http1\"\nendpoints = [{{ address = \"{web}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\nmatch = {{ headers = [{{ name = \"content-type\", prefix = \"application/grpc\" }}] }}\n\
         [[routes]]\ncluster = \"backend\"\nmatch = {{ path_prefix = \"/CodenameCreator/\" }}\n\
         [[routes]]\ncluster = \"web\"\n",
        s.addr
    );
    let gw = spawn_gateway(&toml).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let a = gw.first_addr();
    // HTTP/1.1 and HTTP/2 callers reach the web app over HTTP/1.1.
    for (v, i) in [
        (HttpVersion::H1, 0),
        (HttpVersion::H2, 1),
        (HttpVersion::H1, 2),
    ] {
        let req = http::Request::post(format!("/app/page?{i}"))
            .header("host", "shop.example")
            .body(body(format!("hello {i}")))
            .expect("req");
        let r = http_call(a, v, req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(
            text.starts_with(&format!("web POST /app/page?{i} ")),
            "{text}"
        );
        assert!(
            text.contains("version=HTTP/1.1") && text.contains(&format!("body=hello {i}")),
            "{text}"
        );
        if v == HttpVersion::H1 {
            assert!(text.contains("host=shop.example"), "{text}");
        }
    }
    // Connections to the web app are reused (keep-alive).
    for _ in 0..5 {
        let r = http_call(
            a,
            HttpVersion::H1,
            http::Request::get("/again").body(body("")).expect("req"),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert!(
        conns.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "{} connections",
        conns.load(std::sync::atomic::Ordering::SeqCst)
    );
    // gRPC and registered JSON methods still go to the gRPC backend.
    let r = CodenameCreatorClient::new(channel(a).await)
        .get_codename(NameRequest::default())
        .await
        .expect("grpc");
    assert_eq!(r.metadata().get("x-server-id").expect("id"), "grpc-backend");
    let r = http_call(
        a,
        HttpVersion::H1,
        json_request("POST", "/CodenameCreator/GetCodename", "{}"),
    )
    .await;
    assert_eq!(r.header("x-server-id"), "grpc-backend", "{}", r.text());
}

/// A web app that sends a response head and one chunk, then closes the
/// connection without the last chunk.
async fn broken_web_app() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                          transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
                    )
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                // Dropped: the response is cut short.
            });
        }
    });
    addr
}

#[tokio::test]
async fn plain_http_response_cut_short_upstream_is_an_error_downstream_not_a_short_body() {
    use http_body_util::BodyExt;
    let web = broken_web_app().await;
    let gw = spawn_gateway(&format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"web\"\nprotocol = \"http1\"\nendpoints = [{{ address = \"{web}\" }}]\n\
         [[routes]]\ncluster = \"web\"\n"
    ))
    .await;
    for v in [HttpVersion::H1, HttpVersion::H2] {
        let req = http::Request::get("/page")
            .header("host", "shop.example")
            .header("te", "trailers")
            .body(body(""))
            .expect("req");
        let resp = http_send(gw.first_addr(), v, req).await;
        assert_eq!(resp.status(), 200, "{v:?}");
        let mut b = resp.into_body();
        let mut data = Vec::new();
        let mut outcome = Ok(());
        while let Some(frame) = within(20, "next frame", b.frame()).await {
            match frame {
                Ok(f) => {
                    if let Some(t) = f.trailers_ref() {
                        panic!("{v:?}: the cut-short body ended with trailers {t:?}");
                    }
                    if let Ok(d) = f.into_data() {
                        data.extend_from_slice(&d);
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        assert!(
            outcome.is_err(),
            "{v:?}: a body cut short upstream ended cleanly downstream after {:?}",
            String::from_utf8_lossy(&data)
        );
        assert!(data.len() <= 5, "{v:?}: {data:?}");
    }
    // The gateway serves on.
    let r = http_send(
        gw.first_addr(),
        HttpVersion::H2,
        http::Request::get("/x").body(body("")).expect("req"),
    )
    .await;
    assert_eq!(r.status(), 200);
}
