//! What tonic's client can't show (a real RST_STREAM on a live bidi stream; a deadline with no
//! client-side timer racing the server's answer), and TLS.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use sample_services::{
    ServerOptions, TlsPem,
    codename::{NameRequest, NameResult, codename_creator_client::CodenameCreatorClient},
    echo::EchoRequest,
};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Bound on every wait in this test, so a bug fails it instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

/// A gRPC length-prefixed message frame.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).expect("small message"));
    frame.put_slice(&body);
    frame.freeze()
}

#[tokio::test]
async fn reset_bidi_stream_counts_as_cancel() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut opts = ServerOptions::new("cancel");
    opts.codename_interval = Duration::from_millis(10);
    let server = sample_services::spawn(listener, opts).await?;

    let tcp = TcpStream::connect(server.addr).await?;
    let (mut client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/CodenameCreator/KeepGettingCodenames",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())?;
    let (response, mut outbound) = client.send_request(request, false)?;
    outbound.send_data(
        grpc_frame(&NameRequest {
            category: "space".into(),
        }),
        false,
    )?;
    let response = tokio::time::timeout(WAIT, response).await??;
    assert_eq!(response.headers()["x-server-id"], "cancel");
    let mut body = response.into_body();
    let data = tokio::time::timeout(WAIT, body.data())
        .await?
        .context("a codename")??;
    let name = NameResult::decode(data.get(5..).context("framed")?)?;
    assert_eq!(name.name.split(' ').count(), 2);
    assert_eq!(server.stats.in_flight(), 1);

    outbound.send_reset(h2::Reason::CANCEL);
    tokio::time::timeout(
        WAIT,
        server
            .stats
            .wait_until(|s| s.cancelled() == 1 && s.in_flight() == 0),
    )
    .await
    .context("cancel counted")?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn slow_answers_deadline_exceeded_with_echoed_metadata() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = sample_services::spawn(listener, ServerOptions::new("slow")).await?;

    let tcp = TcpStream::connect(server.addr).await?;
    let (mut client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/sample.echo.v1.Echo/Slow", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "50m")
        .header("x-token", "abc")
        .body(())?;
    let started = Instant::now();
    let (response, mut outbound) = client.send_request(request, false)?;
    outbound.send_data(grpc_frame(&EchoRequest::default()), true)?;
    let response = tokio::time::timeout(WAIT, response).await??;
    let elapsed = started.elapsed();

    // Trailers-only: the status and the echoed trailers are in the headers.
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "4", "{headers:?}");
    assert_eq!(headers["x-server-id"], "slow");
    assert_eq!(headers["x-token"], "abc");
    assert_eq!(headers["trailer-x-token"], "abc");
    assert!(response.body().is_end_stream());
    assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
    assert_eq!(server.stats.deadline_exceeded(), 1);
    assert_eq!(server.stats.cancelled(), 0);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn serves_tls() -> anyhow::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let mut opts = ServerOptions::new("tls");
    opts.tls = Some(TlsPem {
        cert_pem: cert.cert.pem().into_bytes(),
        key_pem: cert.signing_key.serialize_pem().into_bytes(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = sample_services::spawn(listener, opts).await?;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", server.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    let response = CodenameCreatorClient::new(channel)
        .get_codename(NameRequest::default())
        .await?;
    assert_eq!(response.metadata().get("x-server-id").unwrap(), "tls");
    server.shutdown().await;
    Ok(())
}
