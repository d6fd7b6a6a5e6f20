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
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{}]\n{cluster_extra}\n\
         [[routes]]\ncluster = \"backend\"\n",
        eps.join(", ")
    )
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
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut echo = EchoClient::new(ch.clone());
            tokio::spawn(async move {
                echo.slow(EchoRequest {
                    interval_ms: 100,
                    message: format!("{i}"),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for c in calls {
        within(10, "queued call", c)
            .await
            .expect("join")
            .expect("every call succeeds");
    }
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
