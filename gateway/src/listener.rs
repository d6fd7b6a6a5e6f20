//! Listeners: the accept loop (never dies, never stops accepting), one task
//! and span per connection on a worker thread ([`crate::workers`]), TLS with ALPN (which pins the HTTP version) or
//! cleartext HTTP/1.1 + HTTP/2 prior knowledge on one port (told apart by
//! the preface), and the connection lifecycle: caps (per listener and per
//! client IP), a first-bytes timeout, the HTTP/2 first-frame check, idle
//! timeout, maximum age, premature-reset protection and graceful drain.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use balancer::coalesce::Coalesce;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::{
    config::ListenerConfig,
    conn::{self, ConnState, Counted, FirstBytes, PrematureReset, Rewind, Stream, TrackedBody},
    linger::Lingering,
    metrics::ListenerMetrics,
    proxy::{self, ConnCtx, ListenerCtx, Shared},
    workers::Workers,
};

/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Largest HTTP/2 frame payload we accept, bytes.
const MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Largest decoded request header list, bytes (HTTP/2
/// SETTINGS_MAX_HEADER_LIST_SIZE). h2 also bounds the CONTINUATION frames
/// of one header block from this and the frame size.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Streams a client may reset before the server has accepted them, then
/// GOAWAY (h2's rapid-reset protection, CVE-2023-44487; h2's default).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because of client protocol errors, then
/// GOAWAY (RUSTSEC-2024-0003; hyper's default).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// An unanswered keep-alive PING closes the connection after this long.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams still open on a connection closed for premature resets get
/// this long after its GOAWAY.
const PREMATURE_RESET_GRACE: Duration = Duration::from_secs(1);
/// At most one "listener full" warning this often; the rest are debug.
const FULL_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait after an idle or shed GOAWAY: no stream is open, only a
/// client that does not answer the GOAWAY's PING (or is opening a stream
/// at that moment) keeps it open (Envoy's `drain_timeout` default).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Everything one accept loop needs.
pub(crate) struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS acceptor, when the listener serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Listener settings.
    pub cfg: ListenerConfig,
    /// Request policy.
    pub ctx: Arc<ListenerCtx>,
    /// Connection counters (`GET /metrics`).
    pub metrics: Arc<ListenerMetrics>,
}

/// Connection lifecycle limits, from [`ListenerConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    tls_handshake: Duration,
    preface: Duration,
    idle: Option<Duration>,
    max_age: Option<Duration>,
    grace: Duration,
    max_per_ip: Option<usize>,
    shed_idle_when_full: bool,
    premature_reset: PrematureReset,
}

impl Limits {
    fn new(cfg: &ListenerConfig) -> Self {
        let ms = Duration::from_millis;
        let nonzero = |v: u64| (v > 0).then(|| ms(v));
        Self {
            tls_handshake: ms(cfg.tls_handshake_timeout_ms),
            preface: ms(cfg.preface_timeout_ms),
            idle: nonzero(cfg.idle_timeout_ms),
            max_age: nonzero(cfg.max_connection_age_ms),
            grace: ms(cfg.max_connection_age_grace_ms),
            max_per_ip: (cfg.max_connections_per_ip > 0).then_some(cfg.max_connections_per_ip),
            shed_idle_when_full: cfg.shed_idle_when_full,
            premature_reset: PrematureReset {
                min_stream_lifetime: ms(cfg.premature_reset_min_stream_lifetime_ms),
                total_stream_count: cfg.premature_reset_total_stream_count,
            },
        }
    }
}

/// The HTTP builders of a listener, one per pinned version.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

/// The live connections of a listener: by accept order (oldest first, to
/// shed the oldest idle one) and per client IP.
#[derive(Default)]
struct ConnTable {
    next_id: u64,
    by_id: BTreeMap<u64, Arc<ConnState>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Removes a connection from the table when its task ends.
struct TableEntry {
    table: Arc<Mutex<ConnTable>>,
    id: u64,
    ip: IpAddr,
}

impl Drop for TableEntry {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.by_id.remove(&self.id);
        if let Some(n) = t.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a connection is being closed by us.
#[derive(Debug, Clone, Copy)]
enum CloseReason {
    Drain,
    Idle,
    MaxAge,
    Shed,
    PrematureResets,
}

/// Accepts until `shutdown`, then drains connections up to `drain_timeout`.
pub(crate) async fn run(
    l: Listener,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    drain_timeout: Duration,
    shutdown: CancellationToken,
) {
    // Used only to wait for every connection task at drain: each task holds
    // a watcher; the drain signal itself is `shutdown`.
    let graceful = GracefulShutdown::new();
    let builders = Arc::new(http_builders(&l.cfg));
    let limits = Limits::new(&l.cfg);
    let permits = Arc::new(Semaphore::new(l.cfg.max_connections));
    let table = Arc::new(Mutex::new(ConnTable::default()));
    let mut last_full_warn: Option<Instant> = None;
    let premature_logged = Arc::new(AtomicBool::new(false));
    loop {
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
        let metrics = &l.metrics;
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        // A full listener keeps accepting and closes what it cannot serve,
        // so the kernel backlog never fills with clients waiting for nothing.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.refused_full.fetch_add(1, Ordering::Relaxed);
            let shed = limits.shed_idle_when_full && shed_oldest_idle(&table);
            if shed {
                metrics.shed.fetch_add(1, Ordering::Relaxed);
            }
            if last_full_warn.is_none_or(|at| at.elapsed() >= FULL_WARN_INTERVAL) {
                last_full_warn = Some(Instant::now());
                warn!(listener = %l.ctx.name, max_connections = l.cfg.max_connections, shed, "Listener full; closing new connections");
            } else {
                debug!(listener = %l.ctx.name, client.addr = %peer, shed, "Listener full; connection closed");
            }
            drop(tcp);
            continue;
        };
        let Some((state, entry)) = register(&table, client_key(peer.ip()), &limits, metrics) else {
            metrics.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            debug!(listener = %l.ctx.name, client.addr = %peer, "Too many connections from this client IP; connection closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::new(ConnCtx {
            shared: shared.clone(),
            listener: l.ctx.clone(),
            peer,
            forwarded: crate::edge::PeerHeaders::new(peer, &l.ctx.trusted_proxies, l.ctx.tls),
        });
        let task = ConnTask {
            builders: builders.clone(),
            tls: l.tls.clone(),
            limits,
            state,
            shutdown: shutdown.clone(),
            premature_logged: premature_logged.clone(),
            metrics: metrics.clone(),
        };
        let open = metrics.open_connection();
        let watcher = graceful.watcher();
        let span = debug_span!("conn", client.addr = %peer, listener = %l.ctx.name);
        // Off this runtime's reactor, onto the worker's.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                warn!(%error, listener = %l.ctx.name, "Accepted connection unusable");
                continue;
            }
        };
        workers.spawn_conn(move || {
            async move {
                let _slot = (permit, entry, watcher, open);
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => task.serve(tcp, ctx).await,
                    Err(error) => warn!(%error, "Accepted connection unusable"),
                }
            }
            .instrument(span)
        });
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

/// The address a per-client cap counts: an IPv4 address (IPv4-mapped
/// IPv6 included) as it is, an IPv6 address by its /64 prefix (one host
/// usually has a whole /64 to pick addresses from).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Adds a connection from `ip` to the table, unless that IP is at its cap.
fn register(
    table: &Arc<Mutex<ConnTable>>,
    ip: IpAddr,
    limits: &Limits,
    metrics: &Arc<ListenerMetrics>,
) -> Option<(Arc<ConnState>, TableEntry)> {
    let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
    let n = t.per_ip.entry(ip).or_insert(0);
    if limits.max_per_ip.is_some_and(|max| *n >= max) {
        return None;
    }
    *n += 1;
    let id = t.next_id;
    t.next_id += 1;
    let state = Arc::new(ConnState::new(id, limits.premature_reset, metrics.clone()));
    t.by_id.insert(id, state.clone());
    Some((
        state,
        TableEntry {
            table: table.clone(),
            id,
            ip,
        },
    ))
}

/// Asks the oldest connection without an open stream to close; true if
/// there was one.
fn shed_oldest_idle(table: &Mutex<ConnTable>) -> bool {
    let t = table.lock().unwrap_or_else(PoisonError::into_inner);
    t.by_id.values().any(|c| c.shed_if_idle())
}

/// One connection's task: first bytes, then hyper, under the lifecycle
/// limits.
struct ConnTask {
    builders: Arc<Builders>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    state: Arc<ConnState>,
    shutdown: CancellationToken,
    premature_logged: Arc<AtomicBool>,
    metrics: Arc<ListenerMetrics>,
}

// === impl ConnTask ===

impl ConnTask {
    async fn serve(self, tcp: TcpStream, ctx: Arc<ConnCtx>) {
        let accepted = Instant::now();
        // Before hyper: the TLS handshake and the first bytes, each under its
        // timeout, abandoned at once if the listener sheds this connection
        // or drains.
        let established = tokio::select! {
            res = self.establish(tcp) => res,
            _ = self.wait_shed() => {
                debug!("Shed before the first request (listener full)");
                None
            }
            _ = self.shutdown.cancelled() => None,
        };
        let Some((io, pinned)) = established else {
            return;
        };
        let builder = match pinned {
            Pinned::Http1 => &self.builders.h1,
            Pinned::Http2 => &self.builders.h2,
        };
        let state = self.state.clone();
        let svc = service_fn(move |req| {
            // Counted from here until the response body ends or is dropped.
            let guard = state.open_stream();
            let ctx = ctx.clone();
            let req = req.map(Lingering::new);
            async move {
                let resp = proxy::handle(ctx, req).await;
                Ok::<_, Infallible>(resp.map(|b| TrackedBody::new(b, guard)))
            }
        });
        let io = Counted::new(io, self.metrics.clone(), self.state.id);
        let conn = builder.serve_connection(TokioIo::new(Coalesce::new(io)), svc);
        tokio::pin!(conn);

        let limits = self.limits;
        let age_deadline = limits.max_age.map(|age| accepted + age);
        let mut closing: Option<CloseReason> = None;
        // When set, the connection is dropped (closed) at this instant.
        let mut hard_deadline: Option<Instant> = None;
        loop {
            // Checked lazily: when the timer fires with streams open, or
            // after one more recent idle start, it is re-armed.
            let idle_check = match (closing, limits.idle) {
                (None, Some(idle)) if self.state.open_streams() == 0 => {
                    Some(Instant::from_std(self.state.idle_since()) + idle)
                }
                (None, Some(idle)) => Some(Instant::now() + idle),
                _ => None,
            };
            let reason = tokio::select! {
                res = conn.as_mut() => {
                    if let Err(error) = res {
                        debug!(%error, "Connection ended with an error");
                        if conn::is_protocol_error(error.as_ref()) {
                            self.metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    return;
                }
                // Cancel-safe (Notify keeps a permit); re-evaluates below.
                _ = self.state.changed() => {
                    // Each close request acts once (a trip may still
                    // shorten another close's grace).
                    if self.state.is_tripped()
                        && !matches!(closing, Some(CloseReason::PrematureResets))
                    {
                        CloseReason::PrematureResets
                    } else if self.state.is_shed() && closing.is_none() {
                        CloseReason::Shed
                    } else {
                        continue;
                    }
                }
                _ = sleep_until(idle_check.unwrap_or(accepted)), if idle_check.is_some() => {
                    let idle = limits.idle.unwrap_or_default();
                    if self.state.open_streams() != 0
                        || Instant::now() < Instant::from_std(self.state.idle_since()) + idle
                    {
                        continue;
                    }
                    CloseReason::Idle
                }
                _ = sleep_until(age_deadline.unwrap_or(accepted)), if closing.is_none() && age_deadline.is_some() => {
                    CloseReason::MaxAge
                }
                _ = self.shutdown.cancelled(), if !matches!(closing, Some(CloseReason::Drain)) => {
                    CloseReason::Drain
                }
                _ = sleep_until(hard_deadline.unwrap_or(accepted)), if hard_deadline.is_some() => {
                    debug!(reason = ?closing, open_streams = self.state.open_streams(), "Grace period over; closing connection");
                    return;
                }
            };
            if matches!(reason, CloseReason::PrematureResets) {
                let (streams, premature) = self.state.reset_counts();
                if !self.premature_logged.swap(true, Ordering::Relaxed) {
                    info!(
                        streams,
                        premature,
                        "Closing connection: too many streams reset by the client right after opening (logged once per listener)"
                    );
                } else {
                    debug!(
                        streams,
                        premature, "Closing connection: too many premature resets"
                    );
                }
            } else {
                debug!(
                    ?reason,
                    open_streams = self.state.open_streams(),
                    "Closing connection"
                );
            }
            // GOAWAY on HTTP/2 (in-flight streams finish), close when idle on
            // HTTP/1.1. Calling it again later is harmless.
            if closing.is_none() {
                conn.as_mut().graceful_shutdown();
            }
            let grace = match reason {
                // The listener's drain timeout bounds the rest.
                CloseReason::Drain => None,
                CloseReason::PrematureResets => Some(PREMATURE_RESET_GRACE),
                CloseReason::Idle | CloseReason::Shed => Some(limits.grace.min(IDLE_CLOSE_GRACE)),
                CloseReason::MaxAge => Some(limits.grace),
            };
            if let Some(grace) = grace {
                let at = Instant::now() + grace;
                hard_deadline = Some(hard_deadline.map_or(at, |d| d.min(at)));
            }
            closing = Some(reason);
        }
    }

    /// TLS handshake (under its timeout), then the first bytes (under the
    /// preface timeout). None when the connection should just close.
    async fn establish(&self, tcp: TcpStream) -> Option<(Rewind<Stream>, Pinned)> {
        // Under TLS, ALPN pins the version; on cleartext the preface does.
        let (mut io, alpn) = match &self.tls {
            None => (Stream::Plain(tcp), None),
            Some(acceptor) => {
                let stream =
                    match tokio::time::timeout(self.limits.tls_handshake, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(s)) => {
                            self.metrics.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                            s
                        }
                        Ok(Err(error)) => {
                            debug!(%error, "TLS handshake failed");
                            self.metrics.tls_failed.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                        Err(_) => {
                            debug!("TLS handshake timed out");
                            self.metrics.tls_timed_out.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    };
                let pinned = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Pinned::Http2
                } else {
                    Pinned::Http1
                };
                (Stream::Tls(Box::new(stream)), Some(pinned))
            }
        };
        match tokio::time::timeout(self.limits.preface, conn::read_first_bytes(&mut io)).await {
            Ok(Ok((first, replay))) => {
                let pinned = alpn.unwrap_or(match first {
                    FirstBytes::Http2 => Pinned::Http2,
                    FirstBytes::Other => Pinned::Http1,
                });
                Some((Rewind::new(replay, io), pinned))
            }
            Ok(Err(error)) => {
                debug!(%error, "Connection closed before the first request");
                if matches!(error, conn::PrefaceError::NotSettings(_)) {
                    self.metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Err(_) => {
                debug!(timeout = ?self.limits.preface, "No request bytes in time; closing connection");
                None
            }
        }
    }

    /// Resolves when the listener asks this connection to close.
    async fn wait_shed(&self) {
        while !self.state.is_shed() {
            self.state.changed().await;
        }
    }
}

/// Which HTTP version a connection speaks: from ALPN under TLS, from the
/// first bytes on cleartext (so hyper need not sniff again).
#[derive(Debug, Clone, Copy)]
enum Pinned {
    Http1,
    Http2,
}

fn http_builders(cfg: &ListenerConfig) -> Builders {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms))
        .keep_alive(true);
    let mut h2 = b.http2();
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .initial_stream_window_size(cfg.stream_window_bytes)
        .initial_connection_window_size(cfg.connection_window_bytes)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
    if cfg.keepalive_interval_ms > 0 {
        h2.keep_alive_interval(Duration::from_millis(cfg.keepalive_interval_ms))
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    }
    Builders {
        h1: b.clone().http1_only(),
        h2: b.http2_only(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_groups_ipv6_by_64() {
        let key = |s: &str| client_key(s.parse().expect("ip")).to_string();
        assert_eq!(key("127.0.0.2"), "127.0.0.2");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
