//! Listeners: the accept loop (never dies), one task and span per
//! connection, a connection cap, TLS with ALPN (which pins the HTTP
//! version) or cleartext HTTP/1.1 + HTTP/2 prior knowledge on one port
//! (told apart by the preface), and graceful drain on shutdown.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use balancer::coalesce::Coalesce;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use crate::{
    config::ListenerConfig,
    proxy::{self, ConnCtx, ListenerCtx, Shared},
};

/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Downstream HTTP/2 flow-control windows.
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// Everything one accept loop needs.
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS acceptor, when the listener serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Listener settings.
    pub cfg: ListenerConfig,
    /// Request policy.
    pub ctx: Arc<ListenerCtx>,
}

/// Accepts until `shutdown`, then drains connections up to `drain_timeout`.
pub async fn run(
    l: Listener,
    shared: Arc<Shared>,
    drain_timeout: Duration,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder(&l.cfg));
    let permits = Arc::new(Semaphore::new(l.cfg.max_connections));
    let handshake_timeout = Duration::from_millis(l.cfg.tls_handshake_timeout_ms);
    loop {
        // Wait for a free connection slot before accepting more.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            // `accept` is cancel-safe.
            _ = shutdown.cancelled() => break,
            res = l.tcp.accept() => match res {
                Ok(c) => c,
                Err(error) => {
                    warn!(%error, listener = %l.ctx.name, "Accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::new(ConnCtx {
            shared: shared.clone(),
            listener: l.ctx.clone(),
            peer,
        });
        let builder = builder.clone();
        let tls = l.tls.clone();
        let graceful = graceful.watcher();
        let span = debug_span!("conn", client.addr = %peer, listener = %l.ctx.name);
        tokio::spawn(
            async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(proxy::handle(ctx, req).await) }
                });
                match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(Coalesce::new(tcp)), svc);
                        finish(graceful.watch(conn.into_owned()).await, peer);
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(error)) => {
                                    debug!(%error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    debug!("TLS handshake timed out");
                                    return;
                                }
                            };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let pinned = (*builder).clone();
                        let pinned = if h2 {
                            pinned.http2_only()
                        } else {
                            pinned.http1_only()
                        };
                        let conn =
                            pinned.serve_connection(TokioIo::new(Coalesce::new(stream)), svc);
                        finish(graceful.watch(conn.into_owned()).await, peer);
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(l.tcp);
    // Every connection gets GOAWAY (HTTP/2) or closes when idle (HTTP/1.1);
    // in-flight requests get until the drain timeout.
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(listener = %l.ctx.name, "Drain timeout reached; closing remaining connections");
    }
}

fn finish(res: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(error) = res {
        debug!(%peer, %error, "Connection ended with an error");
    }
}

fn http_builder(cfg: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms))
        .keep_alive(true);
    let mut h2 = b.http2();
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(64 * 1024)
        .max_header_list_size(64 * 1024);
    if cfg.keepalive_interval_ms > 0 {
        h2.keep_alive_interval(Duration::from_millis(cfg.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_secs(20));
    }
    b
}
