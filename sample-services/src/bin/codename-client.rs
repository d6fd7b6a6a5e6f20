//! The HAProxy gRPC demo's client: one `GetCodename`, then `KeepGettingCodenames`, switching
//! category every few seconds and printing each codename with the server that sent it.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use sample_services::{
    SERVER_ID_HEADER,
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tracing_subscriber::EnvFilter;

/// How long to wait for the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the server to end the stream after a --count stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Category requests queued towards the server.
const OUTBOUND_BUFFER: usize = 4;

/// Ask a CodenameCreator server (or the gateway in front of it) for codenames.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server as host:port, or a full http:// or https:// URL.
    #[arg(long, default_value = "127.0.0.1:3001")]
    server: String,
    /// PEM CA certificate: connect with TLS and verify the server against it.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Name to send as SNI and verify the certificate against (default: the server's host).
    #[arg(long, requires = "ca_file")]
    server_name: Option<String>,
    /// Connect without TLS (the default without --ca-file).
    #[arg(long, conflicts_with = "ca_file")]
    plaintext: bool,
    /// Metadata added to every call, as key=value (repeatable; `-bin` keys take raw text).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata)]
    metadata: Vec<Metadata>,
    /// First category to ask for.
    #[arg(long, default_value = "animals")]
    category: String,
    /// Seconds between category switches on the stream.
    #[arg(long, default_value_t = 10)]
    switch_every_secs: u64,
    /// Categories to cycle through on the stream (comma-separated).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Stop after this many streamed codenames (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// One `--metadata` entry, validated at startup.
#[derive(Clone, Debug)]
enum Metadata {
    Ascii(AsciiMetadataKey, AsciiMetadataValue),
    Binary(BinaryMetadataKey, BinaryMetadataValue),
}

fn parse_metadata(arg: &str) -> Result<Metadata, String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not key=value"))?;
    let key = key.trim().to_ascii_lowercase();
    if key.ends_with("-bin") {
        let key = BinaryMetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| format!("invalid metadata key {key:?}"))?;
        Ok(Metadata::Binary(
            key,
            BinaryMetadataValue::from_bytes(value.as_bytes()),
        ))
    } else {
        let name = AsciiMetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| format!("invalid metadata key {key:?}"))?;
        let value = value
            .parse()
            .map_err(|_| format!("invalid value for metadata key {key:?}"))?;
        Ok(Metadata::Ascii(name, value))
    }
}

fn with_metadata<T>(message: T, metadata: &[Metadata]) -> Request<T> {
    let mut request = Request::new(message);
    for entry in metadata {
        match entry {
            Metadata::Ascii(key, value) => {
                request.metadata_mut().append(key.clone(), value.clone());
            }
            Metadata::Binary(key, value) => {
                request
                    .metadata_mut()
                    .append_bin(key.clone(), value.clone());
            }
        }
    }
    request
}

fn server_id<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get(SERVER_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// A failed run: a gRPC status, or anything else.
enum Failure {
    Status(&'static str, Status),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Other(error)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(call, status)) => {
            eprintln!(
                "error: {call} failed: gRPC status {} ({:?}): {}",
                status.code() as i32,
                status.code(),
                status.message()
            );
            ExitCode::FAILURE
        }
        Err(Failure::Other(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let channel = connect(&args).await?;
    let mut client = CodenameCreatorClient::new(channel);

    let first = NameRequest {
        category: args.category.clone(),
    };
    let response = client
        .get_codename(with_metadata(first.clone(), &args.metadata))
        .await
        .map_err(|status| Failure::Status("GetCodename", status))?;
    let server = server_id(&response);
    println!("GetCodename: {} (server {server})", response.get_ref().name);

    // The stream asks for `category` first, then cycles through the rotation.
    let mut rotation = args.categories.clone();
    let skip = match rotation.iter().position(|c| *c == args.category) {
        Some(at) => at + 1,
        None => {
            rotation.insert(0, args.category.clone());
            1
        }
    };
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    tx.send(first).await.context("queue the first category")?;
    let switch_every = Duration::from_secs(args.switch_every_secs.max(1));
    let switcher = tokio::spawn(async move {
        if rotation.len() < 2 {
            // Nothing to switch to; keep the stream open until the task is aborted.
            return std::future::pending::<()>().await;
        }
        for category in rotation.into_iter().cycle().skip(skip) {
            tokio::time::sleep(switch_every).await;
            if tx.send(NameRequest { category }).await.is_err() {
                return;
            }
        }
    });

    let failed = |status| Failure::Status("KeepGettingCodenames", status);
    let response = client
        .keep_getting_codenames(with_metadata(ReceiverStream::new(rx), &args.metadata))
        .await
        .map_err(failed)?;
    let server = server_id(&response);
    let mut inbound = response.into_inner();
    let mut received = 0;
    while let Some(result) = inbound.message().await.map_err(failed)? {
        println!("{} (server {server})", result.name);
        received += 1;
        if args.count > 0 && received >= args.count {
            break;
        }
    }
    // Dropping the switcher's sender half-closes the stream; the server then ends it, so a
    // --count stop is a clean end rather than a cancel.
    switcher.abort();
    let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::debug!("Stream did not end after half-close; cancelling it");
    }
    Ok(())
}

async fn connect(args: &Args) -> anyhow::Result<Channel> {
    let has_scheme = args.server.starts_with("http://") || args.server.starts_with("https://");
    let tls = args.ca_file.is_some();
    let url = if has_scheme {
        args.server.clone()
    } else if tls {
        format!("https://{}", args.server)
    } else {
        format!("http://{}", args.server)
    };
    if url.starts_with("https://") && !tls {
        bail!("{url} needs --ca-file to verify the server");
    }
    if url.starts_with("http://") && tls {
        bail!("{url} is cleartext but --ca-file asks for TLS; use https:// or drop --ca-file");
    }
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid server {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca_file) = &args.ca_file {
        let ca = tokio::fs::read(ca_file)
            .await
            .with_context(|| format!("read {}", ca_file.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(name) = &args.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls).context("TLS config")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connect to {url}"))
}
