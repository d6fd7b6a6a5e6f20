//! `gateway demo`: the HAProxy gRPC demo on one machine with nothing
//! installed: two CodenameCreator servers in-process on free ports, and the
//! gateway in front of them with a built-in config.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use sample_services::{ServerOptions, spawn_on};

use crate::{Gateway, config::GatewayConfig};

/// The built-in config; `{listen}`, `{s1}`, `{s2}` are filled in.
const DEMO_CONFIG: &str = r#"
drain_timeout_ms = 5000

[admin]
address = "{admin}"
token = "demo-token"

[cors]
allowed_origins = ["*"]
exposed_headers = ["x-server-id"]

[[listeners]]
name = "fe_proxy"
address = "{listen}"
capture_request_headers = [{ name = "mysecretpassphrase", len = 100 }]
log_at_start = true

[[clusters]]
name = "be_codenameservers"
lb = "round_robin"
max_requests_per_endpoint = 20
health_check = { kind = "grpc", interval_ms = 2000, rise = 2, fall = 3 }
endpoints = [
  { name = "codenamesvc1", address = "{s1}" },
  { name = "codenamesvc2", address = "{s2}" },
]

[[routes]]
name = "codename"
cluster = "be_codenameservers"
match = { path_prefix = "/CodenameCreator/" }

[[routes]]
name = "samples"
cluster = "be_codenameservers"
match = { path_prefix = "/sample." }
"#;

/// The demo config for a listener and two servers.
pub fn config(listen: SocketAddr, s1: SocketAddr, s2: SocketAddr) -> anyhow::Result<GatewayConfig> {
    let admin = SocketAddr::new(listen.ip(), if listen.port() == 0 { 0 } else { 9901 });
    let text = DEMO_CONFIG
        .replace("{admin}", &admin.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{s1}", &s1.to_string())
        .replace("{s2}", &s2.to_string());
    Ok(GatewayConfig::from_toml(&text)?)
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut opts1 = ServerOptions::new("codenamesvc1");
    opts1.codename_interval = Duration::from_secs(1);
    let mut opts2 = ServerOptions::new("codenamesvc2");
    opts2.codename_interval = Duration::from_secs(1);
    let s1 = spawn_on(loopback, opts1)
        .await
        .context("start codename server 1")?;
    let s2 = spawn_on(loopback, opts2)
        .await
        .context("start codename server 2")?;
    let gw = Gateway::start(config(listen, s1.addr, s2.addr)?)
        .await
        .with_context(|| format!("start the gateway on {listen}"))?;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .context("register the sample descriptor set")?;
    let addr = gw.first_addr();
    println!(
        "\nDemo running: gateway on {addr} -> CodenameCreator servers codenamesvc1 ({s1}) and codenamesvc2 ({s2}), round robin.\n\
         Access log lines go to standard output; press Ctrl-C to stop.\n\n\
         Try it (in another terminal):\n\n  \
         # the HAProxy demo's client: one unary call, then a bidi stream switching category every 10 s\n  \
         cargo run --release -p sample-services --bin codename-client -- --server {addr} --metadata mysecretpassphrase=abc123\n\n  \
         # the same service as JSON, over HTTP/1.1 (default route POST /<package.Service>/<Method>)\n  \
         curl -s -X POST http://{addr}/CodenameCreator/GetCodename -H 'content-type: application/json' -d '{{\"category\":\"space\"}}'\n\n  \
         # REST routes from google.api.http annotations\n  \
         curl -s http://{addr}/v1/shelves/1\n  \
         curl -s -X POST 'http://{addr}/v1/shelves/1/books?bookId=dune' -d '{{\"title\":\"Dune\",\"pages\":412}}'\n\n  \
         # a server stream as NDJSON, then as server-sent events\n  \
         curl -sN 'http://{addr}/v1/shelves/1:watch?count=5&intervalMs=500'\n  \
         curl -sN -H 'accept: text/event-stream' 'http://{addr}/v1/shelves/1:watch?count=5&intervalMs=500'\n\n  \
         # errors are JSON with the mapped HTTP status\n  \
         curl -si -X POST http://{addr}/v1/fail -d '{{\"code\":5,\"message\":\"no such shelf\",\"withDetails\":true}}'\n\n  \
         # the admin API (token: demo-token): what is registered, the servers' state\n  \
         curl -s http://{admin}/v1/services\n  \
         curl -s http://{admin}/v1/clusters\n  \
         cargo run --release -p gateway -- descriptors list --admin http://{admin}\n",
        admin = gw
            .admin_addr()
            .map_or_else(|| "-".to_string(), |a| a.to_string()),
        s1 = s1.addr,
        s2 = s2.addr
    );
    shutdown.await;
    gw.shutdown().await;
    s1.shutdown().await;
    s2.shutdown().await;
    Ok(())
}
