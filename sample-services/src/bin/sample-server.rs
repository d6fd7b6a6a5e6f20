//! Runs the sample services (CodenameCreator, Echo, LibraryService, health, reflection) until
//! Ctrl-C or SIGTERM.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser;
use sample_services::{ServerOptions, TlsPem};
use tracing_subscriber::EnvFilter;

/// Used when neither --id nor the host name gives one.
const FALLBACK_ID: &str = "server";

/// Serve the sample gRPC services.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Server id sent back as `x-server-id` (default: the host name).
    #[arg(long, alias = "name")]
    id: Option<String>,
    /// Milliseconds between codenames on KeepGettingCodenames.
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// PEM certificate chain: serve TLS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS to announce (default: no limit).
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let id = match args.id {
        Some(id) => id,
        None => host_name().await.unwrap_or_else(|| FALLBACK_ID.to_owned()),
    };
    let mut opts = ServerOptions::new(id);
    opts.codename_interval = Duration::from_millis(args.interval_ms);
    opts.max_concurrent_streams = args.max_concurrent_streams;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        opts.tls = Some(TlsPem {
            cert_pem: tokio::fs::read(cert)
                .await
                .with_context(|| format!("read {}", cert.display()))?,
            key_pem: tokio::fs::read(key)
                .await
                .with_context(|| format!("read {}", key.display()))?,
        });
    }
    let tls = opts.tls.is_some();

    let server = sample_services::spawn_on(args.listen, opts).await?;
    tracing::info!(addr = %server.addr, id = %server.id, tls, "listening");
    shutdown_signal().await?;
    tracing::info!("Shutting down");
    server.shutdown().await;
    Ok(())
}

/// The host name, from `$HOSTNAME` or the kernel.
async fn host_name() -> Option<String> {
    let name = match std::env::var("HOSTNAME") {
        Ok(name) => name,
        Err(_) => tokio::fs::read_to_string("/proc/sys/kernel/hostname")
            .await
            .ok()?,
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listen for SIGTERM")?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res.context("listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("listen for Ctrl-C")?;
    Ok(())
}
