//! What the load goes to: the in-process sample backends, and proxies run as child processes
//! (the gateway; HAProxy and nginx when installed; grpc-gateway when built) so their CPU and
//! memory are their own.

use std::{
    fmt,
    fs::File,
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use sample_services::{SampleServer, ServerOptions};
use serde::Serialize;
use tempfile::TempDir;
use tokio::{net::TcpStream, time::Instant};

/// How long a proxy may take to accept connections after it was started.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while waiting for a proxy's port.
const PROXY_START_POLL: Duration = Duration::from_millis(20);
/// Time the gateway gets to drain on shutdown (it is killed anyway).
const GATEWAY_DRAIN_TIMEOUT_MS: u64 = 500;
/// Longest piece of a proxy's log shown when it fails to start.
const MAX_LOG_TAIL_BYTES: usize = 2_000;

/// Who serves a measured run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TargetKind {
    /// The sample backends themselves, no proxy.
    Direct,
    /// Our gateway, as a child process.
    Gateway,
    /// HAProxy (h2c front, the same backends), if installed.
    Haproxy,
    /// nginx (`grpc_pass`), if installed.
    Nginx,
    /// A second gateway binary (`--baseline`), for A/B comparisons of a change.
    Baseline,
    /// grpc-gateway (Go), built by `scripts/build-grpc-gateway.sh`: the JSON scenarios on
    /// LibraryService's REST routes.
    GrpcGateway,
}

impl TargetKind {
    /// Name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Gateway => "gateway",
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
            Self::Baseline => "baseline",
            Self::GrpcGateway => "grpc-gateway",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === Backends ===

/// Sample servers (Echo, LibraryService) on loopback, in this process.
pub(crate) struct Backends {
    servers: Vec<SampleServer>,
}

impl Backends {
    /// Starts `count` servers on free ports.
    pub(crate) async fn start(count: usize) -> anyhow::Result<Self> {
        let mut servers = Vec::with_capacity(count);
        for i in 0..count {
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = sample_services::spawn_on(addr, ServerOptions::new(format!("b{i}")))
                .await
                .with_context(|| format!("start sample backend b{i}"))?;
            servers.push(server);
        }
        Ok(Self { servers })
    }

    /// Their addresses, in start order.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }
}

// === ProxyProcess ===

/// A proxy running as a child process: killed (SIGKILL) and reaped on drop.
pub(crate) struct ProxyProcess {
    /// Which proxy.
    pub(crate) kind: TargetKind,
    /// Its front listener.
    pub(crate) addr: SocketAddr,
    child: Child,
    /// Config, descriptor set and logs; removed after the child is gone.
    dir: TempDir,
}

impl ProxyProcess {
    /// Process id, for `/proc/<pid>/...`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited, with the tail of its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.kind,
                log_tail(self.dir.path())
            ),
            Err(error) => Err(error).with_context(|| format!("wait for {}", self.kind)),
        }
    }

    /// Starts the gateway binary at `bin` (as `kind`: the gateway or the baseline) with a
    /// generated config in front of `backends`.
    /// `max_connections` raises the listener's connection cap (memory scenarios); `extra`
    /// is TOML appended to the config.
    pub(crate) async fn gateway(
        bin: &Path,
        kind: TargetKind,
        backends: &[SocketAddr],
        max_connections: Option<usize>,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-gateway-")
            .tempdir()
            .context("create a temp dir for the gateway config")?;
        let descriptors = dir.path().join("samples.pb");
        std::fs::write(&descriptors, sample_services::FILE_DESCRIPTOR_SET)
            .with_context(|| format!("write {}", descriptors.display()))?;
        let addr = free_port()?;
        let mut config = gateway_config(addr, backends, &descriptors, max_connections);
        config.push('\n');
        config.push_str(extra);
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("write {}", config_path.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            // Lifecycle lines only; the access log is off.
            .env("RUST_LOG", "warn");
        Self::spawn(kind, command, addr, dir).await
    }

    /// Starts HAProxy from `bin` with an h2c front and the backends, round robin.
    pub(crate) async fn haproxy(bin: &Path, backends: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-haproxy-")
            .tempdir()
            .context("create a temp dir for the haproxy config")?;
        let addr = free_port()?;
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, haproxy_config(addr, backends))
            .with_context(|| format!("write {}", config_path.display()))?;
        let mut command = Command::new(bin);
        // -db: foreground, no daemon; one process (threads), so its /proc figures are complete.
        command.arg("-db").arg("-f").arg(&config_path);
        Self::spawn(TargetKind::Haproxy, command, addr, dir).await
    }

    /// Starts nginx from `bin` (one process, no master) with `grpc_pass` to the backends.
    pub(crate) async fn nginx(bin: &Path, backends: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-nginx-")
            .tempdir()
            .context("create a temp dir for the nginx config")?;
        let addr = free_port()?;
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, nginx_config(addr, backends, dir.path()))
            .with_context(|| format!("write {}", config_path.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path);
        Self::spawn(TargetKind::Nginx, command, addr, dir).await
    }

    /// Starts the grpc-gateway server built by `scripts/build-grpc-gateway.sh` from `bin`,
    /// round robin over the backends.
    pub(crate) async fn grpc_gateway(bin: &Path, backends: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-grpc-gateway-")
            .tempdir()
            .context("create a temp dir for grpc-gateway's log")?;
        let addr = free_port()?;
        let backends: Vec<String> = backends.iter().map(ToString::to_string).collect();
        let mut command = Command::new(bin);
        command
            .arg("-listen")
            .arg(addr.to_string())
            .arg("-backends")
            .arg(backends.join(","));
        Self::spawn(TargetKind::GrpcGateway, command, addr, dir).await
    }

    /// Spawns `command` with its output in `dir/proxy.log`, then waits until `addr` accepts.
    async fn spawn(
        kind: TargetKind,
        mut command: Command,
        addr: SocketAddr,
        dir: TempDir,
    ) -> anyhow::Result<Self> {
        let log_path = dir.path().join("proxy.log");
        let log =
            File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicate the log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .with_context(|| format!("start {kind} ({command:?})"))?;
        // From here on, dropping `proxy` kills the child.
        let mut proxy = Self {
            kind,
            addr,
            child,
            dir,
        };
        let deadline = Instant::now() + PROXY_START_TIMEOUT;
        loop {
            proxy.check_alive()?;
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                bail!(
                    "{kind} did not accept on {addr} within {PROXY_START_TIMEOUT:?}; log:\n{}",
                    log_tail(proxy.dir.path())
                );
            }
            tokio::time::sleep(PROXY_START_POLL).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // Only this child, by its pid; errors mean it is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last [`MAX_LOG_TAIL_BYTES`] of a proxy's log.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
    let start = text.len().saturating_sub(MAX_LOG_TAIL_BYTES);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// A loopback address with a port that was free a moment ago (bound, then released).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener =
        StdTcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0 to find a free port")?;
    listener.local_addr().context("local address")
}

/// Streams in flight per server in the bench: no limit in effect, as in the HAProxy config
/// (no `maxconn` on its servers); the memory scenario holds 10,000 streams over two servers,
/// beyond the gateway's default of 1024 per server.
const BENCH_MAX_REQUESTS_PER_ENDPOINT: u32 = 1_000_000;

/// The gateway's config: one listener, one cluster over `backends`, a catch-all route, no
/// admin API, no access log, the sample descriptors preloaded (see README "Config reference").
fn gateway_config(
    addr: SocketAddr,
    backends: &[SocketAddr],
    descriptors: &Path,
    max_connections: Option<usize>,
) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{{ name = \"b{i}\", address = \"{addr}\" }}"))
        .collect();
    let max_connections = max_connections
        .map(|n| format!("max_connections = {n}\n"))
        .unwrap_or_default();
    format!(
        "drain_timeout_ms = {GATEWAY_DRAIN_TIMEOUT_MS}\n\n\
         [[listeners]]\nname = \"front\"\naddress = \"{addr}\"\n{max_connections}\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{}]\n\
         max_requests_per_endpoint = {BENCH_MAX_REQUESTS_PER_ENDPOINT}\n\n\
         [[routes]]\ncluster = \"backend\"\n\n\
         [admin]\nenabled = false\n\n\
         [access_log]\nenabled = false\n\n\
         [registry]\npreload = [{}]\n",
        endpoints.join(", "),
        toml_string(&descriptors.to_string_lossy()),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// HAProxy: h2c front (`proto h2`), h2c servers, round robin, no logs. `maxconn` stays low
/// because HAProxy wants twice as many file descriptors at start.
fn haproxy_config(addr: SocketAddr, backends: &[SocketAddr]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server b{i} {addr} proto h2\n"))
        .collect();
    format!(
        "global\n    maxconn 4096\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n\n\
         frontend fe\n    bind {addr} proto h2\n    default_backend be\n\n\
         backend be\n    balance roundrobin\n{servers}"
    )
}

/// nginx: one process, h2c front, `grpc_pass` to an upstream with keep-alive connections; no
/// limit on requests per connection (the default, 1000, closes busy connections mid-run).
fn nginx_config(addr: SocketAddr, backends: &[SocketAddr], dir: &Path) -> String {
    let dir = dir.display();
    let servers: String = backends
        .iter()
        .map(|addr| format!("        server {addr};\n"))
        .collect();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n\
         error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 100000000;\n\
         client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n    \
         fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    \
         scgi_temp_path {dir}/scgi;\n\
         upstream be {{\n{servers}        keepalive 64;\n        \
         keepalive_requests 100000000;\n    }}\n\
         server {{\n        listen {addr} http2;\n        \
         location / {{ grpc_pass grpc://be; }}\n    }}\n}}\n"
    )
}

/// `name` found in a directory of `PATH`, if any.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_config_has_every_part() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let config = gateway_config(
            addr,
            &[addr, addr],
            Path::new("/tmp/a \"b\"/samples.pb"),
            Some(12_000),
        );
        for part in [
            "[[listeners]]",
            "address = \"127.0.0.1:8080\"",
            "max_connections = 12000",
            "{ name = \"b1\", address = \"127.0.0.1:8080\" }",
            "max_requests_per_endpoint = 1000000",
            "[admin]\nenabled = false",
            "[access_log]\nenabled = false",
            r#"preload = ["/tmp/a \"b\"/samples.pb"]"#,
        ] {
            assert!(config.contains(part), "{part} missing from\n{config}");
        }
    }
}
