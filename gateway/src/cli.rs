//! `gateway descriptors ...`: a small client for the admin API's descriptor
//! set endpoints, so operators need no curl recipes.
//!
//! - `push FILE...`: `PUT /v1/descriptor-sets/{name}[?cluster=C]` with a
//!   binary `FileDescriptorSet` (`application/octet-stream`) or `.proto`
//!   sources (`application/json`, `{"files": {"<import path>": "<source>"}}`,
//!   compiled by the gateway).
//! - `list`: `GET /v1/descriptor-sets`, as a table or the raw JSON.
//! - `rm NAME`: `DELETE /v1/descriptor-sets/{name}`.
//!
//! Plain HTTP/1.1 only (the admin listener is typically loopback). Exit codes:
//! 0 success, 1 the admin API refused (its JSON error message is printed),
//! 2 usage, file, connection or protocol error.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Admin API address used when neither `--admin` nor `GATEWAY_ADMIN_URL` is given.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";
/// TCP connect timeout to the admin listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole request timeout; generous because the gateway compiles `.proto` uploads.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest admin API answer read (a listing of many sets stays far below it).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Longest piece of a non-JSON error body shown to the user.
const MAX_SHOWN_ERROR_CHARS: usize = 300;

/// RFC 3986 unreserved characters stay; everything else in a set name or
/// query value is percent-encoded (`/`, `?`, `#`, `%`, spaces, non-ASCII...).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `gateway descriptors ...` subcommands, to be flattened into `main.rs`'s
/// `Command` enum as `Descriptors { #[command(subcommand)] cmd: DescriptorsCmd }`.
#[derive(Debug, clap::Subcommand)]
pub enum DescriptorsCmd {
    /// Upload a binary descriptor set (.pb/.bin/.desc/.protoset, anything not
    /// ending in .proto) or .proto files (compiled by the gateway).
    Push {
        /// One binary descriptor set, or one or more .proto files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Name to register the set under [default: stem of the first file].
        #[arg(long)]
        name: Option<String>,
        /// Cluster that serves the set's services.
        #[arg(long)]
        cluster: Option<String>,
        /// Root to compute each .proto's import path relative to, like
        /// protoc's -I (repeatable; the first root containing the file wins)
        /// [default: the file's own directory].
        #[arg(long, short = 'I')]
        import_path: Vec<PathBuf>,
        /// Admin API address and token.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List registered descriptor sets.
    List {
        /// Admin API address and token.
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a descriptor set.
    Rm {
        /// Name of the set.
        name: String,
        /// Admin API address and token.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Base URL of the admin API (plain http).
    #[arg(long, default_value = DEFAULT_ADMIN_URL, env = "GATEWAY_ADMIN_URL")]
    pub admin: String,
    /// Bearer token for the admin API.
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs a subcommand; returns the process exit code: 0 success, 1 the admin
/// API refused (its JSON error message is printed), 2 usage/IO/connection
/// error (the message names the file or URL). Results go to standard output,
/// errors to standard error.
pub async fn run(cmd: DescriptorsCmd) -> u8 {
    let result = match cmd {
        DescriptorsCmd::Push {
            files,
            name,
            cluster,
            import_path,
            admin,
        } => push(&files, name, cluster.as_deref(), &import_path, &admin).await,
        DescriptorsCmd::List { admin, json } => list(&admin, json).await,
        DescriptorsCmd::Rm { name, admin } => rm(&name, &admin).await,
    };
    match result {
        Ok(output) => {
            print!("{output}");
            0
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            e.exit_code()
        }
    }
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// No HTTP answer from the admin API.
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The admin API answered with an error status.
    #[error("admin API refused (HTTP {}): {message}", status.as_u16())]
    Refused { status: StatusCode, message: String },
    /// A success status with a body we cannot read.
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected { url: String, reason: String },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } => 1,
            Self::Usage(_)
            | Self::Read { .. }
            | Self::Unreachable { .. }
            | Self::Unexpected { .. } => 2,
        }
    }
}

// === subcommands ===

async fn push(
    files: &[PathBuf],
    name: Option<String>,
    cluster: Option<&str>,
    import_roots: &[PathBuf],
    admin: &AdminArgs,
) -> Result<String, CliError> {
    let kind = upload_kind(files)?;
    let name = match name {
        Some(name) => name,
        None => default_name(files)?,
    };
    if name.is_empty() {
        return Err(CliError::Usage("the set name must not be empty".to_owned()));
    }
    let (content_type, body) = match kind {
        UploadKind::Binary => {
            let path = &files[0]; // upload_kind checked there is exactly one
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|error| CliError::Read {
                    path: path.clone(),
                    error,
                })?;
            ("application/octet-stream", Bytes::from(bytes))
        }
        UploadKind::Protos => {
            let cwd = std::env::current_dir().map_err(|e| {
                CliError::Usage(format!("cannot determine the current directory: {e}"))
            })?;
            let mut sources = serde_json::Map::new();
            for path in files {
                let import = import_path(path, import_roots, &cwd)?;
                let source =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|error| CliError::Read {
                            path: path.clone(),
                            error,
                        })?;
                if sources
                    .insert(import.clone(), serde_json::Value::String(source))
                    .is_some()
                {
                    return Err(CliError::Usage(format!(
                        "two files have the import path `{import}`; pass --import-path so their paths differ"
                    )));
                }
            }
            let json = serde_json::json!({ "files": sources });
            ("application/json", Bytes::from(json.to_string()))
        }
    };
    let url = endpoint(&admin.admin, Some(&name), cluster)?;
    let (status, body) = send(Method::PUT, url, admin, Some((content_type, body))).await?;
    let answer: SetSummary = parse_json(&admin.admin, &body)?;
    Ok(push_summary(status == StatusCode::OK, &answer))
}

async fn list(admin: &AdminArgs, json: bool) -> Result<String, CliError> {
    let url = endpoint(&admin.admin, None, None)?;
    let (_, body) = send(Method::GET, url, admin, None).await?;
    if json {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return Ok(text);
    }
    let listing: SetList = parse_json(&admin.admin, &body)?;
    Ok(list_table(&listing.descriptor_sets))
}

async fn rm(name: &str, admin: &AdminArgs) -> Result<String, CliError> {
    let url = endpoint(&admin.admin, Some(name), None)?;
    send(Method::DELETE, url, admin, None).await?;
    Ok(format!("removed {name:?}\n"))
}

// === arguments and files ===

#[derive(Debug, PartialEq, Eq)]
enum UploadKind {
    /// One encoded `FileDescriptorSet`.
    Binary,
    /// `.proto` sources, compiled by the gateway.
    Protos,
}

fn is_proto(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "proto")
}

/// All `.proto` files, or exactly one binary set.
fn upload_kind(files: &[PathBuf]) -> Result<UploadKind, CliError> {
    let protos = files.iter().filter(|f| is_proto(f)).count();
    match (protos, files.len()) {
        (_, 0) => Err(CliError::Usage("no files to push".to_owned())),
        (0, 1) => Ok(UploadKind::Binary),
        (0, _) => Err(CliError::Usage(
            "push takes one binary descriptor set at a time (or several .proto files)".to_owned(),
        )),
        (p, n) if p == n => Ok(UploadKind::Protos),
        _ => Err(CliError::Usage(
            "cannot mix .proto files and binary descriptor sets in one push".to_owned(),
        )),
    }
}

/// The stem of the first file: `orders.proto` → `orders`, `set.pb` → `set`.
fn default_name(files: &[PathBuf]) -> Result<String, CliError> {
    let first = files
        .first()
        .ok_or_else(|| CliError::Usage("no files to push".to_owned()))?;
    first
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "cannot derive a set name from {}; pass --name",
                first.display()
            ))
        })
}

/// The import path of `file`: relative to the first of `roots` that contains
/// it (`proto/acme/v1/orders.proto` under `proto` → `acme/v1/orders.proto`),
/// or its file name when no roots are given. Paths are compared lexically
/// after making them absolute against `cwd` (symbolic links are not resolved).
fn import_path(file: &Path, roots: &[PathBuf], cwd: &Path) -> Result<String, CliError> {
    let utf8 = |p: &Path| -> Result<String, CliError> {
        let parts = p
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| CliError::Usage(format!("{} is not a UTF-8 path", file.display())))?;
        Ok(parts.join("/"))
    };
    let absolute = normalize(&cwd.join(file));
    if roots.is_empty() {
        return match absolute.file_name() {
            Some(name) => utf8(Path::new(name)),
            None => Err(CliError::Usage(format!("{} is not a file", file.display()))),
        };
    }
    for root in roots {
        if let Ok(relative) = absolute.strip_prefix(normalize(&cwd.join(root)))
            && relative.components().next().is_some()
        {
            return utf8(relative);
        }
    }
    let roots = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(CliError::Usage(format!(
        "{} is not under any --import-path ({roots})",
        file.display()
    )))
}

/// Removes `.` and resolves `..` lexically (`/a/./b/../c` → `/a/c`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

// === HTTP ===

/// `{admin}/v1/descriptor-sets[/{name}][?cluster={cluster}]`, with the name
/// and cluster percent-encoded. The admin URL may carry a path prefix
/// (`http://host:9901/gateway`), but must be plain `http`.
fn endpoint(admin: &str, name: Option<&str>, cluster: Option<&str>) -> Result<Uri, CliError> {
    let bad = |why: &str| CliError::Usage(format!("invalid admin URL `{admin}`: {why}"));
    let base: Uri = admin.parse().map_err(|e| bad(&format!("{e}")))?;
    match base.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; the admin API is plain HTTP (use http://, typically on loopback)",
            ));
        }
        Some(other) => return Err(bad(&format!("unsupported scheme `{other}`, use http://"))),
        None => return Err(bad("expected http://host:port")),
    }
    let authority = base.authority().ok_or_else(|| bad("no host"))?;
    if base.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let mut url = format!(
        "http://{authority}{}/v1/descriptor-sets",
        base.path().trim_end_matches('/')
    );
    if let Some(name) = name {
        write!(url, "/{}", utf8_percent_encode(name, COMPONENT)).ok();
    }
    if let Some(cluster) = cluster {
        write!(url, "?cluster={}", utf8_percent_encode(cluster, COMPONENT)).ok();
    }
    url.parse()
        .map_err(|e| bad(&format!("cannot build a request URL: {e}")))
}

/// Sends one request; a 2xx answer's status and body, else the error.
async fn send(
    method: Method,
    url: Uri,
    admin: &AdminArgs,
    body: Option<(&'static str, Bytes)>,
) -> Result<(StatusCode, Bytes), CliError> {
    let shown = url.to_string();
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("gateway-cli/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = &admin.token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CliError::Usage(
                "the admin token contains characters not allowed in a header".to_owned(),
            )
        })?;
        value.set_sensitive(true);
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Full::new(bytes)
        }
        None => Full::new(Bytes::new()),
    };
    let request = request
        .body(body)
        .map_err(|e| CliError::Usage(format!("cannot build the request to {shown}: {e}")))?;

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => return Err(CliError::Unreachable { url: shown, reason }),
        Err(_) => {
            return Err(CliError::Unreachable {
                url: shown,
                reason: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            });
        }
    };
    if status.is_success() {
        return Ok((status, body));
    }
    let mut message = error_message(status, &body);
    if status == StatusCode::UNAUTHORIZED && admin.token.is_none() {
        message.push_str(" (pass --token or set GATEWAY_ADMIN_TOKEN)");
    }
    Err(CliError::Refused { status, message })
}

/// `error: source: source...`, for connection errors whose useful part
/// (e.g. "Connection refused") sits at the bottom of the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The admin API's `{"error": {"code", "message"}}`, else a short piece of
/// the body, else the status's reason phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return parsed.error.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("error without a message")
            .to_owned();
    }
    let mut shown: String = text.chars().take(MAX_SHOWN_ERROR_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

fn parse_json<T: serde::de::DeserializeOwned>(admin: &str, body: &[u8]) -> Result<T, CliError> {
    serde_json::from_slice(body).map_err(|e| CliError::Unexpected {
        url: admin.to_owned(),
        reason: format!("not the expected JSON: {e}"),
    })
}

// === output ===

/// One descriptor set as the admin API describes it (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct SetSummary {
    name: String,
    version: u64,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    http_rules: Vec<String>,
    #[serde(default)]
    uploaded_at: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
}

/// `GET /v1/descriptor-sets`.
#[derive(Debug, Deserialize)]
struct SetList {
    descriptor_sets: Vec<SetSummary>,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// ```text
/// registered set "orders" version 2 (replaced): 1 service, 3 methods, 2 HTTP rules
///   acme.v1.Orders
///     /acme.v1.Orders/GetOrder
///   HTTP GET /v1/{name=orders/*}
/// ```
fn push_summary(replaced: bool, set: &SetSummary) -> String {
    let mut out = format!(
        "registered set {:?} version {} ({}): {}, {}, {}",
        set.name,
        set.version,
        if replaced { "replaced" } else { "created" },
        plural(set.services.len(), "service", "services"),
        plural(set.methods.len(), "method", "methods"),
        plural(set.http_rules.len(), "HTTP rule", "HTTP rules"),
    );
    if let Some(cluster) = &set.cluster {
        write!(out, ", cluster {cluster:?}").ok();
    }
    out.push('\n');
    let mut shown = BTreeSet::new();
    for service in &set.services {
        writeln!(out, "  {service}").ok();
        let prefix = format!("/{service}/");
        for method in set.methods.iter().filter(|m| m.starts_with(&prefix)) {
            writeln!(out, "    {method}").ok();
            shown.insert(method.as_str());
        }
    }
    for method in set.methods.iter().filter(|m| !shown.contains(m.as_str())) {
        writeln!(out, "  {method}").ok();
    }
    for rule in &set.http_rules {
        writeln!(out, "  HTTP {rule}").ok();
    }
    out
}

/// `NAME VERSION SIZE SERVICES UPLOADED_AT`, columns aligned.
fn list_table(sets: &[SetSummary]) -> String {
    if sets.is_empty() {
        return "no descriptor sets registered\n".to_owned();
    }
    let rows: Vec<[String; 5]> = sets
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.version.to_string(),
                s.size_bytes.map_or_else(|| "-".to_owned(), human_size),
                if s.services.is_empty() {
                    "-".to_owned()
                } else {
                    s.services.join(",")
                },
                s.uploaded_at.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "SIZE", "SERVICES", "UPLOADED_AT"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                write!(line, "{cell:<w$}  ").ok();
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `512 B`, `12.3 KiB`, `4.0 MiB`.
fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    match bytes {
        b if b < KIB => format!("{b} B"),
        b if b < MIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b => format!("{:.1} MiB", b as f64 / MIB as f64),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: DescriptorsCmd,
    }

    fn parse(args: &[&str]) -> Result<DescriptorsCmd, clap::Error> {
        TestCli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
            .map(|c| c.cmd)
    }

    fn usage(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn parses_push() {
        let cmd = parse(&[
            "push",
            "a.proto",
            "b.proto",
            "-I",
            "proto",
            "--import-path",
            "vendor",
            "--name",
            "orders",
            "--cluster",
            "be",
            "--admin",
            "http://10.0.0.1:9000",
            "--token",
            "t0k",
        ])
        .unwrap();
        let DescriptorsCmd::Push {
            files,
            name,
            cluster,
            import_path,
            admin,
        } = cmd
        else {
            panic!("not push");
        };
        assert_eq!(files, [PathBuf::from("a.proto"), PathBuf::from("b.proto")]);
        assert_eq!(name.as_deref(), Some("orders"));
        assert_eq!(cluster.as_deref(), Some("be"));
        assert_eq!(
            import_path,
            [PathBuf::from("proto"), PathBuf::from("vendor")]
        );
        assert_eq!(admin.admin, "http://10.0.0.1:9000");
        assert_eq!(admin.token.as_deref(), Some("t0k"));

        assert!(parse(&["push"]).is_err(), "files are required");
        assert!(matches!(
            parse(&["list", "--json"]).unwrap(),
            DescriptorsCmd::List { json: true, .. }
        ));
        assert!(matches!(
            parse(&["rm", "orders"]).unwrap(),
            DescriptorsCmd::Rm { name, .. } if name == "orders"
        ));
    }

    #[test]
    fn upload_kind_and_default_name() {
        let p = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(upload_kind(&p(&["set.pb"])).unwrap(), UploadKind::Binary);
        assert_eq!(
            upload_kind(&p(&["set.protoset"])).unwrap(),
            UploadKind::Binary
        );
        assert_eq!(upload_kind(&p(&["noext"])).unwrap(), UploadKind::Binary);
        assert_eq!(
            upload_kind(&p(&["a.proto", "b/c.proto"])).unwrap(),
            UploadKind::Protos
        );
        assert!(usage(upload_kind(&p(&["a.proto", "set.pb"]))).contains("cannot mix"));
        assert!(usage(upload_kind(&p(&["a.pb", "b.pb"]))).contains("one binary"));

        assert_eq!(
            default_name(&p(&["dir/orders.proto", "x.proto"])).unwrap(),
            "orders"
        );
        assert_eq!(default_name(&p(&["out/set.pb"])).unwrap(), "set");
        assert_eq!(
            default_name(&p(&["archive.tar.pb"])).unwrap(),
            "archive.tar"
        );
        assert!(usage(default_name(&p(&["/"]))).contains("--name"));
    }

    #[test]
    fn import_paths() {
        let cwd = Path::new("/work/repo");
        let roots = |r: &[&str]| r.iter().map(PathBuf::from).collect::<Vec<_>>();
        let ip = |file: &str, r: &[&str]| import_path(Path::new(file), &roots(r), cwd);

        // Default: the file's own directory.
        assert_eq!(
            ip("proto/acme/v1/orders.proto", &[]).unwrap(),
            "orders.proto"
        );
        assert_eq!(ip("orders.proto", &[]).unwrap(), "orders.proto");
        // Relative to a root, however both are spelled.
        assert_eq!(
            ip("proto/acme/v1/orders.proto", &["proto"]).unwrap(),
            "acme/v1/orders.proto"
        );
        assert_eq!(
            ip("./proto/acme/v1/orders.proto", &["proto/"]).unwrap(),
            "acme/v1/orders.proto"
        );
        assert_eq!(
            ip("/work/repo/proto/acme/orders.proto", &["./proto"]).unwrap(),
            "acme/orders.proto"
        );
        assert_eq!(
            ip("proto/acme/orders.proto", &["/work/repo/proto"]).unwrap(),
            "acme/orders.proto"
        );
        assert_eq!(
            ip("../other/x/y.proto", &["/work/other"]).unwrap(),
            "x/y.proto"
        );
        assert_eq!(ip("acme/v1/o.proto", &["."]).unwrap(), "acme/v1/o.proto");
        // The first root containing the file wins.
        assert_eq!(
            ip("proto/acme/v1/o.proto", &["vendor", "proto/acme", "proto"]).unwrap(),
            "v1/o.proto"
        );
        // Component-wise, not string prefixes: `protos` is not under `proto`.
        let m = usage(ip("protos/a.proto", &["proto", "vendor"]));
        assert_eq!(
            m,
            "protos/a.proto is not under any --import-path (proto, vendor)"
        );
        // The root itself is not a file under it.
        assert!(usage(ip("proto", &["proto"])).contains("not under any"));
    }

    #[test]
    fn endpoints() {
        let url = |admin: &str, name: Option<&str>, cluster: Option<&str>| {
            endpoint(admin, name, cluster).map(|u| u.to_string())
        };
        assert_eq!(
            url("http://127.0.0.1:9901", None, None).unwrap(),
            "http://127.0.0.1:9901/v1/descriptor-sets"
        );
        assert_eq!(
            url("http://127.0.0.1:9901/", Some("orders"), None).unwrap(),
            "http://127.0.0.1:9901/v1/descriptor-sets/orders"
        );
        assert_eq!(
            url(
                "http://admin.local:9901/gw/",
                Some("a b/c?d#e%f"),
                Some("be 1&x=y")
            )
            .unwrap(),
            "http://admin.local:9901/gw/v1/descriptor-sets/a%20b%2Fc%3Fd%23e%25f?cluster=be%201%26x%3Dy"
        );
        assert_eq!(
            url("http://[::1]:9901", Some("commandes-été_v1.2~x"), None).unwrap(),
            "http://[::1]:9901/v1/descriptor-sets/commandes-%C3%A9t%C3%A9_v1.2~x"
        );
        let https = usage(url("https://127.0.0.1:9901", None, None));
        assert!(https.contains("https is not supported"), "{https}");
        assert!(usage(url("127.0.0.1:9901", None, None)).contains("invalid admin URL"));
        assert!(usage(url("ftp://h:1", None, None)).contains("unsupported scheme"));
        assert!(usage(url("http://h:1/?x=1", None, None)).contains("query"));
        assert!(usage(url("not a url", None, None)).contains("invalid admin URL `not a url`"));
    }

    #[test]
    fn error_messages() {
        let json = br#"{"error": {"code": 404, "message": "no descriptor set named `x`"}}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, json),
            "no descriptor set named `x`"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"  upstream down\n"),
            "upstream down"
        );
        assert_eq!(error_message(StatusCode::FORBIDDEN, b""), "Forbidden");
        let long = "x".repeat(1000);
        let shown = error_message(StatusCode::BAD_REQUEST, long.as_bytes());
        assert_eq!(shown.chars().count(), MAX_SHOWN_ERROR_CHARS + 1);

        let refused = CliError::Refused {
            status: StatusCode::BAD_REQUEST,
            message: "a.proto:3:1: import 'b.proto' not found".to_owned(),
        };
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(
            refused.to_string(),
            "admin API refused (HTTP 400): a.proto:3:1: import 'b.proto' not found"
        );
        let read = CliError::Read {
            path: "x/set.pb".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(read.exit_code(), 2);
        assert!(read.to_string().starts_with("cannot read x/set.pb: "));
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:9/v1/descriptor-sets".to_owned(),
            reason: "connection refused".to_owned(),
        };
        assert_eq!(unreachable.exit_code(), 2);
        assert!(
            unreachable
                .to_string()
                .contains("http://127.0.0.1:9/v1/descriptor-sets")
        );
    }

    #[tokio::test]
    async fn connection_refused_names_the_url() {
        // Bind then drop, so the port is (almost certainly) closed.
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let admin = AdminArgs {
            admin: format!("http://{addr}"),
            token: None,
        };
        let e = list(&admin, false).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach the admin API at http://{addr}/v1/descriptor-sets: "
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn push_reports_unreadable_files() {
        let admin = AdminArgs {
            admin: DEFAULT_ADMIN_URL.to_owned(),
            token: None,
        };
        let missing = PathBuf::from("/nonexistent/dir/orders.proto");
        let e = push(&[missing], None, None, &[], &admin).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/dir/orders.proto: "),
            "{e}"
        );
    }

    /// What the fake admin API saw: method, path and query, headers, body.
    type Seen = (Method, String, http::HeaderMap, Bytes);

    /// A one-request admin API on 127.0.0.1:0 answering `status` + `body`.
    async fn fake_admin(
        status: StatusCode,
        body: &'static str,
    ) -> (String, tokio::sync::oneshot::Receiver<Seen>) {
        use hyper::{body::Incoming, server::conn::http1, service::service_fn};
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        tokio::spawn(async move {
            let (io, _) = listener.accept().await.unwrap();
            let service = service_fn(move |req: Request<Incoming>| {
                let tx = tx.lock().unwrap().take();
                async move {
                    let (parts, incoming) = req.into_parts();
                    let bytes = incoming.collect().await.unwrap().to_bytes();
                    let target = parts.uri.path_and_query().unwrap().to_string();
                    if let Some(tx) = tx {
                        let _ = tx.send((parts.method, target, parts.headers, bytes));
                    }
                    let response = http::Response::builder()
                        .status(status)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
        (url, rx)
    }

    /// A fresh directory under the system temp dir.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gateway-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn push_protos_sends_json_sources_by_import_path() {
        let dir = temp_dir("push-protos");
        std::fs::create_dir_all(dir.join("proto/acme/v1")).unwrap();
        let orders = dir.join("proto/acme/v1/orders.proto");
        let common = dir.join("proto/acme/v1/common.proto");
        std::fs::write(&orders, "syntax = \"proto3\"; // orders").unwrap();
        std::fs::write(&common, "syntax = \"proto3\"; // common").unwrap();

        let (url, seen) = fake_admin(
            StatusCode::CREATED,
            r#"{"name": "orders", "version": 1, "services": ["acme.v1.Orders"],
                "methods": ["/acme.v1.Orders/Get"], "http_rules": []}"#,
        )
        .await;
        let admin = AdminArgs {
            admin: url,
            token: Some("s3cret".to_owned()),
        };
        let output = push(
            &[orders, common],
            None,
            Some("be 1"),
            &[dir.join("proto")],
            &admin,
        )
        .await
        .unwrap();
        assert_eq!(
            output,
            "registered set \"orders\" version 1 (created): 1 service, 1 method, 0 HTTP rules\n\
             \x20 acme.v1.Orders\n\
             \x20   /acme.v1.Orders/Get\n"
        );
        let (method, target, headers, body) = seen.await.unwrap();
        assert_eq!(method, Method::PUT);
        assert_eq!(target, "/v1/descriptor-sets/orders?cluster=be%201");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer s3cret");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "files": {
                "acme/v1/orders.proto": "syntax = \"proto3\"; // orders",
                "acme/v1/common.proto": "syntax = \"proto3\"; // common",
            }})
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn push_binary_sends_the_bytes() {
        let dir = temp_dir("push-binary");
        let set = dir.join("library.pb");
        std::fs::write(&set, [0x0a, 0x00, 0xff]).unwrap();
        let (url, seen) = fake_admin(StatusCode::OK, r#"{"name": "library", "version": 3}"#).await;
        let admin = AdminArgs {
            admin: url,
            token: None,
        };
        let output = push(&[set], None, None, &[], &admin).await.unwrap();
        assert!(output.starts_with("registered set \"library\" version 3 (replaced)"));
        let (method, target, headers, body) = seen.await.unwrap();
        assert_eq!(method, Method::PUT);
        assert_eq!(target, "/v1/descriptor-sets/library");
        assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
        assert!(headers.get(header::AUTHORIZATION).is_none());
        assert_eq!(&body[..], [0x0a, 0x00, 0xff]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn refusals_exit_1_with_the_api_message() {
        let (url, seen) = fake_admin(
            StatusCode::NOT_FOUND,
            r#"{"error": {"code": 404, "message": "no descriptor set named `ghost`"}}"#,
        )
        .await;
        let admin = AdminArgs {
            admin: url,
            token: None,
        };
        let e = rm("ghost", &admin).await.unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "admin API refused (HTTP 404): no descriptor set named `ghost`"
        );
        let (method, target, _, _) = seen.await.unwrap();
        assert_eq!(
            (method, target.as_str()),
            (Method::DELETE, "/v1/descriptor-sets/ghost")
        );

        let (url, _) = fake_admin(
            StatusCode::UNAUTHORIZED,
            r#"{"error": {"code": 401, "message": "missing admin token"}}"#,
        )
        .await;
        let admin = AdminArgs {
            admin: url,
            token: None,
        };
        let e = list(&admin, false).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "admin API refused (HTTP 401): missing admin token (pass --token or set GATEWAY_ADMIN_TOKEN)"
        );
    }

    #[tokio::test]
    async fn list_json_prints_the_answer_and_bad_json_exits_2() {
        let raw = r#"{"descriptor_sets": []}"#;
        let (url, seen) = fake_admin(StatusCode::OK, raw).await;
        let admin = AdminArgs {
            admin: url,
            token: None,
        };
        assert_eq!(list(&admin, true).await.unwrap(), format!("{raw}\n"));
        let (method, target, _, _) = seen.await.unwrap();
        assert_eq!(
            (method, target.as_str()),
            (Method::GET, "/v1/descriptor-sets")
        );

        let (url, _) = fake_admin(StatusCode::OK, "<html>").await;
        let admin = AdminArgs {
            admin: url,
            token: None,
        };
        let e = list(&admin, false).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not the expected JSON"), "{e}");
    }

    fn summary(json: &str) -> SetSummary {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn push_output() {
        let set = summary(
            r#"{"name": "orders", "version": 2, "size_bytes": 1234, "extra": true,
                "services": ["acme.v1.Orders"],
                "methods": ["/acme.v1.Orders/Get", "/acme.v1.Orders/Create", "/acme.v1.Orders/Ping"],
                "http_rules": ["GET /v1/{name=orders/*}", "POST /v1/orders"]}"#,
        );
        assert_eq!(
            push_summary(true, &set),
            "registered set \"orders\" version 2 (replaced): 1 service, 3 methods, 2 HTTP rules\n\
             \x20 acme.v1.Orders\n\
             \x20   /acme.v1.Orders/Get\n\
             \x20   /acme.v1.Orders/Create\n\
             \x20   /acme.v1.Orders/Ping\n\
             \x20 HTTP GET /v1/{name=orders/*}\n\
             \x20 HTTP POST /v1/orders\n"
        );
        let empty = summary(r#"{"name": "types", "version": 1, "cluster": "be"}"#);
        assert_eq!(
            push_summary(false, &empty),
            "registered set \"types\" version 1 (created): 0 services, 0 methods, 0 HTTP rules, cluster \"be\"\n"
        );
    }

    #[test]
    fn list_output() {
        let list: SetList = serde_json::from_str(
            r#"{"descriptor_sets": [
                {"name": "orders", "version": 12, "size_bytes": 12634, "services": ["acme.v1.Orders", "acme.v1.Admin"],
                 "methods": [], "http_rules": [], "uploaded_at": "2025-05-01T10:00:00Z", "cluster": null},
                {"name": "t", "version": 1, "size_bytes": 80, "services": [],
                 "uploaded_at": "2025-05-02T11:30:00Z", "cluster": "be"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            list_table(&list.descriptor_sets),
            "NAME    VERSION  SIZE      SERVICES                      UPLOADED_AT\n\
             orders  12       12.3 KiB  acme.v1.Orders,acme.v1.Admin  2025-05-01T10:00:00Z\n\
             t       1        80 B      -                             2025-05-02T11:30:00Z\n"
        );
        assert_eq!(list_table(&[]), "no descriptor sets registered\n");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
    }
}
