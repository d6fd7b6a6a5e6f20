//! HTTP/2 connections to one endpoint: TCP (+ TLS with ALPN `h2`), the h2
//! handshake, and a multiplexed connection reused by every request until it
//! closes (then the next request opens a new one).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{net::TcpStream, sync::Mutex};
use tracing::debug;

use crate::{
    body::UpstreamBody,
    config::{ClusterConfig, ConfigError},
    error::BalancerError,
};

/// Window sizes for upstream h2 connections: large enough that one stream
/// of multi-MiB messages is not throttled by round trips on fast links.
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// A keep-alive PING unanswered this long closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A sender of requests on one upstream h2 connection.
pub type Sender = http2::SendRequest<UpstreamBody>;

/// How to open connections for one cluster (shared by its endpoints).
pub struct Connector {
    tls: Option<TlsSettings>,
    connect_timeout: Duration,
    keepalive_interval: Option<Duration>,
    /// Scheme put in the `:scheme` pseudo-header.
    pub scheme: http::uri::Scheme,
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
            Some(t) => {
                let field = format!("{at}.tls.ca_file");
                let certs = CertificateDer::pem_file_iter(&t.ca_file)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        ConfigError::new(
                            &field,
                            format!("cannot read `{}`: {e}", t.ca_file.display()),
                        )
                    })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        ConfigError::new(&field, format!("bad CA certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(ConfigError::new(&field, "no certificate in file"));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ConfigError::new(&field, e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec()];
                let server_name = match &t.server_name {
                    None => None,
                    Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
                        ConfigError::new(
                            format!("{at}.tls.server_name"),
                            format!("`{n}` is not a DNS name"),
                        )
                    })?),
                };
                Some(TlsSettings {
                    connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                    server_name,
                })
            }
        };
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        Ok(Self {
            tls,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            keepalive_interval: (cfg.keepalive_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.keepalive_interval_ms)),
            scheme,
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

    /// Opens a new h2 connection and spawns its driver task.
    pub async fn connect(&self, addr: SocketAddr, host: &str) -> Result<Sender, BalancerError> {
        let io = self.connect_io(addr, host).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(64 * 1024)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(every) = self.keepalive_interval {
            builder.keep_alive_interval(every);
        }
        let handshake = async {
            match io {
                Io::Plain(s) => spawn_conn(builder.handshake(TokioIo::new(s)).await, addr),
                Io::Tls(s) => spawn_conn(builder.handshake(TokioIo::new(*s)).await, addr),
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

/// What an h2 handshake returns.
type Handshake<T> = Result<
    (
        Sender,
        http2::Connection<TokioIo<T>, UpstreamBody, TokioExecutor>,
    ),
    hyper::Error,
>;

fn spawn_conn<T>(res: Handshake<T>, addr: SocketAddr) -> Result<Sender, BalancerError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = res.map_err(|source| BalancerError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            debug!(%addr, %error, "Upstream connection ended");
        }
    });
    Ok(sender)
}

/// A connected byte stream, cleartext or TLS.
pub enum Io {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The reusable h2 connection of one endpoint.
pub struct ConnPool {
    current: ArcSwapOption<Sender>,
    connecting: Mutex<()>,
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
        Self {
            current: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
        }
    }

    /// A sender on an open connection, connecting first when there is none
    /// (one connect at a time; concurrent callers share its result). The
    /// flag is true when this call opened the connection.
    pub async fn get(
        &self,
        connector: &Connector,
        addr: SocketAddr,
        host: &str,
    ) -> Result<(Sender, bool), BalancerError> {
        if let Some(s) = self.open() {
            return Ok((s, false));
        }
        let _guard = self.connecting.lock().await;
        if let Some(s) = self.open() {
            return Ok((s, false));
        }
        let sender = connector.connect(addr, host).await?;
        self.current.store(Some(Arc::new(sender.clone())));
        Ok((sender, true))
    }

    fn open(&self) -> Option<Sender> {
        let guard = self.current.load();
        let s = guard.as_ref()?;
        (!s.is_closed()).then(|| (**s).clone())
    }

    /// Forgets the current connection (closed or refusing requests).
    pub fn invalidate(&self) {
        self.current.store(None);
    }
}
