//! Connection lifecycle at the front, over real sockets: silent and slow
//! clients are closed in time, the HTTP/2 first frame must be SETTINGS,
//! idle and old connections get GOAWAY, floods and resets end with the
//! gateway still serving, and the connection caps (listener, client IP)
//! accept and close instead of stopping `accept`.
//!
//! Misbehaving HTTP/2 clients are written either with the `h2` crate or
//! with a few raw frames over a `TcpStream` (RFC 9113 §4.1 frame layout).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    let len = payload.len() as u32;
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
fn client_start() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(frame(SETTINGS, 0, 0, &[]));
    b
}

/// An HPACK literal header field without indexing, no Huffman (RFC 7541
/// §6.2.2); names and values shorter than 127 bytes.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// Reads frames until a GOAWAY (its error code) or the end of the
/// connection (None).
async fn read_until_goaway<R: AsyncRead + Unpin>(r: &mut R) -> Option<u32> {
    loop {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.ok()?;
        if head[3] == GOAWAY && len >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
    }
}

/// Reads and discards until the peer closes (EOF or reset); the time it
/// took, or None after `limit`.
async fn time_to_close<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// True when the peer closes within `limit`.
async fn closes_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    time_to_close(tcp, limit).await.is_some()
}

/// A TCP connection from the client address `ip`.
async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind client address");
    socket.connect(to).await.expect("connect")
}

/// One unary Echo call on a fresh connection; the reply message.
async fn echo_ok(addr: SocketAddr, message: &str) -> String {
    let mut echo = EchoClient::new(channel(addr).await);
    within(
        10,
        "echo",
        echo.unary(EchoRequest {
            message: message.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("unary call")
    .into_inner()
    .message
}

/// A plain HTTP/1.1 request from `tcp`; the status line.
async fn http1_status(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /no/such/thing HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = within(5, "http/1.1 response", tcp.read(&mut buf))
        .await
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A connection from `ip` that the gateway has accepted and served one
/// HTTP/1.1 request on; now an idle keep-alive connection.
async fn served_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut tcp = connect_from(ip, to).await;
    let status = http1_status(&mut tcp).await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status:?}");
    tcp
}

/// Waits (up to 5 s) until a new connection from `ip` is served (a slot
/// is released when the gateway has seen the old connection end).
async fn eventually_served_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = connect_from(ip, to).await;
        if tcp
            .write_all(b"GET /no/such/thing HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .is_ok()
        {
            let mut buf = vec![0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await
                && buf[..n].starts_with(b"HTTP/1.1 404")
            {
                return tcp;
            }
        }
        assert!(Instant::now() < deadline, "not served again within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An h2 client connection (the `h2` crate) to `addr`.
async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (send, tokio::spawn(conn))
}

/// A gRPC request head for an Echo method.
fn grpc_head(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/sample.echo.v1.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A length-prefixed gRPC message.
fn grpc_frame(msg: &EchoRequest) -> Bytes {
    let body = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

/// Sends one unary call on an h2 connection; its grpc-status.
async fn h2_unary(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    method: &str,
    msg: &EchoRequest,
) -> Result<String, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (resp, mut body) = send.send_request(grpc_head(addr, method), false)?;
    body.send_data(grpc_frame(msg), true)?;
    let mut resp = resp.await?.into_body();
    while let Some(chunk) = resp.data().await {
        let chunk = chunk?;
        let _ = resp.flow_control().release_capacity(chunk.len());
    }
    let trailers = resp.trailers().await?.unwrap_or_default();
    Ok(trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string())
}

fn gateway_toml(s: &SampleServer, listener_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n{listener_extra}\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\n[access_log]\nenabled = false\n",
        s.addr
    )
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_preface_timeout() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "preface_timeout_ms = 500")).await;
    let addr = gw.first_addr();

    // 50 connections that send nothing, and one that stops mid-preface.
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial.write_all(&PREFACE[..10]).await.expect("write");
    conns.push(partial);

    // Each is watched from now on, all at once.
    let times = futures_util::future::join_all(
        conns
            .iter_mut()
            .map(|c| time_to_close(c, Duration::from_secs(5))),
    )
    .await;
    let times: Vec<Duration> = times
        .into_iter()
        .map(|t| t.expect("a silent connection was not closed within 5 s"))
        .collect();
    let (fastest, slowest) = (times.iter().min(), times.iter().max());
    eprintln!(
        "51 silent connections closed after {fastest:?} to {slowest:?} (preface_timeout_ms = 500)"
    );
    assert!(
        times
            .iter()
            .all(|t| *t >= Duration::from_millis(300) && *t < Duration::from_millis(3_000)),
        "{times:?}"
    );

    // The gateway serves as before.
    assert_eq!(echo_ok(addr, "after silence").await, "after silence");
}

#[tokio::test]
async fn tls_handshake_and_preface_timeouts() {
    let pki = TestPki::new();
    let s = spawn_sample("s0").await;
    let extra = format!(
        "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         tls_handshake_timeout_ms = 400\npreface_timeout_ms = 400",
        pki.cert_file.display(),
        pki.key_file.display()
    );
    let gw = spawn_gateway(&gateway_toml(&s, &extra)).await;
    let addr = gw.first_addr();

    // No ClientHello at all.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let t = time_to_close(&mut silent, Duration::from_secs(5))
        .await
        .expect("no handshake: closed");
    eprintln!("TLS: silent connection closed after {t:?} (tls_handshake_timeout_ms = 400)");
    assert!(t >= Duration::from_millis(300) && t < Duration::from_millis(3_000));

    // A finished handshake, then nothing.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pki.ca_pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let t = time_to_close(&mut tls, Duration::from_secs(5))
        .await
        .expect("no preface after the handshake: closed");
    eprintln!("TLS: handshake done, no preface, closed after {t:?} (preface_timeout_ms = 400)");
    assert!(t >= Duration::from_millis(300) && t < Duration::from_millis(3_000));
}

#[tokio::test]
async fn headers_before_settings_get_goaway_protocol_error() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "")).await;
    let addr = gw.first_addr();

    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut bytes = PREFACE.to_vec();
    let mut block = hpack_literal(":method", "POST");
    block.extend(hpack_literal(":scheme", "http"));
    block.extend(hpack_literal(":path", "/sample.echo.v1.Echo/Unary"));
    block.extend(hpack_literal(":authority", "x"));
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&bytes).await.expect("write");
    let code = within(5, "GOAWAY", read_until_goaway(&mut tcp)).await;
    assert_eq!(code, Some(PROTOCOL_ERROR));
    assert!(closes_within(&mut tcp, Duration::from_secs(2)).await);

    // SETTINGS first is fine.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&client_start()).await.expect("write");
    let mut head = [0u8; 9];
    within(5, "server SETTINGS", tcp.read_exact(&mut head))
        .await
        .expect("read");
    assert_eq!(head[3], SETTINGS);
    assert_eq!(echo_ok(addr, "still fine").await, "still fine");
}

#[tokio::test]
async fn idle_connections_get_goaway_but_open_streams_keep_them() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "idle_timeout_ms = 300\nmax_connection_age_grace_ms = 500",
    ))
    .await;
    let addr = gw.first_addr();

    // An HTTP/2 connection that never opens a stream.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&client_start()).await.expect("write");
    let started = Instant::now();
    let code = within(5, "idle GOAWAY", read_until_goaway(&mut tcp)).await;
    let t = started.elapsed();
    eprintln!("HTTP/2 idle connection got GOAWAY after {t:?} (idle_timeout_ms = 300)");
    assert_eq!(code, Some(NO_ERROR));
    assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(3_000));
    // This client never answers the GOAWAY's PING: closed after the grace.
    assert!(closes_within(&mut tcp, Duration::from_secs(2)).await);

    // A call longer than the idle timeout is not cut, and the connection
    // serves again right after it (the idle clock restarts when it ends).
    let (mut send, conn) = h2_client(addr).await;
    let slow = EchoRequest {
        interval_ms: 800,
        ..Default::default()
    };
    let status = within(10, "slow call", h2_unary(&mut send, addr, "Slow", &slow))
        .await
        .expect("slow call");
    assert_eq!(status, "0");
    let status = within(
        5,
        "next call",
        h2_unary(&mut send, addr, "Unary", &EchoRequest::default()),
    )
    .await
    .expect("call after a long one");
    assert_eq!(status, "0");
    // ...and then closes once idle.
    within(5, "idle close", conn).await.expect("join").ok();

    // HTTP/1.1 keep-alive connections are closed when idle too.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(http1_status(&mut tcp).await.starts_with("HTTP/1.1 404"));
    let t = time_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .expect("idle HTTP/1.1 closed");
    eprintln!("HTTP/1.1 idle keep-alive connection closed after {t:?}");
}

#[tokio::test]
async fn max_connection_age_sends_graceful_goaway_and_in_flight_calls_finish() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "max_connection_age_ms = 300\nmax_connection_age_grace_ms = 5000\nidle_timeout_ms = 0",
    ))
    .await;
    let addr = gw.first_addr();

    // GOAWAY(NO_ERROR) at the age, even with idle timeouts off.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&client_start()).await.expect("write");
    let started = Instant::now();
    let code = within(5, "age GOAWAY", read_until_goaway(&mut tcp)).await;
    let t = started.elapsed();
    eprintln!("max age: GOAWAY after {t:?} (max_connection_age_ms = 300)");
    assert_eq!(code, Some(NO_ERROR));
    assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(3_000));

    // A call in flight when the age passes finishes with OK; then the
    // connection ends (no new streams after GOAWAY).
    let (mut send, conn) = h2_client(addr).await;
    let slow = EchoRequest {
        interval_ms: 1_000,
        ..Default::default()
    };
    let started = Instant::now();
    let status = within(10, "slow call", h2_unary(&mut send, addr, "Slow", &slow))
        .await
        .expect("in-flight call across the age GOAWAY");
    assert_eq!(status, "0");
    assert!(started.elapsed() >= Duration::from_millis(900));
    within(5, "connection end after the call", conn)
        .await
        .expect("join")
        .ok();

    // A tonic channel reconnects by itself.
    let mut echo = EchoClient::new(channel(addr).await);
    for i in 0..3 {
        let r = echo
            .slow(EchoRequest {
                interval_ms: 200,
                message: format!("{i}"),
                ..Default::default()
            })
            .await;
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
}

#[tokio::test]
async fn listener_full_accepts_and_closes_and_sheds_the_oldest_idle() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "max_connections = 2")).await;
    let addr = gw.first_addr();
    const LOCAL: [u8; 4] = [127, 0, 0, 1];

    // Two idle keep-alive connections take both slots; `a` is the older.
    let mut a = served_from(LOCAL, addr).await;
    let mut b = served_from(LOCAL, addr).await;
    // Full: the third is accepted and closed at once...
    let mut c = connect_from(LOCAL, addr).await;
    let t = time_to_close(&mut c, Duration::from_secs(2))
        .await
        .expect("third connection closed at once");
    eprintln!("listener full: new connection closed after {t:?}");
    // ...and the oldest idle one (a) is asked to close; b stays.
    assert!(closes_within(&mut a, Duration::from_secs(2)).await);
    assert!(!closes_within(&mut b, Duration::from_millis(300)).await);
    // The freed slot serves.
    eventually_served_from(LOCAL, addr).await;
    assert!(wait_for_log(&["Listener full"]).await.is_some());
}

#[tokio::test]
async fn listener_full_without_shedding_serves_again_once_slots_free() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "max_connections = 2\nshed_idle_when_full = false",
    ))
    .await;
    let addr = gw.first_addr();
    const LOCAL: [u8; 4] = [127, 0, 0, 1];

    let mut a = served_from(LOCAL, addr).await;
    let b = served_from(LOCAL, addr).await;
    for _ in 0..3 {
        let mut c = connect_from(LOCAL, addr).await;
        assert!(closes_within(&mut c, Duration::from_secs(2)).await);
    }
    assert!(!closes_within(&mut a, Duration::from_millis(200)).await);
    drop(b);
    eventually_served_from(LOCAL, addr).await;
}

#[tokio::test]
async fn per_client_ip_cap() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "max_connections_per_ip = 2")).await;
    let addr = gw.first_addr();

    let a = served_from([127, 0, 0, 1], addr).await;
    let _b = served_from([127, 0, 0, 1], addr).await;
    let mut c = connect_from([127, 0, 0, 1], addr).await;
    assert!(
        closes_within(&mut c, Duration::from_secs(2)).await,
        "a third connection from 127.0.0.1 is closed"
    );
    // Another client IP is served.
    let _other = served_from([127, 0, 0, 2], addr).await;
    // When one of 127.0.0.1's connections ends, it gets a slot again.
    drop(a);
    eventually_served_from([127, 0, 0, 1], addr).await;
}

#[tokio::test]
async fn rapid_reset_ends_with_the_gateway_serving() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "")).await;
    let addr = gw.first_addr();

    // CVE-2023-44487: open and reset streams as fast as possible.
    let (send, conn) = h2_client(addr).await;
    let mut sent = 0;
    let started = Instant::now();
    for _ in 0..2_000 {
        let Ok(mut ready) = send.clone().ready().await else {
            break;
        };
        let Ok((_resp, mut body)) = ready.send_request(grpc_head(addr, "Slow"), false) else {
            break;
        };
        body.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The gateway ends the connection (h2's pending-accept reset limit,
    // else the premature-reset check); the client may see the GOAWAY or
    // only the closed socket, as it keeps writing.
    let ended = within(10, "the gateway closes the connection", conn)
        .await
        .expect("join");
    eprintln!(
        "rapid reset: {sent} streams opened and reset; connection ended after {:?}: {ended:?}",
        started.elapsed()
    );
    assert_eq!(
        echo_ok(addr, "after rapid reset").await,
        "after rapid reset"
    );
}

#[tokio::test]
async fn premature_resets_close_the_connection() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "premature_reset_total_stream_count = 10\npremature_reset_min_stream_lifetime_ms = 1000",
    ))
    .await;
    let addr = gw.first_addr();

    // Streams that reach the upstream, reset a little later: slow enough
    // for h2's pending-accept limit not to see them.
    let (send, conn) = h2_client(addr).await;
    let mut refused = false;
    for _ in 0..40 {
        let Ok(mut ready) = send.clone().ready().await else {
            refused = true;
            break;
        };
        let Ok((_resp, mut body)) = ready.send_request(grpc_head(addr, "Slow"), false) else {
            refused = true;
            break;
        };
        let _ = body.send_data(grpc_frame(&EchoRequest::default()), false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        body.send_reset(h2::Reason::CANCEL);
    }
    let ended = within(5, "connection end", conn).await.expect("join");
    assert!(refused, "the connection kept accepting streams");
    eprintln!("premature resets: connection ended with {ended:?}");
    assert!(
        wait_for_log(&["too many streams reset by the client"])
            .await
            .is_some()
    );

    // Calls that finish normally do not count.
    let (mut send, conn) = h2_client(addr).await;
    for _ in 0..30 {
        let status = h2_unary(&mut send, addr, "Unary", &EchoRequest::default())
            .await
            .expect("normal call");
        assert_eq!(status, "0");
    }
    assert!(!conn.is_finished());
    assert_eq!(echo_ok(addr, "after resets").await, "after resets");
}

#[tokio::test]
async fn continuation_flood_is_refused() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "")).await;
    let addr = gw.first_addr();

    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut bytes = client_start();
    let block = hpack_literal(":method", "POST");
    bytes.extend(frame(HEADERS, 0, 1, &block));
    let filler = hpack_literal("x-flood", "0123456789abcdef0123456789abcdef");
    let (mut rd, mut wr) = tcp.split();
    let writer = async {
        wr.write_all(&bytes).await?;
        // CVE-2024-27316-style: CONTINUATION without END_HEADERS, forever.
        for _ in 0..100_000 {
            wr.write_all(&frame(CONTINUATION, 0, 1, &filler)).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let (code, written) = within(20, "continuation flood", async {
        tokio::join!(read_until_goaway(&mut rd), writer)
    })
    .await;
    eprintln!("CONTINUATION flood: GOAWAY code {code:?}, writer {written:?}");
    assert!(code.is_some_and(|c| c != NO_ERROR), "{code:?}");
    drop(tcp);
    assert_eq!(echo_ok(addr, "after flood").await, "after flood");
}

#[tokio::test]
async fn settings_and_ping_floods_end_with_the_gateway_serving() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "idle_timeout_ms = 1000\nmax_connection_age_grace_ms = 500",
    ))
    .await;
    let addr = gw.first_addr();

    let mut floods = Vec::new();
    for kind in [SETTINGS, PING] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&client_start()).await.expect("write");
        let one = if kind == PING {
            frame(PING, 0, 0, &[7; 8])
        } else {
            frame(SETTINGS, 0, 0, &[])
        };
        let burst: Vec<u8> = one.repeat(1_000);
        // Never read the ACKs; write until the gateway stops reading.
        let mut total = 0usize;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for _ in 0..1_000 {
                if tcp.write_all(&burst).await.is_err() {
                    break;
                }
                total += 1_000;
            }
        })
        .await;
        eprintln!("flood of frame type {kind}: {total} frames written");
        // Meanwhile, other clients are served.
        assert_eq!(echo_ok(addr, "during flood").await, "during flood");
        floods.push(tcp);
    }
    // The flooding connections have no stream: the idle timeout closes
    // them, and the grace bounds a GOAWAY that cannot be written.
    for mut tcp in floods {
        let t = time_to_close(&mut tcp, Duration::from_secs(10)).await;
        eprintln!("flood connection closed after {t:?}");
        assert!(t.is_some(), "flooding connection still open");
    }
    assert_eq!(echo_ok(addr, "after floods").await, "after floods");
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(
        &s,
        "header_read_timeout_ms = 500\nidle_timeout_ms = 500\nmax_connection_age_grace_ms = 500",
    ))
    .await;
    let addr = gw.first_addr();

    // HTTP/1.1: a request head, one byte every 100 ms.
    let mut h1 = TcpStream::connect(addr).await.expect("connect");
    h1.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if h1.write_all(b"x").await.is_err() {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(10) {
                return started.elapsed();
            }
        }
    };
    let t = within(15, "h1 slowloris", drip).await;
    eprintln!("HTTP/1.1 slowloris cut after {t:?} (header_read_timeout_ms = 500)");
    assert!(t < Duration::from_secs(3), "{t:?}");

    // HTTP/2: HEADERS without END_HEADERS, then a CONTINUATION byte now
    // and then. h2 has no header timeout; no stream ever opens, so the
    // idle timeout closes the connection.
    let mut h2 = TcpStream::connect(addr).await.expect("connect");
    let mut bytes = client_start();
    bytes.extend(frame(HEADERS, 0, 1, &hpack_literal(":method", "GET")));
    h2.write_all(&bytes).await.expect("write");
    let started = Instant::now();
    let (mut rd, mut wr) = h2.split();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let f = frame(CONTINUATION, 0, 1, &hpack_literal("x", "y"));
            if wr.write_all(&f).await.is_err() || started.elapsed() > Duration::from_secs(10) {
                return;
            }
        }
    };
    let closed = tokio::select! {
        t = time_to_close(&mut rd, Duration::from_secs(10)) => t,
        _ = drip => None,
    };
    eprintln!("HTTP/2 slowloris cut after {closed:?} (idle_timeout_ms = 500)");
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(3)),
        "{closed:?}"
    );
    assert_eq!(echo_ok(addr, "after slowloris").await, "after slowloris");
}

#[tokio::test]
async fn a_slow_reader_does_not_stop_the_gateway() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&gateway_toml(&s, "")).await;
    let addr = gw.first_addr();

    // A server stream of 64 MiB that the client never reads: windows fill
    // up on both sides and the call waits.
    let (send, _conn) = h2_client(addr).await;
    let mut ready = send.ready().await.expect("ready");
    let (resp, mut body) = ready
        .send_request(grpc_head(addr, "ServerStream"), false)
        .expect("send");
    body.send_data(
        grpc_frame(&EchoRequest {
            count: 1_024,
            response_bytes: 64 * 1024,
            ..Default::default()
        }),
        true,
    )
    .expect("data");
    let resp = within(5, "response head", resp).await.expect("head");
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Other clients are served meanwhile, on new and on shared connections.
    for i in 0..5 {
        let m = format!("call {i}");
        assert_eq!(echo_ok(addr, &m).await, m);
    }
    let (mut other, _c) = h2_client(addr).await;
    let status = h2_unary(&mut other, addr, "Unary", &EchoRequest::default())
        .await
        .expect("call");
    assert_eq!(status, "0");
    drop(resp);
}

/// Answers that end before their request does (here `deny_unless` refusing
/// at once) leave the connection as it was: the rest of each body is read
/// and dropped. HTTP/2 then needs no reset for them (h2 closes a connection
/// with GOAWAY `ENHANCE_YOUR_CALM` once 1,024 frames have arrived for
/// streams it reset), and HTTP/1.1 keeps the connection alive.
#[tokio::test]
async fn answers_before_the_request_ends_keep_the_connection() {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "").replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\ndeny_unless = [{ name = \"x-pass\", exact = \"ok\" }]\n",
        1,
    ))
    .await;
    let addr = gw.first_addr();

    // HTTP/2: 3,000 refused gRPC calls on one connection, 32 at a time,
    // each body's DATA frame sent after its HEADERS.
    let send = h2_sender(addr).await;
    let denied = futures_util::stream::iter(0..3_000)
        .map(|_| {
            let mut send = send.clone();
            async move {
                let req = http::Request::post(format!("http://{addr}/sample.echo.v1.Echo/Unary"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body(&b"\0\0\0\0\0"[..]))
                    .expect("req");
                send.ready().await.expect("connection usable");
                let resp = send.send_request(req).await.expect("response");
                resp.headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let denied = within(60, "3,000 refused calls", denied).await;
    assert!(
        denied.iter().all(|s| s.as_deref() == Some("7")),
        "PERMISSION_DENIED each"
    );

    // HTTP/1.1: refused before its body is sent, then the body, then a
    // second request on the same connection.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, ReqBody>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h1 handshake");
    tokio::spawn(conn);
    let (tx, chunked) = channel_body();
    let req = http::Request::post("/v1/shelves")
        .header("host", "gw")
        .header("content-type", "application/json")
        .body(chunked)
        .expect("req");
    let resp = within(5, "early answer", send.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.status(), 403);
    tx.send(Bytes::from_static(b"{\"theme\":\"late\"}"))
        .await
        .expect("send the body after the answer");
    drop(tx);
    resp.into_body().collect().await.expect("answer body");
    within(5, "connection ready again", send.ready())
        .await
        .expect("still open");
    let again = http::Request::get("/v1/shelves/1")
        .header("host", "gw")
        .body(body(""))
        .expect("req");
    let resp = within(5, "second request", send.send_request(again))
        .await
        .expect("the same connection serves the next request");
    assert_eq!(resp.status(), 403);
}
