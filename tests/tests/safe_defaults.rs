//! Safe defaults a reviewer of HAProxy or Envoy would look for, seen from
//! clients over real sockets: the default per-endpoint request limit and
//! its queue, the cap on upstream HTTP/1.1 connections, bounded and
//! escaped access-log fields, and deny rules compared whole.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;

fn one_server(s: &SampleServer, cluster_extra: &str) -> String {
    cluster_config(
        &[format!(
            "{{ name = \"{}\", address = \"{}\" }}",
            s.id, s.addr
        )],
        cluster_extra,
    )
}

/// Fetches `GET /v1/clusters` from the admin API.
async fn clusters_json(gw: &gateway::Gateway) -> serde_json::Value {
    let admin = gw.admin_addr().expect("admin on");
    let r = http_call(
        admin,
        HttpVersion::H1,
        http::Request::get("/v1/clusters")
            .body(body(""))
            .expect("req"),
    )
    .await;
    r.json()
}

/// With no `max_requests_per_endpoint` in the config, one server gets at
/// most 1024 streams at once (Envoy's circuit-breaker default); the rest
/// wait in the cluster's queue and are served in turn.
#[tokio::test]
async fn default_request_limit_is_1024_per_endpoint_and_the_excess_queues() {
    let s = spawn_sample("limited-by-default").await;
    let gw = spawn_gateway(&one_server(&s, "queue_timeout_ms = 20000")).await;
    const CALLS: usize = 1024 + 16;
    // Two downstream connections: one carries at most 1024 streams.
    let channels = [
        channel(gw.first_addr()).await,
        channel(gw.first_addr()).await,
    ];
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut c = EchoClient::new(channels[i % 2].clone());
            tokio::spawn(async move {
                // Long enough for all the calls to be sent on a busy machine.
                c.slow(EchoRequest {
                    interval_ms: 3000,
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    within(
        30,
        "1024 streams at the server",
        s.stats.wait_until(|s| s.in_flight() == 1024),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = clusters_json(&gw).await["clusters"][0]["queued"].as_u64();
        if queued == Some(16) {
            break;
        }
        assert!(Instant::now() < deadline, "queued: {queued:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in calls {
        within(60, "call", c).await.expect("join").expect("served");
    }
    assert_eq!(s.stats.max_in_flight(), 1024);
    assert_eq!(s.stats.requests(), CALLS as u64);
}

/// A plain HTTP/1.1 web app that holds each request `hold_ms` and counts
/// connections: accepted so far, and open at most at once.
async fn slow_web_app(hold_ms: u64) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let max_open = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let (acc, max) = (accepted.clone(), max_open.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            acc.fetch_add(1, SeqCst);
            let now = open.fetch_add(1, SeqCst) + 1;
            max.fetch_max(now, SeqCst);
            let open = open.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                open.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, accepted, max_open)
}

fn web_config(web: SocketAddr, cluster_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"web\"\nprotocol = \"http1\"\nendpoints = [{{ address = \"{web}\" }}]\n{cluster_extra}\n\
         [[routes]]\ncluster = \"web\"\n"
    )
}

/// `count` GETs at once over one HTTP/2 connection; their statuses.
async fn concurrent_gets(addr: SocketAddr, count: usize) -> Vec<u16> {
    let send = h2_sender(addr).await;
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move {
                let req = http::Request::get(format!("http://{addr}/page/{i}"))
                    .body(body(""))
                    .expect("req");
                let resp = send.send_request(req).await.expect("response");
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                status
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(within(30, "get", c).await.expect("join"));
    }
    out
}

/// An `http1` cluster opens at most `max_http1_connections_per_endpoint`
/// connections to a server; the other requests wait for one and reuse it.
#[tokio::test]
async fn http1_connections_per_endpoint_are_capped_and_the_excess_waits() {
    let (web, accepted, max_open) = slow_web_app(200).await;
    let gw = spawn_gateway(&web_config(
        web,
        "max_http1_connections_per_endpoint = 2\nqueue_timeout_ms = 10000",
    ))
    .await;
    let started = Instant::now();
    let statuses = concurrent_gets(gw.first_addr(), 8).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(max_open.load(SeqCst) <= 2, "{} open", max_open.load(SeqCst));
    assert!(
        accepted.load(SeqCst) <= 2,
        "{} accepted",
        accepted.load(SeqCst)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "4 waves of 200 ms, took {:?}",
        started.elapsed()
    );
}

/// Without the key, 64 connections at most (and 64 requests at once).
#[tokio::test]
async fn http1_connections_default_to_64_per_endpoint() {
    let (web, accepted, max_open) = slow_web_app(500).await;
    let gw = spawn_gateway(&web_config(web, "queue_timeout_ms = 10000")).await;
    let statuses = concurrent_gets(gw.first_addr(), 80).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        max_open.load(SeqCst) <= 64,
        "{} open",
        max_open.load(SeqCst)
    );
    assert!(
        accepted.load(SeqCst) <= 64,
        "{} accepted",
        accepted.load(SeqCst)
    );
    assert!(max_open.load(SeqCst) >= 32, "the cap is not lower");
}

/// A request that waits past `queue_timeout_ms` for a connection gets 429
/// (RESOURCE_EXHAUSTED), without opening another connection.
#[tokio::test]
async fn http1_request_waiting_past_the_queue_timeout_is_429() {
    let (web, accepted, _) = slow_web_app(1500).await;
    let gw = spawn_gateway(&web_config(
        web,
        "max_http1_connections_per_endpoint = 1\nqueue_timeout_ms = 200",
    ))
    .await;
    let a = gw.first_addr();
    let hold = tokio::spawn(async move {
        http_call(
            a,
            HttpVersion::H1,
            http::Request::get("/hold").body(body("")).expect("req"),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "first request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let r = http_call(
        a,
        HttpVersion::H1,
        http::Request::get("/excess").body(body("")).expect("req"),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(150) && t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(within(10, "hold", hold).await.expect("join").status, 200);
    assert_eq!(accepted.load(SeqCst), 1);
}

/// A long path and a captured header with separators and control bytes
/// give one bounded, escaped access-log line.
#[tokio::test]
async fn access_log_fields_are_bounded_and_escaped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = spawn_sample("logged").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let gw = spawn_gateway(&format!(
        "{}\n[access_log]\npath = \"{}\"\n",
        one_server(&s, "").replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\ncapture_request_headers = [{ name = \"x-tag\", len = 200 }]\n",
        ),
        log.display()
    ))
    .await;
    let long = format!("/v1/{}", "a".repeat(5000));
    let mut tcp = tokio::net::TcpStream::connect(gw.first_addr())
        .await
        .expect("connect");
    let mut req = format!("GET {long} HTTP/1.1\r\nhost: h\r\nx-tag: a|b}}\t").into_bytes();
    req.extend_from_slice(b"\xff\r\nconnection: close\r\n\r\n");
    tcp.write_all(&req).await.expect("write");
    let mut answer = Vec::new();
    within(10, "answer", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    let text = wait_for_text(&log, "/v1/aaa").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(line.len() < 1024 + 400, "{} bytes: {line}", line.len());
    assert!(line.contains("{a\\x7cb\\x7d\\x09\u{fffd}}"), "{line}");
    assert!(
        line.contains("/v1/aaaa") && line.contains("... HTTP/1.1\""),
        "{line}"
    );
}

/// A `deny_unless` exact value (compared in constant time) still admits
/// only the whole value: same length but one byte off, a prefix or a
/// longer value is denied; any one of several values may match.
#[tokio::test]
async fn deny_unless_exact_admits_only_the_whole_value() {
    let s = spawn_sample("guarded").await;
    let toml = one_server(&s, "").replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\ndeny_unless = [{ name = \"x-pass\", exact = \"abc123\" }]\n",
    );
    let gw = spawn_gateway(&toml).await;
    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    for (values, admitted) in [
        (&["abc123"][..], true),
        (&["abc124"][..], false),
        (&["Abc123"][..], false),
        (&["abc12"][..], false),
        (&["abc1234"][..], false),
        (&["nope", "abc123"][..], true),
    ] {
        let mut req = tonic::Request::new(EchoRequest::default());
        for v in values {
            req.metadata_mut()
                .append("x-pass", v.parse().expect("value"));
        }
        match client.unary(req).await {
            Ok(_) => assert!(admitted, "{values:?} admitted"),
            Err(e) => {
                assert!(!admitted, "{values:?} denied: {e}");
                assert_eq!(e.code(), tonic::Code::PermissionDenied);
            }
        }
    }
    assert_eq!(s.stats.requests(), 2);
}
