//! Memory bounded by configuration, not by clients: JSON bodies that
//! clients start and never finish, on many streams of many connections,
//! take their bytes from the process-wide buffered-bytes budget; past it
//! requests are refused at once (429), the held ones end at the body
//! timeouts, and the gateway keeps serving throughout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;

const MIB: usize = 1024 * 1024;
const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 100;
const BODY_BYTES: usize = MIB;
const BUDGET_BYTES: usize = 16 * MIB;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Opens `STREAMS_PER_CONNECTION` JSON calls on one connection, each
/// sending `BODY_BYTES` of an unfinished JSON body (only as fast as flow
/// control allows) and never ending it; returns the response statuses.
async fn hold_bodies(addr: std::net::SocketAddr, statuses: Arc<Vec<AtomicUsize>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let filler = Bytes::from(vec![b'a'; 64 * 1024]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STREAMS_PER_CONNECTION {
        let req = http::Request::post(format!("http://{addr}/sample.echo.v1.Echo/Unary"))
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let Ok(mut ready) = client.clone().ready().await else {
            break;
        };
        let Ok((resp, mut stream)) = ready.send_request(req, false) else {
            break;
        };
        let filler = filler.clone();
        let statuses = statuses.clone();
        tasks.spawn(async move {
            let sender = async {
                if stream
                    .send_data(Bytes::from_static(b"{\"message\":\""), false)
                    .is_err()
                {
                    return;
                }
                let mut sent = 0;
                while sent < BODY_BYTES {
                    stream.reserve_capacity(filler.len());
                    let Some(Ok(n)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await
                    else {
                        return;
                    };
                    let n = n.min(BODY_BYTES - sent).min(filler.len());
                    if stream.send_data(filler.slice(..n), false).is_err() {
                        return;
                    }
                    sent += n;
                }
                // Never ends the body: hold the stream open.
                std::future::pending::<()>().await;
            };
            let status = tokio::select! {
                r = resp => r.map(|r| r.status().as_u16() as usize).unwrap_or(0),
                _ = sender => 0,
            };
            let slot = match status {
                429 => 0,
                408 => 1,
                413 => 2,
                0 => 3,
                _ => 4,
            };
            statuses[slot].fetch_add(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_json_bodies_stay_within_the_buffered_bytes_budget() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "{}\n[limits]\nmax_buffered_request_bytes = {BUDGET_BYTES}\n\
         request_body_timeout_ms = 4000\nrequest_body_idle_timeout_ms = 1500\n",
        simple_config(&[&s], "")
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let front = gw.first_addr();
    // Warm up, then the baseline.
    let r = http_call(
        front,
        HttpVersion::H2,
        json_request("POST", "/sample.echo.v1.Echo/Unary", r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut grpc = EchoClient::new(channel(front).await);
    grpc.unary(EchoRequest::default()).await.expect("warm-up");
    let before = rss_bytes();

    let peak = Arc::new(AtomicUsize::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let statuses: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
    let started = Instant::now();
    let attack: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(hold_bodies(front, statuses.clone())))
        .collect();

    // While the budget is spent: a new JSON call (of 2 MiB: the held
    // bodies leave less than one body's worth free) is refused at once,
    // and native gRPC (streamed, never buffered) is served.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    let probe = format!("{{\"message\":\"{}\"}}", "b".repeat(2 * MIB));
    let r = http_call(
        front,
        HttpVersion::H1,
        json_request("POST", "/sample.echo.v1.Echo/Unary", &probe),
    )
    .await;
    eprintln!(
        "probe after {:?}: {} (RSS +{} MiB) statuses so far {:?}",
        started.elapsed(),
        r.status,
        rss_bytes().saturating_sub(before) / MIB,
        statuses
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
    );
    assert_eq!(r.status, 429);
    assert!(r.text().contains("buffered request bytes"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(1), "refused at once");
    let reply = within(
        5,
        "gRPC during the attack",
        grpc.unary(EchoRequest::default()),
    )
    .await
    .expect("gRPC during the attack");
    assert_eq!(reply.into_inner().server_id, "s0");

    for a in attack {
        within(30, "attack ends", a).await.expect("attack task");
    }
    sampler.abort();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    let [refused, timed_out, too_large, other_end, other] =
        [0, 1, 2, 3, 4].map(|i| statuses[i].load(Ordering::Relaxed));
    eprintln!(
        "held-body attack: {} streams x {} KiB; RSS growth {:.1} MiB (budget {} MiB); \
         429: {refused}, 408: {timed_out}, 413: {too_large}, reset: {other_end}, other: {other}; {:?}",
        CONNECTIONS * STREAMS_PER_CONNECTION,
        BODY_BYTES / 1024,
        growth as f64 / MIB as f64,
        BUDGET_BYTES / MIB,
        started.elapsed()
    );
    // A refused stream ends with its 429, or with the reset that follows
    // it when the client was still sending.
    assert_eq!(
        refused + timed_out + other_end,
        CONNECTIONS * STREAMS_PER_CONNECTION,
        "every held call ends refused or timed out"
    );
    assert_eq!(other, 0);
    assert!(refused > 0 && timed_out > 0);
    // Unbounded, the same attack holds ~400 MiB.
    assert!(
        growth < BUDGET_BYTES + 64 * MIB,
        "RSS grew by {} MiB",
        growth / MIB
    );

    // The budget is free again: JSON calls are served.
    let r = http_call(
        front,
        HttpVersion::H1,
        json_request(
            "POST",
            "/sample.echo.v1.Echo/Unary",
            r#"{"message":"after"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], "after");
}

#[tokio::test]
async fn a_stalled_json_body_ends_with_408() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "{}\n[limits]\nrequest_body_idle_timeout_ms = 300\nrequest_body_timeout_ms = 1000\n",
        simple_config(&[&s], "")
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    // Sends a first chunk, then nothing.
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"{\"message\":"))
        .await
        .expect("send");
    let t = Instant::now();
    let req = http::Request::post("/sample.echo.v1.Echo/Unary")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.text().contains("stalled"), "{}", r.text());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A slow but steady body hits the total limit.
    let (tx, body) = channel_body();
    let feeder = tokio::spawn(async move {
        for _ in 0..20 {
            if tx.send(Bytes::from_static(b" ")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let req = http::Request::post("/sample.echo.v1.Echo/Unary")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let r = http_call(gw.first_addr(), HttpVersion::H2, req).await;
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.text().contains("too long"), "{}", r.text());
    feeder.abort();
}
