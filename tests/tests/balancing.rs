//! Balancer behaviour seen from a client: active health checks (gRPC and
//! TCP, rise/fall), the per-endpoint stream limit with its queue.

use std::time::{Duration, Instant};

use sample_services::{
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
    echo::{EchoRequest, echo_client::EchoClient},
};
use tests::*;
use tonic::Code;

fn cluster_toml(servers: &[&SampleServer], cluster_extra: &str) -> String {
    let eps: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ name = \"{}\", address = \"{}\" }}", s.id, s.addr))
        .collect();
    cluster_config(&eps, cluster_extra)
}

async fn ids(
    client: &mut CodenameCreatorClient<tonic::transport::Channel>,
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client
            .get_codename(NameRequest::default())
            .await
            .expect("call");
        out.push(
            r.metadata()
                .get("x-server-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
    }
    out
}

#[tokio::test]
async fn grpc_health_check_not_serving_and_back() {
    let a = spawn_sample("hc-a").await;
    let b = spawn_sample("hc-b").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&a, &b],
        "health_check = { kind = \"grpc\", interval_ms = 50, timeout_ms = 500, rise = 2, fall = 2 }",
    ))
    .await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    assert!(ids(&mut client, 4).await.contains(&"hc-b".to_string()));

    b.set_serving(false).await;
    let down = wait_for_log(&["Endpoint is DOWN", "hc-b"]).await;
    assert!(down.is_some(), "{}", logs());
    assert!(ids(&mut client, 10).await.iter().all(|id| id == "hc-a"));

    b.set_serving(true).await;
    assert!(
        wait_for_log(&["Endpoint is UP", "hc-b"]).await.is_some(),
        "{}",
        logs()
    );
    assert!(ids(&mut client, 4).await.contains(&"hc-b".to_string()));
    // Each flip is logged once.
    assert_eq!(
        logs()
            .lines()
            .filter(|l| l.contains("Endpoint is DOWN") && l.contains("hc-b"))
            .count(),
        1
    );
}

#[tokio::test]
async fn tcp_health_check_marks_a_stopped_server_down() {
    let a = spawn_sample("tcp-a").await;
    let b = spawn_sample("tcp-b").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&a, &b],
        "health_check = { kind = \"tcp\", interval_ms = 50, timeout_ms = 500, rise = 1, fall = 1 }",
    ))
    .await;
    b.shutdown().await;
    assert!(
        wait_for_log(&["Endpoint is DOWN", "tcp-b", "connect"])
            .await
            .is_some(),
        "{}",
        logs()
    );
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    assert!(ids(&mut client, 6).await.iter().all(|id| id == "tcp-a"));
}

/// Starts `n` `Slow` calls of `interval_ms` at once and waits for all;
/// every one must succeed.
async fn concurrent_slow_calls(ch: &tonic::transport::Channel, n: usize, interval_ms: u32) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut echo = EchoClient::new(ch.clone());
            tokio::spawn(async move {
                echo.slow(EchoRequest {
                    interval_ms,
                    message: format!("{i}"),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for c in calls {
        within(10, "slow call", c)
            .await
            .expect("join")
            .expect("every call succeeds");
    }
}

#[tokio::test]
async fn max_requests_per_endpoint_queues_the_excess() {
    let s = spawn_sample("limited").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&s],
        "max_requests_per_endpoint = 2\nqueue_timeout_ms = 10000",
    ))
    .await;
    let ch = channel(gw.first_addr()).await;
    let started = Instant::now();
    concurrent_slow_calls(&ch, 10, 100).await;
    assert!(
        s.stats.max_in_flight() <= 2,
        "backend saw {} at once",
        s.stats.max_in_flight()
    );
    assert_eq!(s.stats.requests(), 10);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "5 waves of 100 ms"
    );
}

/// Ten slow calls at once to a server that allows 4 streams per
/// connection: with a cap of 8 connections they all run at once (3
/// connections); with a cap of 2, 8 run and the rest wait in h2 for a free
/// stream, and every call still succeeds.
#[tokio::test]
async fn server_stream_limit_opens_another_connection() {
    for (cap, want_in_flight, want_conns) in [(8u32, 10u64, 3u64), (2, 8, 2)] {
        let mut opts = ServerOptions::new("four-streams");
        opts.max_concurrent_streams = Some(4);
        let s = spawn_sample_with(opts).await;
        let gw = spawn_gateway(&cluster_toml(
            &[&s],
            &format!("max_connections_per_endpoint = {cap}"),
        ))
        .await;
        let ch = channel(gw.first_addr()).await;
        let started = Instant::now();
        concurrent_slow_calls(&ch, 10, 400).await;
        let elapsed = started.elapsed();
        println!(
            "cap {cap}: backend saw {} calls at once on {} connections; 10 calls took {elapsed:?}",
            s.stats.max_in_flight(),
            s.stats.connections()
        );
        assert_eq!(s.stats.requests(), 10);
        assert_eq!(
            s.stats.max_in_flight(),
            want_in_flight,
            "calls in flight at once at the backend (cap {cap})"
        );
        assert_eq!(
            s.stats.connections(),
            want_conns,
            "connections from the gateway (cap {cap})"
        );
        if cap == 2 {
            assert!(elapsed >= Duration::from_millis(780), "two waves of 400 ms");
        }
    }
}

/// Each worker thread owns its client connections and its own upstream
/// connections (Envoy's per-worker pools): two client connections go to
/// the two workers (the one with fewer connections first), so the backend
/// sees one upstream connection from each; with one worker both clients
/// share one. `workers = 0` starts one per core.
#[tokio::test]
async fn each_worker_owns_its_client_and_upstream_connections() {
    for (workers, want_conns) in [(2usize, 2u64), (1, 1)] {
        let s = spawn_sample("w").await;
        let gw = spawn_gateway(&format!(
            "workers = {workers}\n{}",
            simple_config(&[&s], "")
        ))
        .await;
        assert_eq!(gw.workers(), workers);
        let (a, b) = (
            channel(gw.first_addr()).await,
            channel(gw.first_addr()).await,
        );
        for ch in [&a, &b, &a, &b] {
            EchoClient::new(ch.clone())
                .unary(EchoRequest::default())
                .await
                .expect("call");
        }
        assert_eq!(s.stats.requests(), 4);
        assert_eq!(
            s.stats.connections(),
            want_conns,
            "upstream connections with {workers} worker(s)"
        );
        gw.shutdown().await;
    }
    let s = spawn_sample("w").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(gw.workers(), cores, "one worker per core by default");
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let mut opts = ServerOptions::new("four-streams");
    opts.max_concurrent_streams = Some(4);
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&cluster_toml(&[&s], "idle_timeout_ms = 300")).await;
    let ch = channel(gw.first_addr()).await;
    // A burst opens three connections (4 streams each)...
    concurrent_slow_calls(&ch, 10, 400).await;
    assert_eq!(s.stats.connections(), 3);
    // A busy connection stays past the idle timeout while the idle ones
    // close: a 900 ms call holds one of them.
    let mut client = EchoClient::new(ch.clone());
    let mut long = client.clone();
    let long_call = tokio::spawn(async move {
        long.slow(EchoRequest {
            interval_ms: 900,
            ..Default::default()
        })
        .await
    });
    within(
        5,
        "idle ones closed",
        s.stats.wait_until(|s| s.open_connections() == 1),
    )
    .await;
    assert_eq!(s.stats.in_flight(), 1, "the long call is still running");
    within(5, "long call", long_call)
        .await
        .expect("join")
        .expect("the long call outlived the idle timeout of the others");
    // ...and all close once idle for 300 ms.
    let t = Instant::now();
    within(
        5,
        "idle connections closed",
        s.stats.wait_until(|s| s.open_connections() == 0),
    )
    .await;
    println!(
        "all upstream connections closed {:?} after the last call",
        t.elapsed()
    );
    assert_eq!(
        s.stats.connections(),
        3,
        "no connection was replaced meanwhile"
    );
    // The next call connects again.
    client
        .unary(EchoRequest::default())
        .await
        .expect("call after idle close");
    assert_eq!(s.stats.connections(), 4);
    assert_eq!(s.stats.open_connections(), 1);
}

#[tokio::test]
async fn queue_overflow_and_timeout_answer_at_once() {
    let s = spawn_sample("busy").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&s],
        "max_requests_per_endpoint = 1\nmax_queue = 1\nqueue_timeout_ms = 300",
    ))
    .await;
    let ch = channel(gw.first_addr()).await;
    let mut busy = EchoClient::new(ch.clone());
    let hold = tokio::spawn(async move {
        busy.slow(EchoRequest {
            interval_ms: 2000,
            ..Default::default()
        })
        .await
    });
    within(5, "slot taken", s.stats.wait_until(|s| s.in_flight() == 1)).await;
    // One waits in the queue (and times out), the next overflows at once.
    let mut q = EchoClient::new(ch.clone());
    let queued = tokio::spawn(async move {
        let t = Instant::now();
        (q.unary(EchoRequest::default()).await, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let err = EchoClient::new(ch.clone())
        .unary(EchoRequest::default())
        .await
        .expect_err("overflow");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "overflow answered at once"
    );
    let (res, waited) = within(5, "queue timeout", queued).await.expect("join");
    assert_eq!(
        res.expect_err("queue timeout").code(),
        Code::ResourceExhausted
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    hold.abort();
}

fn ids_of(v: &[String], id: &str) -> usize {
    v.iter().filter(|x| *x == id).count()
}

#[tokio::test]
async fn weights_shape_round_robin_exactly() {
    let a = spawn_sample("w1").await;
    let b = spawn_sample("w3").await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ name = \"w1\", address = \"{}\", weight = 1 }}, {{ name = \"w3\", address = \"{}\", weight = 3 }}]\n\
         [[routes]]\ncluster = \"backend\"\n",
        a.addr, b.addr
    );
    let gw = spawn_gateway(&toml).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let got = ids(&mut client, 40).await;
    assert_eq!(
        (ids_of(&got, "w1"), ids_of(&got, "w3")),
        (10, 30),
        "{got:?}"
    );
}

#[tokio::test]
async fn hash_policy_keeps_a_key_on_one_server() {
    let a = spawn_sample("h-a").await;
    let b = spawn_sample("h-b").await;
    let c = spawn_sample("h-c").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&a, &b, &c],
        "lb = \"hash\"\nhash_header = \"x-user\"",
    ))
    .await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let mut owners = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let mut req = tonic::Request::new(NameRequest::default());
            req.metadata_mut()
                .insert("x-user", format!("user-{user}").parse().expect("ascii"));
            let r = client.get_codename(req).await.expect("call");
            let id = r
                .metadata()
                .get("x-server-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let owner = owners.entry(user).or_insert_with(|| id.clone());
            assert_eq!(*owner, id, "user-{user} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "keys spread over all servers: {owners:?}"
    );
}

#[tokio::test]
async fn outlier_ejection_after_consecutive_unavailable_and_return() {
    let a = spawn_sample("o-a").await;
    let b = spawn_sample("o-b").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&a, &b],
        "outlier_detection = { consecutive_failures = 3, base_ejection_ms = 500, max_ejection_percent = 50 }",
    ))
    .await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    // Six UNAVAILABLE answers: three per server. The first server to reach
    // three is ejected; the other is kept (at most 50 % ejected).
    for _ in 0..6 {
        let err = echo
            .unary(EchoRequest {
                status_code: Code::Unavailable as i32,
                ..Default::default()
            })
            .await
            .expect_err("unavailable");
        assert_eq!(err.code(), Code::Unavailable);
    }
    let line = wait_for_log(&["Endpoint ejected", "o-"])
        .await
        .expect("ejection logged");
    let ejected = if line.contains("o-a") { "o-a" } else { "o-b" };
    let kept = if ejected == "o-a" { "o-b" } else { "o-a" };
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = echo.unary(EchoRequest::default()).await.expect("ok");
        seen.push(r.into_inner().server_id);
    }
    assert!(seen.iter().all(|s| s == kept), "{seen:?}");
    // The admin API shows it.
    let admin = gw.admin_addr().expect("admin");
    let r = http_call(
        admin,
        HttpVersion::H1,
        http::Request::get("/v1/clusters")
            .body(body(""))
            .expect("req"),
    )
    .await;
    let eps = r.json()["clusters"][0]["endpoints"].clone();
    let state = |name: &str| {
        eps.as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name))
            .map(|e| e["state"].clone())
    };
    assert_eq!(state(ejected), Some(serde_json::json!("EJECTED")), "{eps}");
    // After the ejection time it is back in rotation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            echo.unary(EchoRequest::default())
                .await
                .expect("ok")
                .into_inner()
                .server_id,
        );
    }
    assert!(seen.iter().any(|s| s == ejected), "{seen:?}");
}

#[tokio::test]
async fn mutual_tls_to_a_server_that_requires_a_client_certificate() {
    let pki = TestPki::new();
    let mut opts = ServerOptions::new("mtls");
    opts.tls = Some(pki.server.clone());
    opts.client_ca_pem = Some(pki.ca_pem.clone());
    let s = spawn_sample_with(opts).await;
    let cluster = |extra: &str| {
        format!(
            "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
             [[clusters]]\nname = \"secure\"\nendpoints = [{{ name = \"mtls\", address = \"{}\" }}]\n\
             tls = {{ ca_file = \"{}\", server_name = \"localhost\"{extra} }}\n[[routes]]\ncluster = \"secure\"\n",
            s.addr,
            pki.ca_file.display()
        )
    };
    // Without a client certificate the server refuses the handshake.
    let gw = spawn_gateway(&cluster("")).await;
    let err = EchoClient::new(channel(gw.first_addr()).await)
        .unary(EchoRequest::default())
        .await
        .expect_err("no client cert");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // With one, calls go through.
    let gw = spawn_gateway(&cluster(&format!(
        ", cert_file = \"{}\", key_file = \"{}\"",
        pki.client_cert_file.display(),
        pki.client_key_file.display()
    )))
    .await;
    let r = EchoClient::new(channel(gw.first_addr()).await)
        .unary(EchoRequest::default())
        .await
        .expect("mTLS call");
    assert_eq!(r.into_inner().server_id, "mtls");
}

#[tokio::test]
async fn insecure_skip_verify_connects_to_an_unknown_ca_and_warns() {
    let pki = TestPki::new();
    let mut opts = ServerOptions::new("self-signed");
    opts.tls = Some(pki.server.clone());
    let s = spawn_sample_with(opts).await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"insecure-cluster\"\nendpoints = [{{ address = \"{}\" }}]\n\
         tls = {{ insecure_skip_verify = true }}\n[[routes]]\ncluster = \"insecure-cluster\"\n",
        s.addr
    );
    let gw = spawn_gateway(&toml).await;
    assert!(
        wait_for_log(&["NOT verified", "clusters[0]"])
            .await
            .is_some(),
        "{}",
        logs()
    );
    let r = EchoClient::new(channel(gw.first_addr()).await)
        .unary(EchoRequest::default())
        .await
        .expect("call");
    assert_eq!(r.into_inner().server_id, "self-signed");
}

#[tokio::test]
async fn status_retries_only_for_listed_statuses_and_never_for_open_streams() {
    let a = spawn_sample("r-a").await;
    let b = spawn_sample("r-b").await;
    let gw = spawn_gateway(&cluster_toml(
        &[&a, &b],
        "retry = { statuses = [\"UNAVAILABLE\"], max_attempts = 2 }",
    ))
    .await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let total = || a.stats.requests() + b.stats.requests();

    // In the list: tried on the other server too, then the status stands.
    let err = echo
        .unary(EchoRequest {
            status_code: Code::Unavailable as i32,
            ..Default::default()
        })
        .await
        .expect_err("both fail");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        (a.stats.requests(), b.stats.requests()),
        (1, 1),
        "retried on the other server"
    );

    // Not in the list: one attempt only.
    let err = echo
        .unary(EchoRequest {
            status_code: Code::FailedPrecondition as i32,
            ..Default::default()
        })
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(total(), 3, "not retried");

    // A bidi stream whose first message went out is never retried, even
    // with a listed status: its request is not complete.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(EchoRequest {
        status_code: Code::Unavailable as i32,
        ..Default::default()
    })
    .await
    .expect("send");
    let res = echo
        .bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let code = match res {
        Err(e) => e.code(),
        Ok(r) => {
            let mut s = r.into_inner();
            match s.message().await {
                Err(e) => e.code(),
                Ok(m) => panic!("unexpected reply {m:?}"),
            }
        }
    };
    assert_eq!(code, Code::Unavailable);
    drop(tx);
    assert_eq!(total(), 4, "the stream was not retried");
}

#[tokio::test]
async fn killing_one_of_two_servers_under_steady_load() {
    let a = spawn_sample("k-a").await;
    let b = spawn_sample("k-b").await;
    let gw = spawn_gateway(&cluster_toml(&[&a, &b], "")).await;
    let ch = channel(gw.first_addr()).await;
    // 200 calls/s for 4 s, each taking 20 ms at the server; server b is
    // killed after 1.5 s.
    let mut calls = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let started = Instant::now();
    let mut killed = Some(b);
    let mut in_flight_at_kill = 0;
    while started.elapsed() < Duration::from_secs(4) {
        tick.tick().await;
        if started.elapsed() >= Duration::from_millis(1500)
            && let Some(b) = killed.take()
        {
            in_flight_at_kill = b.stats.in_flight();
            b.kill();
        }
        let mut echo = EchoClient::new(ch.clone());
        calls.push(tokio::spawn(async move {
            echo.slow(EchoRequest {
                interval_ms: 20,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().server_id)
        }));
    }
    let mut failed = 0;
    let mut served_by_a_after = 0;
    let n = calls.len();
    for c in calls {
        match c.await.expect("join") {
            Ok(id) => served_by_a_after += usize::from(id == "k-a"),
            Err(e) => {
                failed += 1;
                eprintln!("failed: {:?} {}", e.code(), e.message());
            }
        }
    }
    println!(
        "kill under load: {n} calls at 200/s, server killed with {in_flight_at_kill} calls in flight on it, {failed} calls failed, {} served by the survivor",
        served_by_a_after
    );
    // Only calls already sent to the killed server may fail: those in its
    // handlers at the kill, plus those already written to its connection
    // before the gateway saw it close (a few milliseconds of traffic, more
    // on a loaded machine). Everything later fails over.
    assert!(
        failed as u64 <= in_flight_at_kill + 10,
        "{failed} failed, but only {in_flight_at_kill} were in flight on the killed server"
    );
    assert!(n >= 700, "load generator too slow: {n}");
}

#[tokio::test]
async fn least_request_prefers_the_server_with_fewer_slow_calls() {
    let a = spawn_sample("lr-a").await;
    let b = spawn_sample("lr-b").await;
    let gw = spawn_gateway(&cluster_toml(&[&a, &b], "lb = \"least_request\"")).await;
    let ch = channel(gw.first_addr()).await;
    // Two long calls: one per server (the second goes to the idle one).
    let mut longs = Vec::new();
    for i in 1..=2u64 {
        let mut echo = EchoClient::new(ch.clone());
        longs.push(tokio::spawn(async move {
            echo.slow(EchoRequest {
                interval_ms: 3_000,
                ..Default::default()
            })
            .await
        }));
        within(5, "long call in flight", async {
            loop {
                if a.stats.in_flight() + b.stats.in_flight() == i {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    assert_eq!(
        (a.stats.in_flight(), b.stats.in_flight()),
        (1, 1),
        "one long call each"
    );
    // A third long call: now one server has two in flight, the other one,
    // and every short call must go to the less loaded one.
    let mut echo = EchoClient::new(ch.clone());
    let mut e = EchoClient::new(ch.clone());
    let extra = vec![tokio::spawn(async move {
        e.slow(EchoRequest {
            interval_ms: 3_000,
            ..Default::default()
        })
        .await
    })];
    within(5, "third long call in flight", async {
        while a.stats.in_flight() + b.stats.in_flight() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (busy, idle) = if a.stats.in_flight() > b.stats.in_flight() {
        ("lr-a", "lr-b")
    } else {
        ("lr-b", "lr-a")
    };
    for _ in 0..6 {
        let r = echo
            .unary(EchoRequest::default())
            .await
            .expect("short call");
        assert_eq!(
            r.into_inner().server_id,
            idle,
            "short calls avoid the busier server {busy}"
        );
    }
    for h in longs.into_iter().chain(extra) {
        h.abort();
    }
}

/// A resolver the test controls: `svc.test` resolves to these addresses.
#[derive(Clone, Default)]
struct TestResolver(std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>);

impl TestResolver {
    fn set(&self, ips: &[[u8; 4]]) {
        *self.0.lock().expect("lock") = ips.iter().map(|ip| std::net::IpAddr::from(*ip)).collect();
    }
}

impl balancer::Resolve for TestResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send>,
    > {
        let ips = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        Box::pin(async move {
            if host != "svc.test" {
                return Err(std::io::Error::other(format!("unknown host {host}")));
            }
            Ok(ips
                .into_iter()
                .map(|ip| std::net::SocketAddr::new(ip, port))
                .collect())
        })
    }
}

#[tokio::test]
async fn dns_re_resolution_adds_new_addresses_and_drains_vanished_ones() {
    // Two servers on the same port of two loopback addresses, as two pods
    // behind one name.
    let first = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let port = first.local_addr().expect("addr").port();
    let second = tokio::net::TcpListener::bind(("127.0.0.3", port))
        .await
        .expect("bind 127.0.0.3, same port");
    let mut o2 = ServerOptions::new("pod-2");
    o2.codename_interval = Duration::from_millis(50);
    let s2 = sample_services::spawn(first, o2).await.expect("pod-2");
    let s3 = sample_services::spawn(second, ServerOptions::new("pod-3"))
        .await
        .expect("pod-3");
    let resolver = TestResolver::default();
    resolver.set(&[[127, 0, 0, 2]]);
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"pods\"\ndns_refresh_ms = 50\nendpoints = [{{ address = \"svc.test:{port}\" }}]\n\
         [[routes]]\ncluster = \"pods\"\n[admin]\naddress = \"127.0.0.1:0\"\n"
    );
    capture_logs();
    let cfg = gateway::config::GatewayConfig::from_toml(&toml).expect("config");
    let gw = gateway::Gateway::start_with_resolver(cfg, std::sync::Arc::new(resolver.clone()))
        .await
        .expect("start");
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    assert!(ids(&mut client, 4).await.iter().all(|id| id == "pod-2"));

    // A new address appears: it joins the rotation.
    resolver.set(&[[127, 0, 0, 2], [127, 0, 0, 3]]);
    within(5, "pod-3 joins", async {
        while !ids(&mut client, 2).await.contains(&"pod-3".to_string()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // A long stream on pod-2, then pod-2 vanishes from DNS: the stream goes
    // on to its end, new calls go to pod-3 only.
    let (tx, mut stream) = loop {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(NameRequest {
            category: "space".into(),
        })
        .await
        .expect("send");
        let r = client
            .keep_getting_codenames(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open");
        // Keep a stream that landed on pod-2 (round robin alternates).
        if r.metadata()
            .get("x-server-id")
            .is_some_and(|v| v == "pod-2")
        {
            break (tx, r.into_inner());
        }
    };
    stream.message().await.expect("first").expect("codename");
    resolver.set(&[[127, 0, 0, 3]]);
    assert!(
        wait_for_log(&["Servers changed (DNS)", "removed=[\"svc.test"])
            .await
            .is_some(),
        "{}",
        logs()
    );
    assert!(ids(&mut client, 6).await.iter().all(|id| id == "pod-3"));
    for _ in 0..3 {
        within(5, "drained stream goes on", stream.message())
            .await
            .expect("no error")
            .expect("codename");
    }
    drop(tx);
    drop(stream);
    drop((s2, s3));
}

/// Outlier detection hears every protocol: JSON callers' unary, trailers-only
/// and streamed failures count as native gRPC ones do.
#[tokio::test]
async fn json_calls_and_json_streams_feed_outlier_detection() {
    for (i, (path, body)) in [
        // A server stream failing after one message.
        (
            "/sample.echo.v1.Echo/ServerStream",
            r#"{"statusCode":14,"count":3,"failAfter":1}"#,
        ),
        // A server stream failing at once (trailers-only).
        ("/sample.echo.v1.Echo/ServerStream", r#"{"statusCode":14}"#),
        // A unary call.
        ("/sample.echo.v1.Echo/Unary", r#"{"statusCode":14}"#),
    ]
    .into_iter()
    .enumerate()
    {
        // Names of their own: the captured log is shared by the cases.
        let (na, nb) = (format!("j{i}-a"), format!("j{i}-b"));
        let a = spawn_sample(&na).await;
        let b = spawn_sample(&nb).await;
        let gw = spawn_gateway(&cluster_toml(
            &[&a, &b],
            "outlier_detection = { consecutive_failures = 3, base_ejection_ms = 5000, max_ejection_percent = 50 }",
        ))
        .await;
        gw.registry()
            .put("samples", sample_services::FILE_DESCRIPTOR_SET)
            .expect("register");
        for _ in 0..6 {
            let r = http_call(
                gw.first_addr(),
                HttpVersion::H1,
                json_request("POST", path, body),
            )
            .await;
            assert!(
                r.status == 503 || r.text().contains("\"code\":14"),
                "{path}: {} {}",
                r.status,
                r.text()
            );
        }
        let prefix = format!("j{i}-");
        let line = wait_for_log(&["Endpoint ejected", &prefix]).await;
        assert!(line.is_some(), "{path} {body}: no ejection\n{}", logs());
        let ejected = if line.as_deref().is_some_and(|l| l.contains(&na)) {
            &na
        } else {
            &nb
        };
        let mut echo = EchoClient::new(channel(gw.first_addr()).await);
        for _ in 0..4 {
            let r = echo.unary(EchoRequest::default()).await.expect("ok");
            assert_ne!(&r.into_inner().server_id, ejected, "{path}");
        }
    }
}
