//! Connections to one endpoint: TCP (+ TLS with ALPN `h2`), the h2
//! handshake, and the endpoint's pool: multiplexed h2 connections shared by
//! every request, a new one opened only when the open ones are at the
//! server's SETTINGS_MAX_CONCURRENT_STREAMS (up to a cap per endpoint); for
//! plain HTTP/1.1 clusters, a pool of idle keep-alive connections.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{net::TcpStream, sync::Mutex};
use tracing::debug;

use crate::{
    body::UpstreamBody,
    config::{ClusterConfig, ConfigError},
    error::BalancerError,
    h2conn::{self, H2Conn, H2Settings, StreamSlot},
    stats::ConnStats,
};

/// Window sizes for upstream h2 connections: large enough that one stream
/// of multi-MiB messages is not throttled by round trips on fast links.
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// A keep-alive PING unanswered this long closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response header list accepted from an endpoint.
const MAX_HEADER_LIST_BYTES: u32 = 1024 * 1024;

/// How to open connections for one cluster (shared by its endpoints).
pub struct Connector {
    tls: Option<TlsSettings>,
    connect_timeout: Duration,
    h2: H2Settings,
    /// Most h2 connections open to one endpoint at once.
    pub max_connections: usize,
    /// Most HTTP/1.1 connections open to one endpoint at once (`http1`
    /// clusters).
    pub max_http1_connections: usize,
    /// Longest wait for a free stream when every connection is at the
    /// server's limit and no more may be opened.
    stream_wait: Duration,
    /// The cluster, for errors.
    cluster: crate::config::ClusterName,
    /// Scheme put in the `:scheme` pseudo-header.
    pub scheme: http::uri::Scheme,
    /// Speak HTTP/1.1 to the endpoints (plain HTTP clusters).
    pub http1: bool,
}

struct TlsSettings {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

// === impl Connector ===

impl Connector {
    /// Builds the connector of a cluster, loading its CA file if any.
    pub fn new(cfg: &ClusterConfig, at: &str) -> Result<Self, ConfigError> {
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(tls_settings(
                t,
                at,
                cfg.protocol == crate::config::UpstreamProtocol::Http1,
            )?),
        };
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        Ok(Self {
            tls,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            h2: H2Settings {
                stream_window: STREAM_WINDOW_BYTES,
                connection_window: CONNECTION_WINDOW_BYTES,
                max_frame_size: 64 * 1024,
                max_header_list_size: MAX_HEADER_LIST_BYTES,
                keepalive_interval: (cfg.keepalive_interval_ms > 0)
                    .then(|| Duration::from_millis(cfg.keepalive_interval_ms)),
                keepalive_timeout: KEEPALIVE_TIMEOUT,
                idle_timeout: (cfg.idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(cfg.idle_timeout_ms)),
            },
            max_connections: cfg.max_connections_per_endpoint as usize,
            max_http1_connections: cfg.http1_connections_per_endpoint() as usize,
            stream_wait: Duration::from_millis(cfg.queue_timeout_ms),
            cluster: cfg.name.clone(),
            scheme,
            http1: cfg.protocol == crate::config::UpstreamProtocol::Http1,
        })
    }

    /// Opens a TCP (+ TLS) connection to `addr` within the connect timeout;
    /// `host` is the endpoint's configured host, used for TLS verification
    /// when no server name is configured.
    pub async fn connect_io(&self, addr: SocketAddr, host: &str) -> Result<Io, BalancerError> {
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| BalancerError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Io::Plain(tcp)),
                Some(tls) => {
                    let name = match &tls.server_name {
                        Some(n) => n.clone(),
                        None => ServerName::try_from(host.to_string()).map_err(|_| {
                            BalancerError::Tls {
                                addr,
                                source: io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    format!("`{host}` is not a valid TLS server name"),
                                ),
                            }
                        })?,
                    };
                    let stream = tls
                        .connector
                        .connect(name, tcp)
                        .await
                        .map_err(|source| BalancerError::Tls { addr, source })?;
                    Ok(Io::Tls(Box::new(stream)))
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| BalancerError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            })?
    }

    /// Opens a new h2 connection (its driver task spawned) and learns the
    /// server's settings.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        host: &str,
        freed: Arc<tokio::sync::Notify>,
        stats: Arc<ConnStats>,
    ) -> Result<Arc<H2Conn>, BalancerError> {
        let io = self.connect_io(addr, host).await?;
        let handshake = async {
            match io {
                Io::Plain(s) => h2conn::handshake(s, self.h2, addr, freed, stats).await,
                Io::Tls(s) => h2conn::handshake(*s, self.h2, addr, freed, stats).await,
            }
            .map_err(|source| BalancerError::Handshake {
                addr,
                source: Box::new(source),
            })
        };
        tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| BalancerError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            })?
    }
}

impl Connector {
    /// Opens a new HTTP/1.1 connection and spawns its driver task, which
    /// holds `open` (the connection's place under the endpoint's cap) until
    /// the connection ends.
    async fn connect_h1(
        &self,
        addr: SocketAddr,
        host: &str,
        open: H1Open,
    ) -> Result<H1Sender, BalancerError> {
        let io = self.connect_io(addr, host).await?;
        let handshake = async {
            match io {
                Io::Plain(s) => spawn_h1(TokioIo::new(s), addr, open).await,
                Io::Tls(s) => spawn_h1(TokioIo::new(*s), addr, open).await,
            }
        };
        tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| BalancerError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            })?
    }
}

/// HTTP/1.1 handshake on `io`, with the connection driven by its own task.
async fn spawn_h1<T>(
    io: TokioIo<T>,
    addr: SocketAddr,
    open: H1Open,
) -> Result<H1Sender, BalancerError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|source| BalancerError::Handshake {
            addr,
            source: Box::new(source),
        })?;
    tokio::spawn(async move {
        // Counted as open until the connection is over.
        let _open = open;
        if let Err(error) = conn.await {
            debug!(%addr, %error, "Upstream HTTP/1.1 connection ended");
        }
    });
    Ok(tx)
}

/// One open HTTP/1.1 connection's place under the endpoint's cap; given
/// back, and waiters woken, on drop.
struct H1Open {
    open: Arc<AtomicUsize>,
    changed: Arc<tokio::sync::Notify>,
}

impl H1Open {
    /// Takes a place if fewer than `cap` connections are open.
    fn try_take(
        open: &Arc<AtomicUsize>,
        changed: &Arc<tokio::sync::Notify>,
        cap: usize,
    ) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .ok()?;
        Some(Self {
            open: open.clone(),
            changed: changed.clone(),
        })
    }
}

impl Drop for H1Open {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// A sender on one upstream HTTP/1.1 connection (one request at a time).
pub type H1Sender = hyper::client::conn::http1::SendRequest<UpstreamBody>;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_H1: usize = 64;

fn read_certs(
    path: &std::path::Path,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(field, format!("cannot read `{}`: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(field, "no certificate in file"));
    }
    Ok(certs)
}

fn tls_settings(
    t: &crate::config::UpstreamTlsConfig,
    at: &str,
    http1: bool,
) -> Result<TlsSettings, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(format!("{at}.tls"), e.to_string()))?;
    let builder = if t.insecure_skip_verify {
        tracing::warn!(cluster = %at, "Upstream TLS certificates are NOT verified (insecure_skip_verify = true)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let field = format!("{at}.tls.ca_file");
        let Some(ca) = &t.ca_file else {
            return Err(ConfigError::new(field, "required"));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca, &field)? {
            roots
                .add(cert)
                .map_err(|e| ConfigError::new(&field, format!("bad CA certificate: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, &format!("{at}.tls.cert_file"))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ConfigError::new(
                    format!("{at}.tls.key_file"),
                    format!("cannot read `{}`: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ConfigError::new(
                    format!("{at}.tls"),
                    format!("client certificate and key do not fit: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http1 {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec()]
    };
    let server_name = match &t.server_name {
        None => None,
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
            ConfigError::new(
                format!("{at}.tls.server_name"),
                format!("`{n}` is not a DNS name"),
            )
        })?),
    };
    Ok(TlsSettings {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// Accepts any server certificate (`insecure_skip_verify`), still checking
/// that the handshake is signed by the certificate's key.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connected byte stream, cleartext or TLS.
pub enum Io {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The connections of one endpoint.
pub struct ConnPool {
    /// Open h2 connections, oldest first.
    h2: ArcSwap<Vec<Arc<H2Conn>>>,
    /// Notified when a stream on one of them ends.
    freed: Arc<tokio::sync::Notify>,
    connecting: Mutex<()>,
    /// Failed connects so far: a request that waited for `connecting`
    /// while one failed shares that failure.
    connect_failures: AtomicU64,
    /// HTTP/1.1 connections of this endpoint, oldest first: idle ones, and
    /// busy ones whose response is still being read (ready again after).
    idle_h1: std::sync::Mutex<Vec<H1Sender>>,
    /// Open HTTP/1.1 connections, from connect to the end of their driver.
    h1_open: Arc<AtomicUsize>,
    /// Notified when an HTTP/1.1 connection is handed back or closes.
    h1_changed: Arc<tokio::sync::Notify>,
    /// Connects tried and failed, GOAWAYs and resets received (metrics).
    stats: Arc<ConnStats>,
}

// === impl ConnPool ===

impl Default for ConnPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnPool {
    /// An empty pool; the first request connects.
    pub fn new() -> Self {
        Self::with_stats(Arc::default())
    }

    /// An empty pool counting its connection events in `stats` (shared by
    /// an endpoint's per-worker pools).
    pub fn with_stats(stats: Arc<ConnStats>) -> Self {
        Self {
            h2: ArcSwap::from_pointee(Vec::new()),
            freed: Arc::new(tokio::sync::Notify::new()),
            connecting: Mutex::new(()),
            connect_failures: AtomicU64::new(0),
            idle_h1: std::sync::Mutex::new(Vec::new()),
            h1_open: Arc::new(AtomicUsize::new(0)),
            h1_changed: Arc::new(tokio::sync::Notify::new()),
            stats,
        }
    }

    /// This endpoint's connection events, for the metrics.
    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    /// A place for one stream on an open connection with room under the
    /// server's stream limit; else a new connection (one connect at a time,
    /// concurrent callers share it), up to the connector's cap, past which
    /// the request waits (up to the queue timeout) for a stream to end.
    /// The flag is true when this call opened a connection.
    pub async fn get(
        &self,
        connector: &Connector,
        addr: SocketAddr,
        host: &str,
    ) -> Result<(StreamSlot, bool), BalancerError> {
        if let Some(slot) = self.reserve() {
            return Ok((slot, false));
        }
        {
            let failures = self.connect_failures.load(Ordering::Acquire);
            let _guard = self.connecting.lock().await;
            if let Some(slot) = self.reserve() {
                return Ok((slot, false));
            }
            if self.connect_failures.load(Ordering::Acquire) != failures {
                // The connect this request waited for failed: trying again
                // in turn would cost every waiter another connect timeout.
                return Err(BalancerError::ConnectFailedMeanwhile { addr });
            }
            let conns = self.h2.load();
            let open = conns.iter().filter(|c| !c.is_closed()).count();
            // A server that allows no stream at all gets no more connections.
            let refusing = conns.iter().any(|c| !c.is_closed() && c.allows_no_stream());
            if open < connector.max_connections.max(1) && !refusing {
                // Boxed: the connect future (TCP, TLS, h2) is large and rare.
                self.stats.connect_attempts.fetch_add(1, Ordering::Relaxed);
                let conn =
                    Box::pin(connector.connect(addr, host, self.freed.clone(), self.stats.clone()))
                        .await
                        .inspect_err(|_| {
                            self.connect_failures.fetch_add(1, Ordering::Release);
                            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        })?;
                let slot = conn.try_reserve();
                if open > 0 {
                    debug!(%addr, connections = open + 1, "Endpoint's connections are at its stream limit; opened another");
                }
                self.h2.rcu(|list| {
                    let mut next: Vec<_> =
                        list.iter().filter(|c| !c.is_closed()).cloned().collect();
                    next.push(conn.clone());
                    next
                });
                if let Some(slot) = slot {
                    return Ok((slot, true));
                }
            }
        }
        Box::pin(self.wait_for_stream(connector)).await
    }

    /// Every connection is at the server's limit and the cap is reached:
    /// waits for a stream to end, in the order of wake-ups, up to the
    /// queue timeout (the server's limit works like HAProxy's `maxconn`).
    async fn wait_for_stream(
        &self,
        connector: &Connector,
    ) -> Result<(StreamSlot, bool), BalancerError> {
        let start = std::time::Instant::now();
        let deadline = tokio::time::Instant::from_std(start + connector.stream_wait);
        loop {
            let mut freed = std::pin::pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(slot) = self.reserve() {
                return Ok((slot, false));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(BalancerError::QueueTimeout {
                    cluster: connector.cluster.clone(),
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// A slot on the first open connection with room.
    fn reserve(&self) -> Option<StreamSlot> {
        self.h2
            .load()
            .iter()
            .filter(|c| !c.is_closed())
            .find_map(H2Conn::try_reserve)
    }

    /// Open h2 connections.
    pub fn connections(&self) -> usize {
        self.h2.load().iter().filter(|c| !c.is_closed()).count()
    }

    /// An idle HTTP/1.1 connection ready for a request, or a new one (the
    /// flag is true when this call opened it) while fewer than the
    /// connector's `max_http1_connections` are open. Past the cap the
    /// request waits, up to the queue timeout, for a connection to finish
    /// its response or to close, then fails with `QueueTimeout`.
    pub async fn get_h1(
        &self,
        connector: &Connector,
        addr: SocketAddr,
        host: &str,
    ) -> Result<(H1Sender, bool), BalancerError> {
        let start = std::time::Instant::now();
        let mut deadline = None;
        loop {
            // Registered before looking, so a change in between is not missed.
            let mut changed = std::pin::pin!(self.h1_changed.notified());
            changed.as_mut().enable();
            if let Some(ready) = self.take_ready_h1() {
                return Ok((ready, false));
            }
            let cap = connector.max_http1_connections.max(1);
            if let Some(open) = H1Open::try_take(&self.h1_open, &self.h1_changed, cap) {
                // Boxed: the connect future (TCP, TLS) is large and rare.
                self.stats.connect_attempts.fetch_add(1, Ordering::Relaxed);
                let sender = Box::pin(connector.connect_h1(addr, host, open))
                    .await
                    .inspect_err(|_| {
                        self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    })?;
                return Ok((sender, true));
            }
            let deadline = *deadline.get_or_insert_with(|| {
                tokio::time::Instant::from_std(start + connector.stream_wait)
            });
            let timed_out = || BalancerError::QueueTimeout {
                cluster: connector.cluster.clone(),
                waited: start.elapsed(),
            };
            // Wait on the oldest busy connection (its response ends, then
            // it is ready) or for another to come back or close.
            let busy = self.idle_h1.lock().ok().and_then(|mut idle| {
                idle.retain(|s| !s.is_closed());
                (!idle.is_empty()).then(|| idle.remove(0))
            });
            let Some(mut busy) = busy else {
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Err(timed_out());
                }
                continue;
            };
            // Cancel-safe branches only: `ready` and `notified` keep no
            // state a drop loses; the connection is handed back when not used.
            tokio::select! {
                r = busy.ready() => match r {
                    Ok(()) => return Ok((busy, false)),
                    Err(_) => continue, // closed: its place is free now
                },
                _ = changed => self.put_back_h1(busy),
                _ = tokio::time::sleep_until(deadline) => {
                    self.put_back_h1(busy);
                    return Err(timed_out());
                }
            }
        }
    }

    /// Removes and returns an open connection ready for a request.
    fn take_ready_h1(&self) -> Option<H1Sender> {
        let mut idle = self.idle_h1.lock().ok()?;
        idle.retain(|s| !s.is_closed());
        let pos = idle.iter().position(|s| s.is_ready())?;
        Some(idle.swap_remove(pos))
    }

    /// Returns an HTTP/1.1 connection for reuse once its response is read,
    /// and wakes a request waiting for one.
    pub fn put_h1(&self, sender: H1Sender) {
        self.put_back_h1(sender);
        self.h1_changed.notify_waiters();
    }

    fn put_back_h1(&self, sender: H1Sender) {
        if let Ok(mut idle) = self.idle_h1.lock()
            && idle.len() < MAX_IDLE_H1
            && !sender.is_closed()
        {
            idle.push(sender);
        }
    }

    /// Open HTTP/1.1 connections.
    pub fn h1_connections(&self) -> usize {
        self.h1_open.load(Ordering::Acquire)
    }

    /// Takes one connection out of use.
    pub fn invalidate_conn(&self, conn: &Arc<H2Conn>) {
        conn.close();
        self.h2.rcu(|list| {
            list.iter()
                .filter(|c| !c.is_closed())
                .cloned()
                .collect::<Vec<_>>()
        });
    }
}
