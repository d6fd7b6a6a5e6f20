//! The admin listener's own limits, over real sockets: `/healthz` says
//! "draining" (503) while the gateway drains, a request head must arrive
//! within `header_read_timeout_ms`, at most `max_connections` connections
//! are served, optional TLS, and at most `max_concurrent_uploads` uploads.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::pem::PemObject;
use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-token";

async fn healthz(admin: std::net::SocketAddr) -> HttpResponse {
    http_call(
        admin,
        HttpVersion::H1,
        http::Request::get("/healthz").body(body("")).expect("req"),
    )
    .await
}

#[tokio::test]
async fn healthz_answers_503_draining_while_the_gateway_drains() {
    let s = spawn_sample("draining").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let admin = gw.admin_addr().expect("admin on");
    let r = healthz(admin).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].clone()),
        (200, "ok".into())
    );
    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    let call = tokio::spawn(async move {
        client
            .slow(EchoRequest {
                interval_ms: 1500,
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = healthz(admin).await;
        if r.status == 503 {
            assert_eq!(r.json(), serde_json::json!({ "status": "draining" }));
            break;
        }
        assert!(Instant::now() < deadline, "healthz still {}", r.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The in-flight call finishes; then the admin listener closes too.
    within(10, "call", call)
        .await
        .expect("join")
        .expect("served during the drain");
    within(10, "shutdown", shutdown).await.expect("join");
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

/// `header_read_timeout_ms` bounds a request head, and how long a
/// connection may stay without a request in progress (before its first
/// byte, between keep-alive requests).
#[tokio::test]
async fn a_request_head_slower_than_header_read_timeout_is_cut() {
    let gw = spawn_gateway(&format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\nheader_read_timeout_ms = 300\n",
        cluster_config(&["{ address = \"127.0.0.1:1\" }".into()], "")
    ))
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.admin_addr().expect("admin"))
        .await
        .expect("connect");
    let t = Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = within(5, "connection closed", tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // A connection that sends nothing at all is closed too, so idle
    // connections cannot hold the connection cap.
    let mut idle = tokio::net::TcpStream::connect(gw.admin_addr().expect("admin"))
        .await
        .expect("connect");
    let t = Instant::now();
    let mut answer = Vec::new();
    let _ = within(5, "idle connection closed", idle.read_to_end(&mut answer)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // And so is a keep-alive connection after its answer.
    let mut kept = tokio::net::TcpStream::connect(gw.admin_addr().expect("admin"))
        .await
        .expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    let mut answer = Vec::new();
    let _ = within(
        5,
        "kept-alive connection closed",
        kept.read_to_end(&mut answer),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_to_be_served() {
    let gw = spawn_gateway(&format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\nmax_connections = 2\n",
        cluster_config(&["{ address = \"127.0.0.1:1\" }".into()], "")
    ))
    .await;
    let admin = gw.admin_addr().expect("admin");
    let first = tokio::net::TcpStream::connect(admin).await.expect("1");
    let _second = tokio::net::TcpStream::connect(admin).await.expect("2");
    let mut third = tokio::net::TcpStream::connect(admin).await.expect("3");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served"
    );
    drop(first);
    let mut answer = Vec::new();
    within(5, "third served", third.read_to_end(&mut answer))
        .await
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn admin_serves_tls_when_configured() {
    let pki = TestPki::new();
    let gw = spawn_gateway(&format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n",
        cluster_config(&["{ address = \"127.0.0.1:1\" }".into()], ""),
        pki.cert_file.display(),
        pki.key_file.display()
    ))
    .await;
    let admin = gw.admin_addr().expect("admin");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pki.ca_pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(admin).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = within(5, "answer", tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    // Cleartext HTTP gets no answer from a TLS listener.
    let mut plain = tokio::net::TcpStream::connect(admin).await.expect("tcp");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = within(5, "plain refused", plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test]
async fn uploads_beyond_max_concurrent_uploads_get_429() {
    let gw = spawn_gateway(&format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nmax_concurrent_uploads = 1\n",
        cluster_config(&["{ address = \"127.0.0.1:1\" }".into()], "")
    ))
    .await;
    let admin = gw.admin_addr().expect("admin");
    let put = |b: ReqBody| {
        http::Request::put("/v1/descriptor-sets/slow")
            .header("content-type", "application/octet-stream")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(b)
            .expect("req")
    };
    // Two uploads whose bodies are still coming: whichever arrives first
    // holds the only place, the other is refused at once.
    let (tx_a, body_a) = channel_body();
    let (tx_b, body_b) = channel_body();
    for tx in [&tx_a, &tx_b] {
        tx.send(bytes::Bytes::from_static(b"\x0a"))
            .await
            .expect("chunk");
    }
    let mut a = tokio::spawn(http_call(admin, HttpVersion::H1, put(body_a)));
    let mut b = tokio::spawn(http_call(admin, HttpVersion::H1, put(body_b)));
    let (refused, holder) = within(5, "one refused", async {
        tokio::select! {
            r = &mut a => (r.expect("join"), b),
            r = &mut b => (r.expect("join"), a),
        }
    })
    .await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let err = refused.json();
    assert_eq!(err["error"]["code"], 429, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many uploads")),
        "{err}"
    );
    // The held upload ends (read and judged: a cut message), freeing the place.
    drop((tx_a, tx_b));
    let r = within(10, "held upload", holder).await.expect("join");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http_call(admin, HttpVersion::H1, put(body("not a descriptor set"))).await;
    assert_eq!(r.status, 400, "{}", r.text());
}
