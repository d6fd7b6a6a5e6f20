//! Memory scenarios: the gateway's resident memory per idle HTTP/2 connection and per open
//! stream. Each runs against a fresh gateway process and is bounded in time; everything it
//! opened is closed when it returns.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use sample_services::echo::{EchoRequest, EchoResponse, echo_client::EchoClient};
use serde::Serialize;
use tokio::{net::TcpStream, task::JoinHandle};

use crate::{
    procfs,
    scenarios::channels,
    targets::{ProxyProcess, TargetKind},
};

/// Connections or streams being opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// Longest time for opening all connections or streams; what is open by then is measured.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest time for one connection or stream to open.
const OPEN_ONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before reading RSS, so the gateway finishes its per-connection work.
const SETTLE: Duration = Duration::from_secs(1);
/// File descriptors kept for everything else (backends, stdio, the gateway's upstreams).
const FD_RESERVE: u64 = 512;
/// Streams per connection at most: below the gateway's default `max_concurrent_streams`
/// (1024) so no stream waits for a slot.
const MAX_STREAMS_PER_CONNECTION: usize = 625;
/// `Echo/ServerStream` interval for the open streams: far longer than the test.
const STREAM_INTERVAL_MS: u32 = 600_000;

/// What the memory scenarios found.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryReport {
    /// Soft `RLIMIT_NOFILE` of the bench and the gateway.
    pub(crate) fd_limit: u64,
    /// Idle HTTP/2 connections.
    pub(crate) idle_connections: Option<MemoryResult>,
    /// Open server-streaming calls.
    pub(crate) open_streams: Option<MemoryResult>,
}

/// One memory measurement.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MemoryResult {
    /// How many were asked for.
    pub(crate) requested: usize,
    /// How many were open when RSS was read.
    pub(crate) reached: usize,
    /// HTTP/2 connections they used.
    pub(crate) connections: usize,
    /// Gateway RSS before opening them, bytes.
    pub(crate) rss_before: u64,
    /// Gateway RSS with them open, bytes.
    pub(crate) rss_after: u64,
    /// Gateway peak RSS, bytes.
    pub(crate) peak_rss: u64,
    /// `(rss_after - rss_before) / reached`, bytes.
    pub(crate) bytes_each: f64,
    /// Why fewer than requested were reached, if so.
    pub(crate) error: Option<String>,
}

/// An idle client HTTP/2 connection; its driver task is stopped on drop.
struct IdleConn {
    _send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

impl Drop for IdleConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects, does the HTTP/2 handshake, and waits for the answer to a PING, so the gateway
/// has really taken the connection in.
async fn open_idle(addr: SocketAddr) -> anyhow::Result<IdleConn> {
    let io = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    io.set_nodelay(true).context("TCP_NODELAY")?;
    let (send, mut connection) = h2::client::handshake(io)
        .await
        .context("HTTP/2 handshake")?;
    let mut ping_pong = connection
        .ping_pong()
        .context("PING handle already taken")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let conn = IdleConn {
        _send: send,
        driver,
    };
    ping_pong.ping(h2::Ping::opaque()).await.context("PING")?;
    Ok(conn)
}

/// Opens up to `requested` idle HTTP/2 connections to a fresh gateway and reports its RSS
/// per connection.
pub(crate) async fn idle_connections(
    gateway_bin: &Path,
    backends: &[SocketAddr],
    requested: usize,
    fd_limit: u64,
) -> anyhow::Result<MemoryResult> {
    let allowed = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    let target = requested.min(allowed);
    let mut gateway = ProxyProcess::gateway(
        gateway_bin,
        TargetKind::Gateway,
        backends,
        Some(target + 64),
        "",
    )
    .await?;
    let pid = gateway.pid();
    tokio::time::sleep(SETTLE).await;
    let before = procfs::memory(pid)?;

    let addr = gateway.addr;
    let mut conns = Vec::with_capacity(target);
    let mut first_error = (target < requested).then(|| {
        format!("capped at {target}: RLIMIT_NOFILE is {fd_limit} (raise it with `ulimit -n`)")
    });
    let mut opening = futures_util::stream::iter(0..target)
        .map(|_| async move {
            tokio::time::timeout(OPEN_ONE_TIMEOUT, open_idle(addr))
                .await
                .context("timed out")?
        })
        .buffer_unordered(OPEN_CONCURRENCY);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        while let Some(result) = opening.next().await {
            match result {
                Ok(conn) => conns.push(conn),
                Err(error) => {
                    first_error.get_or_insert_with(|| format!("{error:#}"));
                }
            }
        }
    })
    .await;
    drop(opening);
    if opened.is_err() {
        first_error.get_or_insert_with(|| format!("not all open within {OPEN_TIMEOUT:?}"));
    }
    tokio::time::sleep(SETTLE).await;
    gateway.check_alive()?;
    let after = procfs::memory(pid)?;
    let reached = conns.iter().filter(|c| !c.driver.is_finished()).count();
    if reached < conns.len() {
        first_error.get_or_insert_with(|| {
            format!(
                "{} connections closed by the gateway",
                conns.len() - reached
            )
        });
    }
    drop(conns);
    drop(gateway);
    Ok(result(
        requested,
        reached,
        reached,
        before,
        after,
        first_error,
    ))
}

/// Opens up to `requested` server-streaming calls (Echo/ServerStream that pause after their
/// first message) over at least 10 connections to a fresh gateway, and reports its RSS per
/// stream.
pub(crate) async fn open_streams(
    gateway_bin: &Path,
    backends: &[SocketAddr],
    requested: usize,
) -> anyhow::Result<MemoryResult> {
    let mut gateway =
        ProxyProcess::gateway(gateway_bin, TargetKind::Gateway, backends, None, "").await?;
    let pid = gateway.pid();
    let connections = requested.div_ceil(MAX_STREAMS_PER_CONNECTION).max(10);
    let channels = channels(&[gateway.addr], connections).await?;
    tokio::time::sleep(SETTLE).await;
    let before = procfs::memory(pid)?;

    let request = EchoRequest {
        message: "open".into(),
        count: 2,
        interval_ms: STREAM_INTERVAL_MS,
        ..EchoRequest::default()
    };
    let mut streams: Vec<tonic::Streaming<EchoResponse>> = Vec::with_capacity(requested);
    let mut first_error = None;
    let mut opening = futures_util::stream::iter(0..requested)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let request = request.clone();
            async move {
                let open = async {
                    let mut stream = EchoClient::new(channel)
                        .server_stream(request)
                        .await
                        .context("Echo/ServerStream")?
                        .into_inner();
                    stream
                        .message()
                        .await
                        .context("first message")?
                        .context("stream ended at once")?;
                    anyhow::Ok(stream)
                };
                tokio::time::timeout(OPEN_ONE_TIMEOUT, open)
                    .await
                    .context("timed out")?
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        while let Some(result) = opening.next().await {
            match result {
                Ok(stream) => streams.push(stream),
                Err(error) => {
                    first_error.get_or_insert_with(|| format!("{error:#}"));
                }
            }
        }
    })
    .await;
    drop(opening);
    if opened.is_err() {
        first_error.get_or_insert_with(|| format!("not all open within {OPEN_TIMEOUT:?}"));
    }
    tokio::time::sleep(SETTLE).await;
    gateway.check_alive()?;
    let after = procfs::memory(pid)?;
    let reached = streams.len();
    drop(streams);
    drop(channels);
    drop(gateway);
    Ok(result(
        requested,
        reached,
        connections,
        before,
        after,
        first_error,
    ))
}

fn result(
    requested: usize,
    reached: usize,
    connections: usize,
    before: procfs::Memory,
    after: procfs::Memory,
    error: Option<String>,
) -> MemoryResult {
    let grown = after.rss.saturating_sub(before.rss) as f64;
    MemoryResult {
        requested,
        reached,
        connections,
        rss_before: before.rss,
        rss_after: after.rss,
        peak_rss: after.peak_rss,
        bytes_each: if reached == 0 {
            0.0
        } else {
            grown / reached as f64
        },
        error,
    }
}
