//! One pass over every service of a sample server on a real loopback socket.

use std::time::Duration;

use anyhow::Context as _;

use sample_services::{
    ServerOptions,
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
    echo::{EchoRequest, echo_client::EchoClient},
};
use tokio::net::TcpListener;
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Bound on every wait in this test, so a bug fails it instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

fn with_x_metadata<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-token", MetadataValue::from_static("abc"));
    request
        .metadata_mut()
        .insert_bin("x-blob-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
    request
}

#[tokio::test]
async fn smoke() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = sample_services::spawn(listener, ServerOptions::new("smoke-1")).await?;
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;

    // CodenameCreator.GetCodename
    let mut codenames = CodenameCreatorClient::new(channel.clone());
    let response = codenames
        .get_codename(NameRequest {
            category: "science".into(),
        })
        .await?;
    assert_eq!(response.metadata().get("x-server-id").unwrap(), "smoke-1");
    assert_eq!(response.get_ref().name.split(' ').count(), 2);

    // Echo.Unary: echo, headers and (merged into the metadata by tonic) trailers.
    let mut echo = EchoClient::new(channel.clone());
    let response = echo
        .unary(with_x_metadata(EchoRequest {
            message: "hi".into(),
            payload: vec![7; 10],
            response_bytes: 300,
            ..Default::default()
        }))
        .await?;
    let metadata = response.metadata();
    assert_eq!(metadata.get("x-server-id").unwrap(), "smoke-1");
    assert_eq!(metadata.get("x-token").unwrap(), "abc");
    assert_eq!(metadata.get("trailer-x-token").unwrap(), "abc");
    assert_eq!(
        metadata.get_bin("trailer-x-blob-bin").unwrap().to_bytes()?,
        [0u8, 1, 2, 255].as_slice()
    );
    let body = response.into_inner();
    assert_eq!(
        (body.message.as_str(), body.server_id.as_str()),
        ("hi", "smoke-1")
    );
    assert_eq!((body.received_bytes, body.payload.len()), (10, 300));
    assert_eq!(body.payload[251], 0);

    // Echo.Unary with a chosen status: trailers-only, unicode message and echo intact.
    let status = echo
        .unary(with_x_metadata(EchoRequest {
            status_code: Code::NotFound as i32,
            status_message: "nüt hier ✓".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "nüt hier ✓");
    assert_eq!(status.metadata().get("x-server-id").unwrap(), "smoke-1");
    assert_eq!(status.metadata().get("trailer-x-token").unwrap(), "abc");

    // Echo.ServerStream: messages, then trailers with the echo.
    let response = echo
        .server_stream(with_x_metadata(EchoRequest {
            message: "s".into(),
            count: 3,
            interval_ms: 1,
            response_bytes: 5,
            ..Default::default()
        }))
        .await?;
    assert_eq!(response.metadata().get("x-token").unwrap(), "abc");
    let mut stream = response.into_inner();
    let mut seqs = Vec::new();
    while let Some(message) = stream.message().await? {
        seqs.push(message.seq);
    }
    assert_eq!(seqs, [0, 1, 2]);
    let trailers = stream.trailers().await?.expect("trailers");
    assert_eq!(trailers.get("trailer-x-token").unwrap(), "abc");

    // Echo.ServerStream failing after two messages.
    let mut stream = echo
        .server_stream(EchoRequest {
            count: 5,
            fail_after: 2,
            status_code: Code::Aborted as i32,
            status_message: "enough".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(stream.message().await?.is_some());
    assert!(stream.message().await?.is_some());
    let status = stream.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Aborted, "enough"));

    // Echo.Slow past its deadline.
    let mut request = Request::new(EchoRequest::default());
    request.set_timeout(Duration::from_millis(250));
    let status = echo.slow(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    tokio::time::timeout(
        WAIT,
        server.stats.wait_until(|s| s.deadline_exceeded() == 1),
    )
    .await?;

    // Echo.Slow cancelled by the client.
    let cancelled_before = server.stats.cancelled();
    let slow = tokio::spawn({
        let mut echo = echo.clone();
        async move { echo.slow(EchoRequest::default()).await }
    });
    tokio::time::timeout(WAIT, server.stats.wait_until(|s| s.in_flight() == 1)).await?;
    slow.abort();
    tokio::time::timeout(
        WAIT,
        server
            .stats
            .wait_until(|s| s.cancelled() == cancelled_before + 1 && s.in_flight() == 0),
    )
    .await?;
    assert_eq!(server.stats.deadline_exceeded(), 1);

    // grpc.health.v1: overall and per service, then flipped.
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "CodenameCreator",
        "sample.echo.v1.Echo",
        "sample.library.v1.LibraryService",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        assert_eq!(response.metadata().get("x-server-id").unwrap(), "smoke-1");
        assert_eq!(
            response.get_ref().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    server.set_serving(false).await;
    let response = health.check(HealthCheckRequest::default()).await?;
    assert_eq!(response.get_ref().status(), ServingStatus::NotServing);

    // Server reflection v1 and v1alpha list every service.
    use tonic_reflection::pb::{v1, v1alpha};
    let request = v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut replies = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let reply = replies.message().await?.expect("a reply");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "CodenameCreator",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "sample.echo.v1.Echo",
            "sample.library.v1.LibraryService"
        ]
    );
    let request = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sample.echo.v1.Echo".into(),
            ),
        ),
        ..Default::default()
    };
    let mut replies =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
    let reply = replies.message().await?.expect("a reply");
    assert!(
        matches!(
            reply.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{reply:?}"
    );

    tokio::time::timeout(WAIT, server.shutdown()).await?;
    Ok(())
}

#[tokio::test]
async fn streams() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut opts = ServerOptions::new("smoke-2");
    opts.codename_interval = Duration::from_millis(10);
    let server = sample_services::spawn(listener, opts).await?;
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;

    // KeepGettingCodenames: codenames flow after the first category; a half-close ends the
    // stream cleanly.
    let mut codenames = CodenameCreatorClient::new(channel.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NameRequest {
        category: "space".into(),
    })
    .await?;
    let response = codenames
        .keep_getting_codenames(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    assert_eq!(response.metadata().get("x-server-id").unwrap(), "smoke-2");
    let mut inbound = response.into_inner();
    for _ in 0..3 {
        let name = tokio::time::timeout(WAIT, inbound.message()).await??;
        assert!(name.is_some());
    }
    tx.send(NameRequest {
        category: "science".into(),
    })
    .await?;
    assert!(inbound.message().await?.is_some());
    drop(tx);
    while tokio::time::timeout(WAIT, inbound.message())
        .await
        .context("stream end after half-close")??
        .is_some()
    {}
    tokio::time::timeout(WAIT, server.stats.wait_until(|s| s.in_flight() == 0))
        .await
        .context("in_flight 0 after half-close")?;
    assert_eq!(server.stats.cancelled(), 0);

    // A server stream dropped by the client (h2 RST_STREAM) counts as a cancel.
    let mut echo = EchoClient::new(channel);
    let mut inbound = echo
        .server_stream(EchoRequest {
            count: 1_000,
            interval_ms: 10,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(inbound.message().await?.is_some());
    drop(inbound);
    tokio::time::timeout(
        WAIT,
        server
            .stats
            .wait_until(|s| s.cancelled() == 1 && s.in_flight() == 0),
    )
    .await
    .context("cancel counted")?;

    // ClientStream sums what it received.
    let requests = ["a", "b", "c"].map(|message| EchoRequest {
        message: message.into(),
        payload: vec![1; 4],
        ..Default::default()
    });
    let reply = echo
        .client_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.seq, reply.received_bytes),
        ("a,b,c", 3, 12)
    );

    // BidiStream answers each message before the next is sent, then fails on request.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = echo
        .bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    for seq in 0..3 {
        tx.send(EchoRequest {
            message: format!("m{seq}"),
            ..Default::default()
        })
        .await?;
        let reply = tokio::time::timeout(WAIT, inbound.message())
            .await??
            .expect("reply");
        assert_eq!((reply.message, reply.seq), (format!("m{seq}"), seq));
    }
    tx.send(EchoRequest {
        status_code: Code::FailedPrecondition as i32,
        status_message: "stop".into(),
        ..Default::default()
    })
    .await?;
    let status = inbound.message().await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(server.stats.max_in_flight(), 1);

    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_cuts_off_streams_that_outlive_the_grace() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut opts = ServerOptions::new("smoke-3");
    opts.codename_interval = Duration::from_millis(10);
    let server = sample_services::spawn(listener, opts).await?;
    let addr = server.addr;
    let stats = server.stats.clone();
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NameRequest::default()).await?;
    let mut inbound = CodenameCreatorClient::new(channel)
        .keep_getting_codenames(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    assert!(inbound.message().await?.is_some());

    tokio::time::timeout(WAIT, server.shutdown_within(Duration::from_millis(50)))
        .await
        .context("shutdown")?;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await?;
    assert!(ended.is_err(), "the stream should fail, not end cleanly");
    tokio::time::timeout(
        WAIT,
        stats.wait_until(|s| s.cancelled() == 1 && s.in_flight() == 0),
    )
    .await
    .context("cancel counted")?;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    drop(tx);
    Ok(())
}
