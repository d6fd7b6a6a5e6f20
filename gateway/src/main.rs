//! The `gateway` binary: parse arguments, load config, init tracing, run
//! until SIGINT/SIGTERM, drain, exit 0.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gateway::{Gateway, config::GatewayConfig, telemetry};

/// mimalloc rather than glibc's malloc: it returns freed memory to the OS
/// (a registry replace or a traffic burst does not stay resident at its
/// peak), and costs fewer instructions per allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "gRPC-to-JSON gateway and HTTP/2 load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a TOML config file.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit (0 when valid).
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage descriptor sets through the admin API.
    Descriptors {
        #[command(subcommand)]
        cmd: gateway::cli::DescriptorsCmd,
    },
    /// Start two CodenameCreator servers and the gateway in front of them
    /// with a built-in config, and print commands to try.
    Demo {
        /// Address of the gateway's front listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info");
    let result = match cli.command {
        Command::Check { config } => check(config).await,
        Command::Run { config } => run(config).await,
        Command::Descriptors { cmd } => return ExitCode::from(gateway::cli::run(cmd).await),
        #[cfg(feature = "demo")]
        Command::Demo { listen } => gateway::demo::run(listen, shutdown_signal()).await,
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => Err(anyhow::anyhow!(
            "this gateway was built without the `demo` feature (cargo build -p gateway --features demo)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Validates exactly what `run` validates short of binding sockets and
/// resolving host names (`gateway::compile::check`).
async fn check(path: PathBuf) -> anyhow::Result<()> {
    let cfg = GatewayConfig::load(&path)?;
    gateway::compile::check(cfg).await?;
    println!("{}: OK", path.display());
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let cfg = GatewayConfig::load(&path)?;
    let gw = Gateway::start(cfg).await?;
    shutdown_signal().await;
    gw.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
