//! A criterion [`Measurement`] of the benchmark thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`): time the thread was not running (another
//! process on a shared core, say) is not counted, so throughput figures
//! hold on a noisy machine. Formatted as criterion's wall clock is.

use criterion::{
    Throughput,
    measurement::{Measurement, ValueFormatter},
};
use rustix::time::{ClockId, clock_gettime};

/// The calling thread's CPU time, in nanoseconds.
pub(crate) struct CpuTime;

fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        now_ns()
    }

    fn end(&self, start: u64) -> u64 {
        now_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

/// Nanoseconds as `ns`/`µs`/`ms`/`s`, bytes per second as `MiB/s` and the like.
struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iter, base, units) = match *throughput {
            Throughput::Bytes(n) => (n as f64, 1024.0, ["  B/s", "KiB/s", "MiB/s", "GiB/s"]),
            Throughput::BytesDecimal(n) => (n as f64, 1000.0, ["  B/s", "KB/s", "MB/s", "GB/s"]),
            Throughput::Bits(n) => (n as f64, 1000.0, ["  b/s", "Kb/s", "Mb/s", "Gb/s"]),
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => (
                n as f64,
                1000.0,
                [" elem/s", "Kelem/s", "Melem/s", "Gelem/s"],
            ),
        };
        let per_second = per_iter * 1e9 / typical;
        let mut scale = 0;
        while scale < 3 && per_second >= base * f64::powi(base, scale) {
            scale += 1;
        }
        let denominator = f64::powi(base, scale);
        values
            .iter_mut()
            .for_each(|v| *v = per_iter * 1e9 / *v / denominator);
        units[scale as usize]
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
