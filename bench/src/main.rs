//! `bench`: measures the gateway against direct-to-backend on loopback, in one run.
//!
//! It starts sample backends in this process and the gateway as a child process (so its CPU
//! and memory are its own, read from `/proc/<pid>`), then runs each scenario against every
//! target in turn, repetition after repetition (interleaved, so drift hits all targets alike),
//! and prints a Markdown table or JSON. HAProxy and nginx, when on `PATH`, run the gRPC
//! scenarios too; grpc-gateway (Go, `scripts/build-grpc-gateway.sh`), when built, the JSON
//! scenarios on REST routes. See `bench --help` and bench/README.md.
//!
//! ```sh
//! cargo run --release -p bench                  # all load scenarios, 3 × 5 s each
//! cargo run --release -p bench -- --quick       # 1 × 2 s
//! cargo run --release -p bench -- --memory --scenarios grpc-unary-64b --json
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;

mod load;
mod memory;
mod otlp;
mod procfs;
mod report;
mod scenarios;
mod targets;

use report::{Report, Runs};
use scenarios::{LoadParams, Payloads, Scenario};
use targets::{Backends, ProxyProcess, TargetKind};

/// File descriptors wanted for load scenarios alone (connections, backends, the gateway).
const FD_WANTED_FOR_LOAD: u64 = 8_192;
/// Extra descriptors wanted beyond the memory scenario's connections.
const FD_HEADROOM: u64 = 2_048;
/// Pause after a proxy started before its idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_millis(300);

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Load and memory benchmark: the gateway against direct-to-backend (and HAProxy / \
             nginx / grpc-gateway when installed), interleaved, on loopback"
)]
struct Args {
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<Scenario>,
    /// Repetitions of every scenario × target.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    duration: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    warmup: f64,
    /// 1 repetition of 2 s after 0.5 s warm-up (overrides --reps, --duration, --warmup).
    #[arg(long)]
    quick: bool,
    /// HTTP/2 connections in gRPC scenarios.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// Concurrent calls (or bidi streams) per HTTP/2 connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    streams: u32,
    /// HTTP/1.1 keep-alive connections (one sequential client each) in JSON scenarios;
    /// several (`1,4,32`) run every JSON scenario at each count, interleaved.
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    json_connections: Vec<u32>,
    /// Messages in flight per stream in `grpc-bidi-pipelined`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    bidi_window: u32,
    /// Sample backends (in this process) behind every target; direct runs spread their
    /// connections over them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    backends: u32,
    /// Also run the memory scenarios (idle connections, open streams).
    #[arg(long)]
    memory: bool,
    /// Run only the memory scenarios.
    #[arg(long)]
    memory_only: bool,
    /// Idle HTTP/2 connections opened by the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    memory_connections: usize,
    /// Concurrent open streams in the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    memory_streams: usize,
    /// The gateway binary [default: `gateway` next to this executable, built first].
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// A second gateway binary run as target `baseline` in every scenario, interleaved with
    /// the gateway: an A/B comparison of a change in one run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// TOML appended to the gateway's generated config (e.g. a `[tracing]` section);
    /// `{otlp}` in it is replaced by the address of an OTLP/gRPC sink in this process.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// TOML appended to the baseline's config, as `--gateway-config`; without `--baseline`
    /// the baseline is the gateway binary itself, so the two differ in config alone.
    #[arg(long)]
    baseline_config: Option<PathBuf>,
    /// Do not run `cargo build -p gateway` first.
    #[arg(long)]
    no_build: bool,
    /// grpc-gateway (Go) server run as an extra target of the JSON scenarios on REST routes
    /// [default: `grpc-gateway/grpc-gateway` in this executable's target dir, when
    /// `scripts/build-grpc-gateway.sh` built it].
    #[arg(long)]
    grpc_gateway: Option<PathBuf>,
    /// Do not run HAProxy, nginx or grpc-gateway even when they are available.
    #[arg(long)]
    no_extra_proxies: bool,
    /// Print JSON instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

fn seconds(s: &str) -> Result<f64, String> {
    let value: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if value.is_finite() && (0.0..=3600.0).contains(&value) {
        Ok(value)
    } else {
        Err("expected seconds between 0 and 3600".into())
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.reps = 1;
        args.duration = 2.0;
        args.warmup = 0.5;
    }
    match prepare_and_run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Blocking preparation (build, limits), then the async run on a fresh runtime.
fn prepare_and_run(args: Args) -> anyhow::Result<()> {
    procfs::check_procfs()?;
    ensure!(args.reps > 0, "--reps must be at least 1");
    ensure!(args.duration > 0.0, "--duration must be above 0");
    let gateway_bin = resolve_gateway(&args)?;
    if let Some(bin) = &args.baseline {
        ensure!(bin.is_file(), "--baseline {}: no such file", bin.display());
    }
    let wanted = if args.memory || args.memory_only {
        (args.memory_connections as u64 + FD_HEADROOM).max(FD_WANTED_FOR_LOAD)
    } else {
        FD_WANTED_FOR_LOAD
    };
    let fd_limit = procfs::raise_fd_limit(wanted).unwrap_or_else(|error| {
        eprintln!("warning: {error:#}");
        procfs::raise_fd_limit(0).unwrap_or(1024)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = run(args, gateway_bin, fd_limit) => result,
            signal = interrupted() => bail!("{signal}: stopped, child processes killed"),
        }
    })
}

/// Resolves on SIGINT or SIGTERM; dropping the run then kills the children.
async fn interrupted() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => "terminated",
    }
}

/// The gateway binary: `--gateway`, else `gateway` next to this executable after
/// `cargo build -p gateway` in this executable's profile (a no-op when up to date).
fn resolve_gateway(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.gateway {
        ensure!(path.is_file(), "--gateway {}: no such file", path.display());
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    let dir = exe
        .parent()
        .context("this executable has no parent directory")?;
    let bin = dir.join("gateway");
    let release = !cfg!(debug_assertions);
    if !release {
        eprintln!("warning: bench is a debug build; numbers will mean little (use --release)");
    }
    if !args.no_build {
        build_gateway(release, &bin);
    }
    ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build {}-p gateway`, or pass --gateway PATH",
        bin.display(),
        if release { "--release " } else { "" }
    );
    Ok(bin)
}

/// The grpc-gateway binary: `--grpc-gateway`, else `grpc-gateway/grpc-gateway` in this
/// executable's target dir (where `scripts/build-grpc-gateway.sh` puts it), if built.
fn resolve_grpc_gateway(arg: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = arg {
        ensure!(
            path.is_file(),
            "--grpc-gateway {}: no such file",
            path.display()
        );
        return Ok(Some(path.to_path_buf()));
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("grpc-gateway").join("grpc-gateway"))
        .filter(|bin| bin.is_file()))
}

/// `cargo build [--release] -p gateway` in this workspace; on failure an existing binary is
/// used, with a warning.
fn build_gateway(release: bool, bin: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", "gateway", "--manifest-path"])
        .arg(&manifest);
    if release {
        command.arg("--release");
    }
    eprintln!("bench: building the gateway ({command:?})");
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) if bin.is_file() => eprintln!(
            "warning: building the gateway failed ({status}); using the existing {}",
            bin.display()
        ),
        Ok(status) => eprintln!("warning: building the gateway failed ({status})"),
        Err(error) => eprintln!("warning: cannot run cargo ({error}); using what is built"),
    }
}

/// The TOML of `--gateway-config` / `--baseline-config` ("" without one).
fn read_extra(path: Option<&Path>) -> anyhow::Result<String> {
    path.map_or(Ok(String::new()), |p| {
        std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
    })
}

async fn run(args: Args, gateway_bin: PathBuf, fd_limit: u64) -> anyhow::Result<()> {
    let params = LoadParams {
        connections: args.connections as usize,
        streams: args.streams as usize,
        json_connections: args.json_connections.iter().map(|&n| n as usize).collect(),
        bidi_window: args.bidi_window as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let scenarios: Vec<Scenario> = if args.memory_only {
        Vec::new()
    } else if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let payloads = Payloads::new()?;
    let backends = Backends::start(args.backends as usize).await?;
    let backend_addrs = backends.addrs();
    let mut gateway_extra = read_extra(args.gateway_config.as_deref())?;
    let mut baseline_extra = read_extra(args.baseline_config.as_deref())?;
    let mut sink = None;
    if gateway_extra.contains("{otlp}") || baseline_extra.contains("{otlp}") {
        let (s, addr) = otlp::OtlpSink::start().await?;
        gateway_extra = gateway_extra.replace("{otlp}", &addr.to_string());
        baseline_extra = baseline_extra.replace("{otlp}", &addr.to_string());
        sink = Some(s);
    }
    // A baseline config alone compares the gateway binary with itself.
    let baseline_bin = args
        .baseline
        .clone()
        .or_else(|| args.baseline_config.as_ref().map(|_| gateway_bin.clone()));

    let mut skipped = Vec::new();
    let mut extra: Vec<(TargetKind, PathBuf)> = Vec::new();
    for (kind, name) in [
        (TargetKind::Haproxy, "haproxy"),
        (TargetKind::Nginx, "nginx"),
    ] {
        match targets::find_on_path(name) {
            _ if args.no_extra_proxies => {}
            Some(path) => extra.push((kind, path)),
            None => skipped.push(format!("{name}: not on PATH, skipped")),
        }
    }

    let grpc_gateway = if args.no_extra_proxies {
        None
    } else {
        match resolve_grpc_gateway(args.grpc_gateway.as_deref())? {
            Some(path) => Some(path),
            None => {
                skipped.push(
                    "grpc-gateway: not built (scripts/build-grpc-gateway.sh), skipped".into(),
                );
                None
            }
        }
    };
    let any_grpc = scenarios.iter().any(|s| s.is_grpc());
    let mut proxies: Vec<ProxyProcess> = Vec::new();
    let mut start_failures = Vec::new();
    let mut gateway_idle_rss_mib = None;
    if !scenarios.is_empty() {
        match ProxyProcess::gateway(
            &gateway_bin,
            TargetKind::Gateway,
            &backend_addrs,
            None,
            &gateway_extra,
        )
        .await
        {
            Ok(gateway) => {
                tokio::time::sleep(IDLE_SETTLE).await;
                gateway_idle_rss_mib = procfs::memory(gateway.pid())
                    .ok()
                    .map(|m| m.rss as f64 / (1024.0 * 1024.0));
                proxies.push(gateway);
            }
            Err(error) => start_failures.push((TargetKind::Gateway, error)),
        }
        if let Some(bin) = &baseline_bin {
            match ProxyProcess::gateway(
                bin,
                TargetKind::Baseline,
                &backend_addrs,
                None,
                &baseline_extra,
            )
            .await
            {
                Ok(baseline) => proxies.push(baseline),
                Err(error) => start_failures.push((TargetKind::Baseline, error)),
            }
        }
    }
    for (kind, path) in extra.iter().filter(|_| any_grpc) {
        let started = match kind {
            TargetKind::Haproxy => ProxyProcess::haproxy(path, &backend_addrs).await,
            _ => ProxyProcess::nginx(path, &backend_addrs).await,
        };
        match started {
            Ok(proxy) => proxies.push(proxy),
            Err(error) => start_failures.push((*kind, error)),
        }
    }

    let grpc_gateway = match grpc_gateway {
        Some(path) if scenarios.iter().any(|s| s.grpc_gateway_serves()) => {
            match ProxyProcess::grpc_gateway(&path, &backend_addrs).await {
                Ok(proxy) => proxies.push(proxy),
                Err(error) => start_failures.push((TargetKind::GrpcGateway, error)),
            }
            true
        }
        _ => false,
    };

    // One row per scenario × JSON connection count × target, in table order, whether or not
    // the target started.
    let mut all_runs: Vec<Runs> = Vec::new();
    for &scenario in &scenarios {
        let counts: Vec<Option<usize>> = if scenario.is_grpc() {
            vec![None]
        } else {
            params.json_connections.iter().map(|&n| Some(n)).collect()
        };
        for json_connections in counts {
            let mut kinds = vec![TargetKind::Direct, TargetKind::Gateway];
            if baseline_bin.is_some() {
                kinds.push(TargetKind::Baseline);
            }
            if scenario.is_grpc() {
                kinds.extend(extra.iter().map(|(kind, _)| *kind));
            }
            if grpc_gateway && scenario.grpc_gateway_serves() {
                kinds.push(TargetKind::GrpcGateway);
            }
            all_runs.extend(
                kinds
                    .into_iter()
                    .map(|kind| Runs::new(scenario, kind, json_connections)),
            );
        }
    }
    for (kind, error) in start_failures {
        eprintln!("{kind}: failed to start: {error:#}");
        let error = format!("start {kind}: {error:#}");
        for runs in all_runs.iter_mut().filter(|r| r.target == kind) {
            runs.push_failure(error.clone());
        }
    }

    // Repetitions outermost: every repetition runs every row once, so rows of one repetition
    // (targets, connection counts, scenarios) are measured close together in time and their
    // ratios are not skewed by drift; within a scenario the order rotates so no row always
    // runs first. The proxies serve the whole run.
    for rep in 0..args.reps {
        for &scenario in &scenarios {
            let mut order: Vec<usize> = (0..all_runs.len())
                .filter(|&i| {
                    let runs = &all_runs[i];
                    runs.scenario == scenario
                        && (runs.target == TargetKind::Direct
                            || proxies.iter().any(|p| p.kind == runs.target))
                })
                .collect();
            let len = order.len().max(1);
            order.rotate_left(rep as usize % len);
            for i in order {
                let (target, json_connections) = (all_runs[i].target, all_runs[i].json_connections);
                let outcome = match proxies.iter_mut().find(|p| p.kind == target) {
                    None => {
                        scenarios::run(
                            scenario,
                            target,
                            &backend_addrs,
                            None,
                            &params,
                            json_connections,
                            &payloads,
                        )
                        .await
                    }
                    Some(proxy) => match proxy.check_alive() {
                        Err(error) => Err(error),
                        Ok(()) => {
                            let (addr, pid) = (proxy.addr, proxy.pid());
                            scenarios::run(
                                scenario,
                                target,
                                &[addr],
                                Some(pid),
                                &params,
                                json_connections,
                                &payloads,
                            )
                            .await
                        }
                    },
                };
                progress(&all_runs[i], rep + 1, args.reps, &outcome);
                all_runs[i].push(rep, outcome);
            }
        }
    }
    drop(proxies);

    let issue13 = report::issue13_checks(&all_runs, &params.json_connections);
    let rows = all_runs
        .iter()
        .map(|runs| {
            runs.row(report::direct_rate(
                &all_runs,
                runs.scenario,
                runs.json_connections,
            ))
        })
        .collect();

    let memory = if args.memory || args.memory_only {
        eprintln!(
            "bench: memory: {} idle connections",
            args.memory_connections
        );
        let idle = memory::idle_connections(
            &gateway_bin,
            &backend_addrs,
            args.memory_connections,
            fd_limit,
        )
        .await
        .unwrap_or_else(|error| memory::MemoryResult {
            requested: args.memory_connections,
            error: Some(format!("{error:#}")),
            ..Default::default()
        });
        eprintln!("bench: memory: {} open streams", args.memory_streams);
        let streams = memory::open_streams(&gateway_bin, &backend_addrs, args.memory_streams)
            .await
            .unwrap_or_else(|error| memory::MemoryResult {
                requested: args.memory_streams,
                error: Some(format!("{error:#}")),
                ..Default::default()
            });
        Some(memory::MemoryReport {
            fd_limit,
            idle_connections: Some(idle),
            open_streams: Some(streams),
        })
    } else {
        None
    };
    drop(backends);
    if let Some(sink) = &sink {
        eprintln!("bench: the OTLP sink received {} spans", sink.spans());
    }

    let report = Report {
        machine: procfs::Machine::detect(),
        params,
        reps: args.reps,
        backends: backend_addrs.len(),
        nested_json_bytes: payloads.nested_json_len(),
        nested_16k_json_bytes: payloads.nested_16k_json_len(),
        gateway_bin: gateway_bin.display().to_string(),
        gateway_idle_rss_mib,
        skipped,
        rows,
        issue13,
        memory,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("serialize the report")?;
        println!("{json}");
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

/// One line per run on stderr, so a long run shows where it is.
fn progress(runs: &Runs, rep: u32, reps: u32, outcome: &anyhow::Result<load::Sample>) {
    let (scenario, target) = (runs.scenario, runs.target);
    let at = runs
        .json_connections
        .map(|n| format!(" ×{n}"))
        .unwrap_or_default();
    let unit = scenario.unit().name();
    match outcome {
        Ok(sample) => {
            let p99 = sample.latency.value_at_quantile(0.99) as f64 / 1e3;
            let cpu = sample
                .proxy_cpu_s
                .filter(|_| sample.units > 0)
                .map(|s| format!("  proxy CPU {:.1} µs/{unit}", s * 1e6 / sample.units as f64))
                .unwrap_or_default();
            let errors = if sample.errors > 0 {
                format!("  {} errors", sample.errors)
            } else {
                String::new()
            };
            let other =
                (sample.machine_cpu_s - sample.bench_cpu_s - sample.proxy_cpu_s.unwrap_or(0.0))
                    / sample.seconds;
            eprintln!(
                "[{}{at} {rep}/{reps}] {:<8} {:>10.0} {unit}/s  p99 {p99:.0} µs{cpu}  \
                 other load {:.2} cores{errors}",
                scenario.name(),
                target.name(),
                sample.rate,
                other.max(0.0)
            );
        }
        Err(error) => eprintln!(
            "[{}{at} {rep}/{reps}] {:<8} failed: {error:#}",
            scenario.name(),
            target.name()
        ),
    }
}
