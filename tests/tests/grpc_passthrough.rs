//! Native gRPC through the gateway: every call shape, metadata, statuses,
//! deadlines, cancellation, large messages, round robin.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sample_services::{
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
    echo::{EchoRequest, echo_client::EchoClient},
};
use tests::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, metadata::MetadataValue};

fn server_id<T>(r: &tonic::Response<T>) -> String {
    r.metadata()
        .get("x-server-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn unary_through_gateway() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let resp = client
        .get_codename(NameRequest {
            category: "animals".into(),
        })
        .await
        .expect("GetCodename");
    assert_eq!(server_id(&resp), "s0");
    let name = resp.into_inner().name;
    assert_eq!(name.split(' ').count(), 2, "Adjective Animal: {name}");
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let r = echo
        .unary(EchoRequest {
            message: "hello".into(),
            response_bytes: 64,
            ..Default::default()
        })
        .await
        .expect("Unary")
        .into_inner();
    assert_eq!(
        (r.message.as_str(), r.payload.len(), r.server_id.as_str()),
        ("hello", 64, "s0")
    );
}

#[tokio::test]
async fn round_robin_across_two_servers() {
    let a = spawn_sample("a").await;
    let b = spawn_sample("b").await;
    let gw = spawn_gateway(&simple_config(&[&a, &b], "")).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = client
            .get_codename(NameRequest::default())
            .await
            .expect("call");
        seen.push(server_id(&r));
    }
    // Strict alternation, whichever server comes first.
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{seen:?}");
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 3, "{seen:?}");
}

#[tokio::test]
async fn bidi_codename_stream_switches_category_and_is_not_batched() {
    let mut opts = ServerOptions::new("s0");
    opts.codename_interval = Duration::from_millis(100);
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NameRequest {
        category: "animals".into(),
    })
    .await
    .expect("send");
    let mut stream = client
        .keep_getting_codenames(ReceiverStream::new(rx))
        .await
        .expect("open stream")
        .into_inner();
    let mut last = Instant::now();
    let mut names = Vec::new();
    for i in 0..12 {
        let msg = within(5, "next codename", stream.next())
            .await
            .expect("stream ended")
            .expect("message");
        let gap = last.elapsed();
        last = Instant::now();
        if i > 0 {
            assert!(
                gap < Duration::from_millis(300),
                "message {i} took {gap:?}: batched?"
            );
        }
        names.push(msg.name);
        if i == 5 {
            tx.send(NameRequest {
                category: "space".into(),
            })
            .await
            .expect("switch");
        }
    }
    drop(tx);
    // "space" names use the space adjectives; the switch shows from the
    // next message on (allowing one already in flight).
    const SPACE: [&str; 10] = [
        "Astral",
        "Celestial",
        "Cosmic",
        "Galactic",
        "Interstellar",
        "Lunar",
        "Nebular",
        "Orbital",
        "Solar",
        "Stellar",
    ];
    let is_space = |n: &String| SPACE.contains(&n.split(' ').next().unwrap_or_default());
    assert!(names[..6].iter().all(|n| !is_space(n)), "{names:?}");
    assert!(names[8..].iter().all(is_space), "{names:?}");
    let tail = within(5, "stream end", async {
        let mut rest = 0;
        while let Some(r) = stream.next().await {
            r.expect("no error at end");
            rest += 1;
        }
        rest
    })
    .await;
    assert!(
        tail <= 2,
        "stream should end soon after half-close, got {tail} more"
    );
}

#[tokio::test]
async fn server_and_client_streaming() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let mut stream = echo
        .server_stream(EchoRequest {
            message: "m".into(),
            count: 5,
            response_bytes: 10,
            ..Default::default()
        })
        .await
        .expect("server stream")
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(m) = stream.next().await {
        seqs.push(m.expect("message").seq);
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4]);

    let reqs = (0..4).map(|i| EchoRequest {
        message: format!("m{i}"),
        payload: vec![1; 100],
        ..Default::default()
    });
    let r = echo
        .client_stream(tokio_stream::iter(reqs))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!(
        (r.seq, r.received_bytes, r.message.as_str()),
        (4, 400, "m0,m1,m2,m3")
    );
}

#[tokio::test]
async fn bidi_flows_both_ways_at_once() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stream = echo
        .bidi_stream(ReceiverStream::new(rx))
        .await
        .expect("bidi")
        .into_inner();
    // Each reply arrives before the next request is sent: full duplex.
    for i in 0..10 {
        tx.send(EchoRequest {
            message: format!("{i}"),
            ..Default::default()
        })
        .await
        .expect("send");
        let r = within(5, "reply", stream.next())
            .await
            .expect("reply")
            .expect("ok");
        assert_eq!((r.message, r.seq), (format!("{i}"), i));
    }
    drop(tx);
    assert!(within(5, "end", stream.next()).await.is_none());
}

#[tokio::test]
async fn four_mib_message_each_way() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    const SIZE: usize = 4 * 1024 * 1024;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await)
        .max_decoding_message_size(SIZE + 1024)
        .max_encoding_message_size(SIZE + 1024);
    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let r = echo
        .unary(EchoRequest {
            payload,
            response_bytes: SIZE as u32,
            ..Default::default()
        })
        .await
        .expect("4 MiB unary")
        .into_inner();
    assert_eq!(r.received_bytes, SIZE as u64);
    assert_eq!(r.payload.len(), SIZE);
    assert!(
        r.payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
}

#[tokio::test]
async fn text_and_binary_metadata_both_ways() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let bin: &[u8] = &[0, 159, 146, 150, 255];
    let mut req = Request::new(EchoRequest {
        count: 1,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-token", "abc 123".parse().expect("ascii"));
    req.metadata_mut()
        .insert_bin("x-blob-bin", MetadataValue::from_bytes(bin));
    let resp = echo.server_stream(req).await.expect("call");
    let headers = resp.metadata().clone();
    assert_eq!(headers.get("x-token").expect("echoed header"), "abc 123");
    assert_eq!(
        headers
            .get_bin("x-blob-bin")
            .expect("echoed bin header")
            .to_bytes()
            .expect("b64"),
        bin
    );
    let mut stream = resp.into_inner();
    while let Some(m) = stream.next().await {
        m.expect("message");
    }
    let trailers = stream
        .trailers()
        .await
        .expect("trailers")
        .expect("some trailers");
    assert_eq!(trailers.get("trailer-x-token").expect("trailer"), "abc 123");
    assert_eq!(
        trailers
            .get_bin("trailer-x-blob-bin")
            .expect("bin trailer")
            .to_bytes()
            .expect("b64"),
        bin
    );
}

#[tokio::test]
async fn status_code_and_unicode_message_round_trip() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let msg = "no such shelf: ünïcødé ✓ 100% \n done";
    for code in [
        Code::NotFound,
        Code::FailedPrecondition,
        Code::Unauthenticated,
        Code::Internal,
    ] {
        let err = echo
            .unary(EchoRequest {
                status_code: code as i32,
                status_message: msg.into(),
                ..Default::default()
            })
            .await
            .expect_err("error status");
        assert_eq!(err.code(), code);
        assert_eq!(err.message(), msg);
    }
    // Mid-stream failure: messages, then the status in trailers.
    let mut stream = echo
        .server_stream(EchoRequest {
            count: 5,
            fail_after: 2,
            status_code: Code::Aborted as i32,
            status_message: "stopped ✋".into(),
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    assert!(stream.next().await.expect("1").is_ok());
    assert!(stream.next().await.expect("2").is_ok());
    let err = stream.next().await.expect("status").expect_err("aborted");
    assert_eq!((err.code(), err.message()), (Code::Aborted, "stopped ✋"));
}

#[tokio::test]
async fn deadline_exceeded_on_slow_call_and_backend_sees_it() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let mut req = Request::new(EchoRequest {
        interval_ms: 5_000,
        ..Default::default()
    });
    // The deadline as a `grpc-timeout` header only: tonic's own client
    // timer (`set_timeout`) starts before the gateway's and, on a loaded
    // machine, could fire first and report CANCELLED.
    req.metadata_mut()
        .insert("grpc-timeout", "300m".parse().expect("value"));
    let started = Instant::now();
    let err = echo.slow(req).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The backend got the (forwarded) deadline or the cancel: it stopped.
    let stats = s.stats.clone();
    within(
        5,
        "backend notices",
        stats.wait_until(|s| s.deadline_exceeded() + s.cancelled() >= 1),
    )
    .await;
    within(5, "backend idle", stats.wait_until(|s| s.in_flight() == 0)).await;
}

#[tokio::test]
async fn route_timeout_caps_the_call() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "{}\n[[routes]]\ncluster = \"backend\"\ntimeout_ms = 200\n",
        base_config(&[&s])
    ))
    .await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let started = Instant::now();
    let err = echo
        .slow(EchoRequest {
            interval_ms: 5_000,
            ..Default::default()
        })
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    within(
        5,
        "backend idle",
        s.stats.wait_until(|s| s.in_flight() == 0),
    )
    .await;
}

#[tokio::test]
async fn client_cancel_reaches_backend() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    // Unary: abandon the call while the backend is sleeping.
    let call = tokio::spawn(async move {
        echo.slow(EchoRequest {
            interval_ms: 10_000,
            ..Default::default()
        })
        .await
    });
    within(
        5,
        "call reaches backend",
        s.stats.wait_until(|s| s.in_flight() == 1),
    )
    .await;
    call.abort();
    within(
        5,
        "cancel reaches backend",
        s.stats.wait_until(|s| s.cancelled() >= 1),
    )
    .await;
    assert_eq!(s.stats.deadline_exceeded(), 0);

    // Streaming: drop a server stream midway.
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let mut stream = echo
        .server_stream(EchoRequest {
            count: 1000,
            interval_ms: 50,
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    stream.next().await.expect("first").expect("ok");
    drop(stream);
    within(
        5,
        "stream cancel reaches backend",
        s.stats.wait_until(|s| s.cancelled() >= 2),
    )
    .await;
    within(
        5,
        "backend idle",
        s.stats.wait_until(|s| s.in_flight() == 0),
    )
    .await;
}

#[tokio::test]
async fn path_routing_to_two_clusters() {
    let a = spawn_sample("codename-a").await;
    let b = spawn_sample("echo-b").await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"codenames\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[clusters]]\nname = \"echoes\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"codenames\"\nmatch = {{ path = \"/CodenameCreator/GetCodename\" }}\n\
         [[routes]]\ncluster = \"echoes\"\nmatch = {{ path_prefix = \"/sample.echo.v1.Echo/\" }}\n",
        a.addr, b.addr
    );
    let gw = spawn_gateway(&toml).await;
    let ch = channel(gw.first_addr()).await;
    let r = CodenameCreatorClient::new(ch.clone())
        .get_codename(NameRequest::default())
        .await
        .expect("codename");
    assert_eq!(server_id(&r), "codename-a");
    let r = EchoClient::new(ch.clone())
        .unary(EchoRequest::default())
        .await
        .expect("echo");
    assert_eq!(server_id(&r), "echo-b");
    // No route for the bidi method: UNIMPLEMENTED from the gateway itself.
    let err = CodenameCreatorClient::new(ch)
        .keep_getting_codenames(tokio_stream::iter(vec![NameRequest::default()]))
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(
        err.metadata().get("x-server-id").is_none(),
        "answered by the gateway"
    );
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let s = spawn_sample("s0").await;
    // The route only covers the echo service.
    let gw = spawn_gateway(&format!(
        "{}\n[[routes]]\ncluster = \"backend\"\nmatch = {{ service = \"sample.echo.v1.Echo\" }}\n",
        base_config(&[&s])
    ))
    .await;
    let err = CodenameCreatorClient::new(channel(gw.first_addr()).await)
        .get_codename(NameRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("/CodenameCreator/GetCodename"),
        "{}",
        err.message()
    );
    // An unknown method of a routed service reaches the backend, which
    // answers UNIMPLEMENTED too.
    let mut raw = tonic::client::Grpc::new(channel(gw.first_addr()).await);
    raw.ready().await.expect("ready");
    let err = raw
        .unary::<_, (), _>(
            Request::new(()),
            "/sample.echo.v1.Echo/Nope".parse().expect("path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("unimplemented");
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn stopped_server_drops_out_of_rotation() {
    let a = spawn_sample("a").await;
    let b = spawn_sample("b").await;
    let gw = spawn_gateway(&simple_config(&[&a, &b], "")).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    for _ in 0..4 {
        client
            .get_codename(NameRequest::default())
            .await
            .expect("warm up both");
    }
    b.shutdown().await;
    let mut failures = 0;
    for _ in 0..40 {
        match client.get_codename(NameRequest::default()).await {
            Ok(r) => assert_eq!(server_id(&r), "a"),
            Err(e) => {
                failures += 1;
                eprintln!("failed: {e:?}");
            }
        }
    }
    assert_eq!(failures, 0, "calls after the stop must not fail");
    assert!(a.stats.requests() >= 42);
}

#[tokio::test]
async fn no_reachable_server_is_unavailable_quickly() {
    // A port that was free a moment ago: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{dead}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\n"
    );
    let gw = spawn_gateway(&toml).await;
    let mut client = CodenameCreatorClient::new(channel(gw.first_addr()).await);
    for _ in 0..3 {
        let started = Instant::now();
        let err = client
            .get_codename(NameRequest::default())
            .await
            .expect_err("unavailable");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn idle_streams_end_after_the_route_idle_timeout() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&format!(
        "{}\n[[routes]]\ncluster = \"backend\"\nidle_timeout_ms = 300\n",
        base_config(&[&s])
    ))
    .await;
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    // Messages every 100 ms: never idle for 300 ms, so it runs to the end.
    let mut busy = echo
        .server_stream(EchoRequest {
            count: 8,
            interval_ms: 100,
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    let mut n = 0;
    while let Some(m) = busy.next().await {
        m.expect("busy stream is not cut");
        n += 1;
    }
    assert_eq!(n, 8);
    // A message every 2 s: ended after ~300 ms of silence.
    let started = Instant::now();
    let mut quiet = echo
        .server_stream(EchoRequest {
            count: 3,
            interval_ms: 2_000,
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    quiet.next().await.expect("first").expect("ok");
    let err = within(5, "idle end", quiet.next())
        .await
        .expect("status")
        .expect_err("idle timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    within(
        5,
        "backend sees the cancel",
        s.stats.wait_until(|s| s.in_flight() == 0),
    )
    .await;
}
