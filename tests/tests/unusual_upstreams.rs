//! Upstream servers at the edges of HTTP/2: one that allows no stream at
//! all, and one that answers every request with a graceful GOAWAY naming a
//! last stream below it (the request was not processed, so it is retried
//! on another server), and one that accepts TCP but never speaks HTTP/2
//! (requests waiting on that connect share its failure).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;

fn cluster_toml(addrs: &[String], cluster_extra: &str) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    cluster_config(&eps, cluster_extra)
}

/// A server announcing SETTINGS_MAX_CONCURRENT_STREAMS = 0 gets one
/// connection, and a request waits the queue timeout, then
/// RESOURCE_EXHAUSTED: it neither hangs nor reaches the server.
#[tokio::test]
async fn a_server_allowing_no_stream_answers_resource_exhausted_after_the_queue_timeout() {
    let mut opts = ServerOptions::new("no-streams");
    opts.max_concurrent_streams = Some(0);
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&cluster_toml(
        &[s.addr.to_string()],
        "queue_timeout_ms = 300",
    ))
    .await;
    let ch = channel(gw.first_addr()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let err = within(5, "call to a server with no streams", async {
            EchoClient::new(ch.clone())
                .unary(EchoRequest::default())
                .await
        })
        .await
        .expect_err("no stream is allowed");
        let waited = started.elapsed();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "waited {waited:?}"
        );
    }
    assert_eq!(s.stats.requests(), 0);
    assert_eq!(s.stats.connections(), 1, "no connection beyond the first");
}

/// A fake HTTP/2 server: answers the preface, SETTINGS and PINGs, and
/// answers every HEADERS with GOAWAY(last_stream_id = 0, NO_ERROR): the
/// stream was not processed (RFC 9113 section 6.8).
async fn spawn_goaway_server() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(goaway_connection(tcp, seen.clone()));
        }
    });
    (addr, requests)
}

async fn goaway_connection(mut tcp: TcpStream, requests: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    tcp.read_exact(&mut preface).await?;
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // Our (empty) SETTINGS.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        match (kind, flags & 1) {
            // SETTINGS: acknowledge.
            (4, 0) => tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await?,
            // PING: answer with the same payload.
            (6, 0) => {
                let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                tcp.write_all(&pong).await?;
            }
            // HEADERS: GOAWAY, last stream 0, NO_ERROR; then close.
            (1, _) => {
                requests.fetch_add(1, Ordering::SeqCst);
                tcp.write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                    .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_request_beyond_a_graceful_goaway_is_retried_on_another_server() {
    let (fake, goaways) = spawn_goaway_server().await;
    let real = spawn_sample("real").await;
    let gw = spawn_gateway(&cluster_toml(&[fake, real.addr.to_string()], "")).await;
    let ch = channel(gw.first_addr()).await;
    let mut echo = EchoClient::new(ch);
    for i in 0..10 {
        let reply = within(
            5,
            "call",
            echo.unary(EchoRequest {
                message: format!("call {i}"),
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        assert_eq!(reply.get_ref().message, format!("call {i}"));
    }
    let turned_away = goaways.load(Ordering::SeqCst);
    println!("{turned_away} of 10 calls met the GOAWAY and were retried");
    assert!(turned_away >= 1, "the fake server saw no request");
    assert_eq!(
        real.stats.requests(),
        10,
        "every call ended on the real server"
    );
}

/// A server that accepts TCP connections and never speaks HTTP/2: every
/// handshake with it times out. Counts the connections it accepted.
async fn silent_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    (addr, accepted)
}

/// Requests waiting for a connection to a server whose connect then fails
/// share that failure and go to another server at once, instead of each
/// trying the dead server again in turn (a connect timeout each).
#[tokio::test]
async fn requests_waiting_on_a_failed_connect_share_the_failure() {
    let good = spawn_sample("good").await;
    let (silent, accepted) = silent_server().await;
    let gw = spawn_gateway(&cluster_toml(
        &[silent.to_string(), good.addr.to_string()],
        "connect_timeout_ms = 400",
    ))
    .await;
    let ch = channel(gw.first_addr()).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut c = EchoClient::new(ch.clone());
            tokio::spawn(async move { c.unary(EchoRequest::default()).await })
        })
        .collect();
    for call in calls {
        within(10, "call", call)
            .await
            .expect("join")
            .expect("served by the good server");
    }
    let elapsed = started.elapsed();
    println!(
        "10 calls in {elapsed:?}; the silent server accepted {} connections",
        accepted.load(Ordering::SeqCst)
    );
    assert_eq!(good.stats.requests(), 10);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connect attempt to the silent server, shared by the requests waiting on it"
    );
    assert!(
        elapsed < Duration::from_millis(800),
        "every call done about one connect timeout (400 ms) after the start: {elapsed:?}"
    );
}
