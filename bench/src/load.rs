//! Closed-loop load: workers issue calls back to back; only calls that start and end inside
//! the measured window count, and the proxy's CPU is read at the window's two edges.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::{task::JoinSet, time::Instant};

use crate::procfs;

/// Largest latency recorded, ns (longer ones are clamped to it).
const MAX_LATENCY_NS: u64 = 120_000_000_000;
/// Significant decimal digits kept by the histograms.
const HISTOGRAM_DIGITS: u8 = 3;
/// Longest single call (or stream step); past it the call counts as an error. Bounds how long
/// a worker can outlive the window.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed call, so a broken target does not turn into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Warm-up, then the measured interval.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Calls that start before this are warm-up.
    pub(crate) start: Instant,
    /// No call starts at or after this; calls ending after it are not counted.
    pub(crate) end: Instant,
}

impl Window {
    /// A window opening after `warmup` from now and lasting `duration`.
    pub(crate) fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }
}

/// A new, empty latency histogram in ns.
pub(crate) fn histogram() -> Histogram<u64> {
    // Invariant: these bounds (1 ≤ low, high ≥ 2·low, digits ≤ 5) are always accepted.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, HISTOGRAM_DIGITS).expect("valid bounds")
}

/// One worker's tally.
pub(crate) struct Recorder {
    window: Window,
    /// Latency of every counted call, ns.
    pub(crate) latency: Histogram<u64>,
    /// Units (requests or messages) completed inside the window.
    pub(crate) units: u64,
    /// Failed calls inside the window (and during warm-up).
    pub(crate) errors: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
}

impl Recorder {
    /// An empty tally for `window`.
    pub(crate) fn new(window: Window) -> Self {
        Self {
            window,
            latency: histogram(),
            units: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// True once no call may start any more.
    pub(crate) fn done(&self) -> bool {
        Instant::now() >= self.window.end
    }

    /// Records a call that started at `started` and produced `units` (or failed).
    pub(crate) async fn record(&mut self, started: Instant, outcome: anyhow::Result<u64>) {
        let ended = Instant::now();
        match outcome {
            Ok(units) => {
                if started >= self.window.start && ended <= self.window.end {
                    let ns = u64::try_from((ended - started).as_nanos()).unwrap_or(u64::MAX);
                    self.latency.saturating_record(ns.max(1));
                    self.units += units;
                }
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{error:#}"));
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Runs `call` with [`CALL_TIMEOUT`].
pub(crate) async fn timed<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("no answer within {CALL_TIMEOUT:?}"))?
}

/// What one measured run gave.
pub(crate) struct Sample {
    /// Units per second over the window.
    pub(crate) rate: f64,
    /// Units counted.
    pub(crate) units: u64,
    /// Latency of the counted calls, ns.
    pub(crate) latency: Histogram<u64>,
    /// Failed calls.
    pub(crate) errors: u64,
    /// The first failure.
    pub(crate) first_error: Option<String>,
    /// Proxy CPU seconds over the window (none for direct runs).
    pub(crate) proxy_cpu_s: Option<f64>,
    /// Proxy peak RSS over the window (or since start if it could not be reset), bytes.
    pub(crate) proxy_peak_rss: Option<u64>,
    /// This process's CPU seconds (load generator and backends) over the window.
    pub(crate) bench_cpu_s: f64,
    /// The whole machine's busy CPU seconds over the window; what is neither the bench nor the
    /// proxy is other load that skews the run.
    pub(crate) machine_cpu_s: f64,
    /// Window length, s.
    pub(crate) seconds: f64,
}

/// Waits out `workers` (which must stop at `window.end`), reading the CPU of `proxy_pid` and of
/// this process at the window's edges, and merges their tallies.
pub(crate) async fn measure(
    window: Window,
    mut workers: JoinSet<Recorder>,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Sample> {
    let own_pid = std::process::id();
    tokio::time::sleep_until(window.start).await;
    if let Some(pid) = proxy_pid {
        procfs::reset_peak_rss(pid);
    }
    let proxy_cpu_start = proxy_pid.map(procfs::cpu_seconds).transpose()?;
    let bench_cpu_start = procfs::cpu_seconds(own_pid)?;
    let machine_cpu_start = procfs::machine_busy_seconds()?;
    let measured_from = Instant::now();
    tokio::time::sleep_until(window.end).await;
    let proxy_cpu_end = proxy_pid.map(procfs::cpu_seconds).transpose()?;
    let bench_cpu_end = procfs::cpu_seconds(own_pid)?;
    let machine_cpu_end = procfs::machine_busy_seconds()?;
    let seconds = measured_from.elapsed().as_secs_f64();
    let proxy_peak_rss = proxy_pid
        .map(procfs::memory)
        .transpose()?
        .map(|m| m.peak_rss);

    let mut latency = histogram();
    let (mut units, mut errors, mut first_error) = (0, 0, None);
    // Workers stop starting calls at `window.end`; a call in flight ends within CALL_TIMEOUT.
    let collect = async {
        while let Some(joined) = workers.join_next().await {
            let recorder = joined.context("a load worker panicked")?;
            latency
                .add(&recorder.latency)
                .context("merge latency histograms")?;
            units += recorder.units;
            errors += recorder.errors;
            if first_error.is_none() {
                first_error = recorder.first_error;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), collect)
        .await
        .context("load workers did not stop")??;

    Ok(Sample {
        rate: units as f64 / seconds,
        units,
        latency,
        errors,
        first_error,
        proxy_cpu_s: proxy_cpu_start.zip(proxy_cpu_end).map(|(a, b)| b - a),
        proxy_peak_rss,
        bench_cpu_s: bench_cpu_end - bench_cpu_start,
        machine_cpu_s: machine_cpu_end - machine_cpu_start,
        seconds,
    })
}
