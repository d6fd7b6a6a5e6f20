//! Results: per-run samples folded into one row per scenario and target, printed as a Markdown
//! table or as JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    load::{self, Sample},
    memory::{MemoryReport, MemoryResult},
    procfs::Machine,
    scenarios::{LoadParams, Scenario, Unit},
    targets::TargetKind,
};

/// Targets from issue 6, per unit, in µs of proxy CPU.
const TARGET_GRPC_UNARY_US: f64 = 14.0;
const TARGET_BIDI_US: f64 = 1.5;
const TARGET_JSON_UNARY_US: f64 = 15.0;

/// Every measured run of one scenario against one target (JSON scenarios: at one count of
/// client connections).
pub(crate) struct Runs {
    pub(crate) scenario: Scenario,
    pub(crate) target: TargetKind,
    /// HTTP/1.1 client connections (JSON scenarios only).
    pub(crate) json_connections: Option<usize>,
    samples: Vec<Sample>,
    /// Proxy CPU per unit (µs) of each completed repetition, by repetition index: ratios
    /// between rows are taken repetition by repetition.
    cpu_by_rep: Vec<(u32, f64)>,
    failures: Vec<String>,
}

impl Runs {
    pub(crate) fn new(
        scenario: Scenario,
        target: TargetKind,
        json_connections: Option<usize>,
    ) -> Self {
        Self {
            scenario,
            target,
            json_connections,
            samples: Vec::new(),
            cpu_by_rep: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Adds repetition `rep`'s outcome.
    pub(crate) fn push(&mut self, rep: u32, outcome: anyhow::Result<Sample>) {
        match outcome {
            Ok(sample) => {
                if let Some(cpu_s) = sample.proxy_cpu_s.filter(|_| sample.units > 0) {
                    self.cpu_by_rep
                        .push((rep, cpu_s * 1e6 / sample.units as f64));
                }
                self.samples.push(sample);
            }
            Err(error) => self.push_failure(format!("{error:#}")),
        }
    }

    /// Records a failure that is no repetition's (the target did not start).
    pub(crate) fn push_failure(&mut self, error: String) {
        self.failures.push(error);
    }

    /// Proxy CPU per unit (µs) of repetition `rep`, if it completed.
    fn cpu_at(&self, rep: u32) -> Option<f64> {
        self.cpu_by_rep
            .iter()
            .find(|(r, _)| *r == rep)
            .map(|&(_, us)| us)
    }

    /// The median rate, for ratios.
    fn median_rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self.samples.iter().map(|s| s.rate).collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }

    /// Folds the runs into a row; `direct` is the median rate of the same scenario's direct
    /// runs.
    pub(crate) fn row(&self, direct: Option<f64>) -> Row {
        let mut latency: Histogram<u64> = load::histogram();
        let mut rates: Vec<f64> = Vec::new();
        let (mut units, mut errors, mut proxy_cpu_s, mut seconds, mut bench_cpu_s) =
            (0u64, 0u64, 0.0, 0.0, 0.0);
        let mut machine_cpu_s = 0.0;
        let mut peak: Option<u64> = None;
        let mut error = self.failures.first().cloned();
        for sample in &self.samples {
            // Same bounds on both sides, so adding cannot fail.
            let _ = latency.add(&sample.latency);
            rates.push(sample.rate);
            units += sample.units;
            errors += sample.errors;
            seconds += sample.seconds;
            bench_cpu_s += sample.bench_cpu_s;
            machine_cpu_s += sample.machine_cpu_s;
            proxy_cpu_s += sample.proxy_cpu_s.unwrap_or(0.0);
            peak = peak.max(sample.proxy_peak_rss);
            if error.is_none() {
                error.clone_from(&sample.first_error);
            }
        }
        rates.sort_by(f64::total_cmp);
        let proxied = self.target != TargetKind::Direct;
        let quantile =
            |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1e3);
        let rate = rates.get(rates.len() / 2).copied();
        Row {
            scenario: self.scenario,
            target: self.target,
            json_connections: self.json_connections,
            protocol: if self.scenario.is_grpc() || !proxied {
                "grpc"
            } else {
                "json"
            },
            unit: self.scenario.unit(),
            reps: self.samples.len(),
            rate,
            rate_min: rates.first().copied(),
            rate_max: rates.last().copied(),
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            proxy_cpu_us_per_unit: (proxied && units > 0).then(|| proxy_cpu_s * 1e6 / units as f64),
            proxy_cpu_cores: (proxied && seconds > 0.0).then(|| proxy_cpu_s / seconds),
            proxy_peak_rss_mib: peak.map(|b| b as f64 / (1024.0 * 1024.0)),
            bench_cpu_cores: (seconds > 0.0).then(|| bench_cpu_s / seconds),
            other_cpu_cores: (seconds > 0.0)
                .then(|| ((machine_cpu_s - bench_cpu_s - proxy_cpu_s) / seconds).max(0.0)),
            ratio_to_direct: rate.zip(direct).map(|(r, d)| r / d),
            failed_runs: self.failures.len(),
            errors,
            error,
        }
    }
}

/// A figure of issue 13: a ratio of proxy CPU per unit between two rows, or one row's CPU
/// per unit, taken in every repetition where both rows completed; the median over them.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    /// What is compared.
    pub(crate) what: String,
    /// `ratio` or `us` (µs per unit).
    pub(crate) kind: &'static str,
    /// The issue's bound (at most), if it sets one.
    pub(crate) limit: Option<f64>,
    /// Median over the repetitions.
    pub(crate) median: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    /// Repetitions that gave a value.
    pub(crate) reps: usize,
    /// Median within the limit.
    pub(crate) met: Option<bool>,
}

impl Check {
    fn new(what: String, kind: &'static str, limit: Option<f64>, mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        };
        Self {
            what,
            kind,
            limit,
            median,
            min: values.first().copied(),
            max: values.last().copied(),
            reps: n,
            met: median.zip(limit).map(|(m, l)| m <= l),
        }
    }
}

/// Issue 13's bounds.
const LIMIT_NESTED_OVER_SMALL: f64 = 1.3;
const LIMIT_NDJSON_US_PER_MSG: f64 = 2.0;
const LIMIT_CONNS_OVER_FEWEST: f64 = 1.0;
const LIMIT_OVER_GRPC_GATEWAY: f64 = 0.1;

/// Issue 13's figures from the JSON rows of one run: per connection count, nested over
/// small, the NDJSON cost per message and the gateway over grpc-gateway; per JSON scenario,
/// each connection count over the fewest. Rows missing from the run give no figure.
pub(crate) fn issue13_checks(all: &[Runs], json_connections: &[usize]) -> Vec<Check> {
    use Scenario::{JsonStreamNdjson, JsonUnaryNested, JsonUnaryNested16k, JsonUnarySmall};
    use TargetKind::{Gateway, GrpcGateway};
    let find = |scenario, target, conns| {
        all.iter().find(|r| {
            r.scenario == scenario && r.target == target && r.json_connections == Some(conns)
        })
    };
    let ratio = |a: Option<&Runs>, b: Option<&Runs>| -> Option<Vec<f64>> {
        let (a, b) = (a?, b?);
        Some(
            a.cpu_by_rep
                .iter()
                .filter_map(|&(rep, us)| b.cpu_at(rep).filter(|&d| d > 0.0).map(|d| us / d))
                .collect(),
        )
    };
    let mut checks = Vec::new();
    for &n in json_connections {
        let gateway = |scenario| find(scenario, Gateway, n);
        let pairs = [
            (
                format!("nested 1.2 KiB / small, gateway, {n} conn(s)"),
                Some(LIMIT_NESTED_OVER_SMALL),
                gateway(JsonUnaryNested),
                gateway(JsonUnarySmall),
            ),
            (
                format!("nested 16 KiB / small, gateway, {n} conn(s)"),
                None,
                gateway(JsonUnaryNested16k),
                gateway(JsonUnarySmall),
            ),
            (
                format!("gateway / grpc-gateway, nested 1.2 KiB, {n} conn(s)"),
                Some(LIMIT_OVER_GRPC_GATEWAY),
                gateway(JsonUnaryNested),
                find(JsonUnaryNested, GrpcGateway, n),
            ),
            (
                format!("gateway / grpc-gateway, nested 16 KiB, {n} conn(s)"),
                Some(LIMIT_OVER_GRPC_GATEWAY),
                gateway(JsonUnaryNested16k),
                find(JsonUnaryNested16k, GrpcGateway, n),
            ),
            (
                format!("gateway / grpc-gateway, NDJSON per message, {n} conn(s)"),
                None,
                gateway(JsonStreamNdjson),
                find(JsonStreamNdjson, GrpcGateway, n),
            ),
        ];
        for (what, limit, a, b) in pairs {
            if let Some(values) = ratio(a, b) {
                checks.push(Check::new(what, "ratio", limit, values));
            }
        }
        if let Some(runs) = gateway(JsonStreamNdjson) {
            checks.push(Check::new(
                format!("NDJSON, gateway CPU per message, {n} conn(s)"),
                "us",
                Some(LIMIT_NDJSON_US_PER_MSG),
                runs.cpu_by_rep.iter().map(|&(_, us)| us).collect(),
            ));
        }
    }
    if let Some(&fewest) = json_connections.iter().min() {
        for scenario in Scenario::ALL.into_iter().filter(|s| !s.is_grpc()) {
            for &n in json_connections.iter().filter(|&&n| n != fewest) {
                let what = format!("{}, gateway: {n} conns / {fewest} conn(s)", scenario.name());
                if let Some(values) =
                    ratio(find(scenario, Gateway, n), find(scenario, Gateway, fewest))
                {
                    checks.push(Check::new(
                        what,
                        "ratio",
                        Some(LIMIT_CONNS_OVER_FEWEST),
                        values,
                    ));
                }
            }
        }
    }
    checks
}

/// The median rate of the direct runs of `scenario` (at `json_connections`) among `all`.
pub(crate) fn direct_rate(
    all: &[Runs],
    scenario: Scenario,
    json_connections: Option<usize>,
) -> Option<f64> {
    all.iter()
        .find(|r| {
            r.scenario == scenario
                && r.target == TargetKind::Direct
                && r.json_connections == json_connections
        })
        .and_then(Runs::median_rate)
}

/// One line of the table.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: Scenario,
    pub(crate) target: TargetKind,
    /// HTTP/1.1 client connections (JSON scenarios only).
    pub(crate) json_connections: Option<usize>,
    /// What the client spoke: `grpc` or `json` (HTTP/1.1).
    pub(crate) protocol: &'static str,
    pub(crate) unit: Unit,
    /// Runs that completed.
    pub(crate) reps: usize,
    /// Median units per second over the runs.
    pub(crate) rate: Option<f64>,
    pub(crate) rate_min: Option<f64>,
    pub(crate) rate_max: Option<f64>,
    /// Latency over all runs' calls (bidi: round trip; NDJSON: whole 100-message call), µs.
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    /// Proxy CPU (user + system) per unit, µs.
    pub(crate) proxy_cpu_us_per_unit: Option<f64>,
    /// Proxy CPU in cores while measured.
    pub(crate) proxy_cpu_cores: Option<f64>,
    /// Largest proxy peak RSS of the runs, MiB.
    pub(crate) proxy_peak_rss_mib: Option<f64>,
    /// The bench process itself (clients and the in-process backends), cores.
    pub(crate) bench_cpu_cores: Option<f64>,
    /// Everything else on the machine while measured (other processes), cores: noise.
    pub(crate) other_cpu_cores: Option<f64>,
    /// Median rate / median direct rate of the same scenario (JSON rows: direct gRPC).
    pub(crate) ratio_to_direct: Option<f64>,
    /// Runs that failed as a whole.
    pub(crate) failed_runs: usize,
    /// Failed calls in the completed runs.
    pub(crate) errors: u64,
    /// The first failure seen.
    pub(crate) error: Option<String>,
}

/// Everything printed.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) params: LoadParams,
    pub(crate) reps: u32,
    pub(crate) backends: usize,
    /// Size of `json-unary-nested`'s request body, bytes.
    pub(crate) nested_json_bytes: usize,
    /// Size of `json-unary-nested-16k`'s request body, bytes.
    pub(crate) nested_16k_json_bytes: usize,
    pub(crate) gateway_bin: String,
    /// Gateway RSS right after start (idle, descriptors loaded), MiB.
    pub(crate) gateway_idle_rss_mib: Option<f64>,
    /// `haproxy` / `nginx` not found, or skipped.
    pub(crate) skipped: Vec<String>,
    pub(crate) rows: Vec<Row>,
    /// Issue 13's ratios, repetition by repetition.
    pub(crate) issue13: Vec<Check>,
    pub(crate) memory: Option<MemoryReport>,
}

impl Report {
    /// The Markdown rendering.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let p = &self.params;
        let _ = writeln!(out, "## Gateway benchmark\n");
        let _ = writeln!(
            out,
            "- machine: {} × {}, {} MiB, Linux {}; {}",
            m.nproc, m.cpu_model, m.mem_total_mib, m.kernel, m.date
        );
        if !self.rows.is_empty() {
            let _ = writeln!(
                out,
                "- runs: {} rep(s) × {:.1} s after {:.1} s warm-up, targets interleaved; \
             gRPC: {} connections × {} streams (pipelined bidi: {} in flight each); JSON: {} HTTP/1.1 keep-alive connections (a row each); \
             {} in-process sample backend(s); `json-unary-nested` body {} B, `json-unary-nested-16k` {} B; gateway `{}`{}",
                self.reps,
                p.duration.as_secs_f64(),
                p.warmup.as_secs_f64(),
                p.connections,
                p.streams,
                p.bidi_window,
                p.json_connections
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                self.backends,
                self.nested_json_bytes,
                self.nested_16k_json_bytes,
                self.gateway_bin,
                self.gateway_idle_rss_mib
                    .map(|mib| format!(" (idle RSS {mib:.1} MiB)"))
                    .unwrap_or_default()
            );
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "- {skipped}");
        }
        if !self.rows.is_empty() {
            let _ = writeln!(
                out,
                "\n| scenario | target | conns | rate (median, min–max) | p50 | p99 | p99.9 | \
                 proxy CPU / unit | proxy CPU | proxy peak RSS | bench CPU | other CPU | vs direct | errors |"
            );
            let _ = writeln!(
                out,
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for row in &self.rows {
                let _ = writeln!(out, "{}", row_markdown(row, p));
            }
            let _ = writeln!(
                out,
                "\nRates are per second, median of the runs; latencies over all calls of all runs \
                 (HdrHistogram). *proxy CPU / unit*: user + system CPU of the proxy process \
                 over the measured window divided by the units completed in it; *bench CPU*: \
                 the bench process itself (load clients and backends), in cores; *other CPU*: the rest of \
                 the machine (other processes) while measured: above ~0.1 core the run was \
                 disturbed. \
                 For `json-*` rows the direct target is the same call made in gRPC straight to \
                 the backend (there is no JSON server to compare with): *vs direct* is the \
                 ratio to direct gRPC. `grpc-bidi-msgs`: one unit = one ping-pong round trip \
                 on a stream (a message each way, one outstanding per stream); a one-way \
                 message costs about half; `grpc-bidi-pipelined`: the same with `--bidi-window` \
                 messages in flight per stream, latency from queueing to reply. `json-stream-ndjson`: one unit = one NDJSON line; \
                 latency is the whole 100-message call."
            );
            let _ = writeln!(out, "\n{}", self.targets_markdown());
        }
        if !self.issue13.is_empty() {
            let _ = writeln!(out, "\n{}", issue13_markdown(&self.issue13));
        }
        if let Some(memory) = &self.memory {
            let _ = writeln!(out, "\n{}", memory_markdown(memory));
        }
        out
    }

    /// The issue's targets against the gateway rows.
    fn targets_markdown(&self) -> String {
        let mut out = String::from(
            "Targets (issue 6), gateway CPU per unit:\n\n| target | limit | measured | met |\n\
             |---|---:|---:|---|\n",
        );
        // (scenario, what, limit per message or request, messages per unit)
        let checks = [
            (
                Scenario::GrpcUnary64b,
                "unary gRPC passthrough ≤ HAProxy (11-14 µs/req)",
                TARGET_GRPC_UNARY_US,
                1.0,
            ),
            (
                Scenario::GrpcBidiMsgs,
                "bidi ≤ 1.5 µs/msg (a round trip counted as 2 messages)",
                TARGET_BIDI_US,
                2.0,
            ),
            (
                Scenario::GrpcBidiPipelined,
                "bidi ≤ 1.5 µs/msg, pipelined (a round trip counted as 2 messages)",
                TARGET_BIDI_US,
                2.0,
            ),
            (
                Scenario::JsonUnarySmall,
                "unary JSON ≤ 15 µs/req",
                TARGET_JSON_UNARY_US,
                1.0,
            ),
        ];
        let mut any = false;
        for (scenario, what, limit, per_unit) in checks {
            let Some(row) = self
                .rows
                .iter()
                .find(|r| r.scenario == scenario && r.target == TargetKind::Gateway)
            else {
                continue;
            };
            any = true;
            let (measured, met) = match row.proxy_cpu_us_per_unit {
                Some(us) => {
                    let us = us / per_unit;
                    (
                        format!("{us:.1} µs"),
                        if us <= limit { "yes" } else { "no" },
                    )
                }
                None => ("-".into(), "-"),
            };
            let _ = writeln!(out, "| {what} | {limit:.1} µs | {measured} | {met} |");
        }
        let haproxy = self
            .rows
            .iter()
            .find(|r| r.scenario == Scenario::GrpcUnary64b && r.target == TargetKind::Haproxy)
            .and_then(|r| r.proxy_cpu_us_per_unit);
        if let Some(us) = haproxy {
            let _ = writeln!(
                out,
                "\nHAProxy in this run: {us:.1} µs/req on grpc-unary-64b."
            );
        }
        if any { out } else { String::new() }
    }
}

fn issue13_markdown(checks: &[Check]) -> String {
    let mut out = String::from(
        "Targets (issue 13): proxy CPU per unit, ratios taken repetition by repetition \
         (both rows measured in the same repetition), median and range over the repetitions:\n\n\
         | figure | limit | median | min–max | reps | met |\n|---|---:|---:|---:|---:|---|\n",
    );
    let value = |v: Option<f64>, kind: &str| match (v, kind) {
        (None, _) => "-".to_string(),
        (Some(v), "us") => format!("{v:.2} µs"),
        (Some(v), _) => format!("{v:.3}"),
    };
    for c in checks {
        let range = match (c.min, c.max) {
            (Some(_), Some(_)) => format!("{}–{}", value(c.min, c.kind), value(c.max, c.kind)),
            _ => "-".into(),
        };
        let limit = c.limit.map_or("-".into(), |l| match c.kind {
            "us" => format!("≤ {l:.1} µs"),
            _ => format!("≤ {l:.1}"),
        });
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {limit} | {} | {range} | {} | {met} |",
            c.what,
            value(c.median, c.kind),
            c.reps
        );
    }
    out
}

fn row_markdown(row: &Row, params: &LoadParams) -> String {
    let unit = row.unit.name();
    // gRPC: connections × streams; JSON: HTTP/1.1 connections (direct: as many gRPC calls).
    let conns = match row.json_connections {
        Some(n) => n.to_string(),
        None => format!("{}×{}", params.connections, params.streams),
    };
    let target = match (row.target, row.scenario.is_grpc()) {
        (TargetKind::Direct, false) => "direct (gRPC)".to_string(),
        (TargetKind::Gateway, false) => "gateway (JSON)".to_string(),
        (TargetKind::Baseline, false) => "baseline (JSON)".to_string(),
        (TargetKind::GrpcGateway, false) => "grpc-gateway (JSON)".to_string(),
        (target, _) => target.name().to_string(),
    };
    let rate = match (row.rate, row.rate_min, row.rate_max) {
        (Some(rate), Some(min), Some(max)) if row.reps > 1 => format!(
            "{} {unit}/s ({}–{})",
            thousands(rate),
            thousands(min),
            thousands(max)
        ),
        (Some(rate), ..) => format!("{} {unit}/s", thousands(rate)),
        _ => "-".into(),
    };
    let errors = match (&row.error, row.errors, row.failed_runs) {
        (None, 0, 0) => "0".to_string(),
        (error, errors, failed) => {
            let mut text = format!("{errors}");
            if failed > 0 {
                let _ = write!(text, ", {failed} run(s) failed");
            }
            if let Some(error) = error {
                let short: String = error.chars().take(120).collect();
                let _ = write!(text, ": {}", short.replace('|', "/").replace('\n', " "));
            }
            text
        }
    };
    format!(
        "| {} | {target} | {conns} | {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
        row.scenario.name(),
        latency(row.p50_us),
        latency(row.p99_us),
        latency(row.p999_us),
        row.proxy_cpu_us_per_unit
            .map_or("-".into(), |us| format!("{us:.1} µs/{unit}")),
        row.proxy_cpu_cores
            .map_or("-".into(), |c| format!("{c:.2} cores")),
        row.proxy_peak_rss_mib
            .map_or("-".into(), |mib| format!("{mib:.1} MiB")),
        row.bench_cpu_cores
            .map_or("-".into(), |c| format!("{c:.2} cores")),
        row.other_cpu_cores
            .map_or("-".into(), |c| format!("{c:.2} cores")),
        row.ratio_to_direct
            .map_or("-".into(), |r| format!("{r:.2}")),
    )
}

fn memory_markdown(memory: &MemoryReport) -> String {
    let mut out = format!(
        "Memory (fresh gateway each; RLIMIT_NOFILE {}):\n\n\
         | scenario | requested | reached | connections | RSS before | RSS after | \
         peak RSS | RSS per unit | note |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        memory.fd_limit
    );
    let rows: [(&str, &Option<MemoryResult>, &str); 2] = [
        ("idle HTTP/2 connections", &memory.idle_connections, "conn"),
        (
            "open streams (Echo/ServerStream)",
            &memory.open_streams,
            "stream",
        ),
    ];
    for (name, result, unit) in rows {
        let Some(r) = result else { continue };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.requested,
            r.reached,
            r.connections,
            mib(r.rss_before),
            mib(r.rss_after),
            mib(r.peak_rss),
            format_args!("{:.1} KiB/{unit}", r.bytes_each / 1024.0),
            r.error.as_deref().unwrap_or("").replace('|', "/"),
        );
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn latency(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000.0 => format!("{us:.0} µs"),
        Some(us) => format!("{:.2} ms", us / 1e3),
    }
}

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completed run with `units` units and `cpu_us` µs of proxy CPU per unit.
    fn sample(units: u64, cpu_us: f64) -> Sample {
        Sample {
            rate: units as f64,
            units,
            latency: load::histogram(),
            errors: 0,
            first_error: None,
            proxy_cpu_s: Some(cpu_us * units as f64 / 1e6),
            proxy_peak_rss: None,
            bench_cpu_s: 0.0,
            machine_cpu_s: 0.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn issue13_ratios_pair_repetitions() {
        let mut small = Runs::new(Scenario::JsonUnarySmall, TargetKind::Gateway, Some(1));
        let mut nested = Runs::new(Scenario::JsonUnaryNested, TargetKind::Gateway, Some(1));
        for (rep, us) in [(0, 10.0), (1, 20.0), (2, 30.0)] {
            small.push(rep, Ok(sample(1000, us)));
        }
        nested.push(0, Ok(sample(1000, 12.0)));
        nested.push(1, Err(anyhow::anyhow!("failed")));
        nested.push(2, Ok(sample(1000, 33.0)));
        let checks = issue13_checks(&[small, nested], &[1]);
        let check = checks
            .iter()
            .find(|c| c.what.starts_with("nested 1.2 KiB / small"))
            .unwrap();
        assert_eq!(check.reps, 2);
        assert!((check.median.unwrap() - 1.15).abs() < 1e-9, "{check:?}");
        assert!((check.min.unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(check.met, Some(true));
        // No grpc-gateway or NDJSON rows: no figure for them.
        assert_eq!(checks.len(), 1, "{checks:?}");
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.6), "1,235");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(latency(Some(950.0)), "950 µs");
        assert_eq!(latency(Some(1_500.0)), "1.50 ms");
    }
}
