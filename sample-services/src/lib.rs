//! Sample gRPC services for demos and tests of the gateway.
//!
//! Three application services run on one listener:
//!
//! - `CodenameCreator` (package-less, from the HAProxy gRPC demo): a unary `GetCodename` and a
//!   bidi `KeepGettingCodenames` that streams a codename every [`ServerOptions::codename_interval`]
//!   for the latest category the client sent.
//! - `sample.echo.v1.Echo`: every streaming kind, chosen status codes, large payloads, metadata
//!   echo (headers and `trailer-`-prefixed trailers), deadlines and cancellation (see
//!   `proto/echo.proto`).
//! - `sample.library.v1.LibraryService`: for JSON transcoding; `google.api.http` rules of every
//!   kind, every streaming kind, every field and well-known type (`AllTypes`), and statuses with
//!   `google.rpc` error details (see `proto/library.proto`). Its `x-*` metadata is echoed like
//!   Echo's.
//!
//! Beside them: `grpc.health.v1.Health` (tonic-health) and server reflection v1 and v1alpha
//! (tonic-reflection, built from [`FILE_DESCRIPTOR_SET`]). Every response carries
//! `x-server-id: <id>` so tests can tell replicas apart, and [`Stats`] counts calls, cancels and
//! deadlines of the application services.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use http::HeaderValue;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt as _, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::{ServingStatus, server::HealthReporter};

mod call;
mod codename_service;
mod conn;
mod echo_service;
mod library_service;
mod stats;
mod stream_plan;
mod timeout;

pub use stats::Stats;
pub use timeout::parse_grpc_timeout;

/// Types and tonic client/server generated from `proto/codename.proto` (no proto package).
#[allow(clippy::all, missing_docs)]
pub mod codename {
    tonic::include_proto!("_");
}

/// Types and tonic client/server generated from `proto/echo.proto` (`sample.echo.v1`).
#[allow(clippy::all, missing_docs)]
pub mod echo {
    tonic::include_proto!("sample.echo.v1");
}

/// Types and tonic client/server generated from `proto/library.proto` (`sample.library.v1`).
#[allow(clippy::all, missing_docs)]
pub mod library {
    tonic::include_proto!("sample.library.v1");
}

/// The `google.rpc` error model (`Status`, `BadRequest`, `ErrorInfo`, …) from the bundled
/// `google/rpc/status.proto` and `error_details.proto`, to decode `grpc-status-details-bin`.
#[allow(clippy::all, missing_docs)]
pub mod google_rpc {
    tonic::include_proto!("google.rpc");
}

/// Encoded `FileDescriptorSet` of `codename.proto`, `echo.proto` and `library.proto` with all
/// their imports (`google/api/annotations.proto`, `google/api/http.proto`,
/// `google/protobuf/*.proto`), like `protoc --include_imports`, as users would upload it to the
/// gateway; it also feeds the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sample_descriptor.bin"));

/// Full name of the codename service (the proto file has no package).
pub const CODENAME_SERVICE: &str = codename::codename_creator_server::SERVICE_NAME;
/// Full name of the echo service.
pub const ECHO_SERVICE: &str = echo::echo_server::SERVICE_NAME;
/// Full name of the library service.
pub const LIBRARY_SERVICE: &str = library::library_service_server::SERVICE_NAME;
/// Response header (and metadata key) naming the server that answered.
pub const SERVER_ID_HEADER: &str = "x-server-id";

/// Default delay between streamed codenames.
pub const DEFAULT_CODENAME_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`SampleServer::shutdown`] waits for open calls before it cuts connections off.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Health-check names set by [`SampleServer::set_serving`]: overall (`""`) and each service.
const HEALTH_NAMES: [&str; 4] = ["", CODENAME_SERVICE, ECHO_SERVICE, LIBRARY_SERVICE];

/// PEM-encoded certificate chain and private key for serving TLS.
#[derive(Clone)]
pub struct TlsPem {
    /// Certificate chain, leaf first (PEM).
    pub cert_pem: Vec<u8>,
    /// Private key of the leaf certificate (PEM).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsPem").finish_non_exhaustive()
    }
}

/// How to run a [`SampleServer`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Sent back as `x-server-id` on every response and in `EchoResponse.server_id`.
    pub id: String,
    /// Delay between codenames on `KeepGettingCodenames`.
    pub codename_interval: Duration,
    /// Serve TLS (ALPN `h2`) with this identity instead of cleartext HTTP/2.
    pub tls: Option<TlsPem>,
    /// With `tls`: require client certificates signed by this CA (PEM),
    /// for mutual TLS.
    pub client_ca_pem: Option<Vec<u8>>,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced to clients; none =
    /// no limit.
    pub max_concurrent_streams: Option<u32>,
}

impl ServerOptions {
    /// Options with the given server id, a 1 s codename interval and no TLS.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            codename_interval: DEFAULT_CODENAME_INTERVAL,
            tls: None,
            client_ca_pem: None,
            max_concurrent_streams: None,
        }
    }
}

/// A running sample server; dropping it kills the server (closes every connection at once).
#[derive(Debug)]
pub struct SampleServer {
    /// Address the server listens on.
    pub addr: SocketAddr,
    /// The server id from [`ServerOptions::id`].
    pub id: String,
    /// Live counters of the application services' calls.
    pub stats: Arc<Stats>,
    /// Health of the overall server (`""`) and of each service, for `grpc.health.v1`.
    pub health: HealthReporter,
    /// Stops accepting and drains connections gracefully (GOAWAY).
    shutdown: CancellationToken,
    /// Fails all I/O of accepted connections.
    kill: CancellationToken,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

// === impl SampleServer ===

impl SampleServer {
    /// Stops accepting, lets open calls finish for at most [`DEFAULT_SHUTDOWN_GRACE`], then
    /// closes the connections still open.
    pub async fn shutdown(self) {
        self.shutdown_within(DEFAULT_SHUTDOWN_GRACE).await;
    }

    /// Stops accepting, lets open calls finish for at most `grace`, then closes the connections
    /// still open; returns once the server is gone.
    pub async fn shutdown_within(mut self, grace: Duration) {
        self.shutdown.cancel();
        let Some(mut task) = self.task.take() else {
            return;
        };
        let result = match tokio::time::timeout(grace, &mut task).await {
            Ok(result) => result,
            Err(_) => {
                self.kill.cancel();
                task.await
            }
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Sample server failed"),
            Err(error) => tracing::warn!(%error, "Sample server task failed"),
        }
    }

    /// Closes every connection and the listener at once, as if the process died; what
    /// dropping the server does.
    pub fn kill(self) {
        drop(self);
    }

    /// Sets the health of the overall server (`""`) and of every service to SERVING or
    /// NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in HEALTH_NAMES {
            self.health.set_service_status(name, status).await;
        }
    }
}

impl Drop for SampleServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr`, then serves as [`spawn`] does.
pub async fn spawn_on(addr: SocketAddr, opts: ServerOptions) -> anyhow::Result<SampleServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    spawn(listener, opts).await
}

/// Serves CodenameCreator, Echo, LibraryService, health and reflection on an already bound
/// `listener` in a background task; returns once the server is accepting.
pub async fn spawn(listener: TcpListener, opts: ServerOptions) -> anyhow::Result<SampleServer> {
    let addr = listener.local_addr().context("listener address")?;
    let server_id = HeaderValue::from_str(&opts.id)
        .with_context(|| format!("server id {:?} is not a valid header value", opts.id))?;
    let stats = Arc::new(Stats::default());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("build reflection v1")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("build reflection v1alpha")?;

    let mut builder = Server::builder().max_concurrent_streams(opts.max_concurrent_streams);
    if let Some(tls) = &opts.tls {
        let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        builder = builder
            .tls_config(match &opts.client_ca_pem {
                None => ServerTlsConfig::new().identity(identity),
                Some(ca) => ServerTlsConfig::new()
                    .identity(identity)
                    .client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            })
            .context("TLS config")?;
    }
    let router = builder
        // One layer for every service: adds x-server-id, counts application calls, records the
        // deadline and echoes Echo's and LibraryService's x-* metadata into headers and
        // trailers.
        .layer(call::CallLayer::new(server_id, stats.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(codename_service::server(opts.codename_interval))
        .add_service(echo_service::server(opts.id.clone(), stats.clone()))
        .add_service(library_service::server());

    // Accepted sockets get TCP_NODELAY as tonic's own listener would set (a failure to set it is
    // an accept error, which tonic logs and skips), and can be cut off by `kill`.
    let kill = CancellationToken::new();
    let incoming = TcpListenerStream::new(listener).map({
        let kill = kill.clone();
        let stats = stats.clone();
        move |conn| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            stats
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(conn::KillableIo::new(conn, kill.clone(), stats.clone()))
        }
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
    );

    Ok(SampleServer {
        addr,
        id: opts.id,
        stats,
        health,
        shutdown,
        kill,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn descriptor_set_holds_the_services_and_their_imports() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<_> = set.file.iter().map(|file| file.name()).collect();
        for name in [
            "codename.proto",
            "echo.proto",
            "library.proto",
            "google/api/annotations.proto",
            "google/api/http.proto",
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/struct.proto",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // The error model is compiled to Rust only.
        assert!(!names.contains(&"google/rpc/status.proto"));
        // Each file once, dependencies before their dependents (as protoc writes them).
        for (i, file) in set.file.iter().enumerate() {
            for dependency in &file.dependency {
                let at = names.iter().position(|name| name == dependency);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{dependency} of {}",
                    file.name()
                );
            }
        }
        let library = set
            .file
            .iter()
            .find(|file| file.name() == "library.proto")
            .unwrap();
        assert_eq!(library.package(), "sample.library.v1");
        assert_eq!(library.service[0].name(), "LibraryService");
        assert_eq!(LIBRARY_SERVICE, "sample.library.v1.LibraryService");
    }
}
