//! What `/proc` says about a process (CPU time, resident memory) and about the machine, plus
//! the file-descriptor limit the memory scenarios need.

use std::{
    fs,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Serialize;

/// Clock ticks per second of the `utime`/`stime` fields of `/proc/<pid>/stat`.
pub(crate) fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        ticks => ticks,
    }
}

/// CPU time a process spent so far, user + system, all threads.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no `)` after the command name"))?;
    // Fields 14 (utime) and 15 (stime), counted from 1; `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path}: field {n} missing"))?
            .parse()
            .with_context(|| format!("{path}: field {n} is not a number"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / clock_ticks_per_second() as f64)
}

/// CPU seconds the whole machine spent busy so far (all CPUs, everything but idle and
/// iowait), from the first line of `/proc/stat`.
pub(crate) fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("/proc/stat: no `cpu` line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok(total.saturating_sub(idle) as f64 / clock_ticks_per_second() as f64)
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now, bytes.
    pub(crate) rss: u64,
    /// `VmHWM`: peak resident since start or the last [`reset_peak_rss`], bytes.
    pub(crate) peak_rss: u64,
}

/// Reads `VmRSS` and `VmHWM`.
pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .with_context(|| format!("{path}: no {key}"))?;
        let number = line.trim().trim_end_matches("kB").trim();
        number
            .parse::<u64>()
            .with_context(|| format!("{path}: {key} {line:?}"))
    };
    Ok(Memory {
        rss: kib("VmRSS:")? * 1024,
        peak_rss: kib("VmHWM:")? * 1024,
    })
}

/// Resets a process's `VmHWM` to its current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux
/// 4.0+), so the peak covers one measured interval; false when the kernel or permissions refuse.
pub(crate) fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (at most the hard limit); returns the soft
/// limit in force afterwards. Children started later inherit it.
pub(crate) fn raise_fd_limit(wanted: u64) -> anyhow::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return Ok(current);
    }
    let target = limit.maximum.map_or(wanted, |max| max.min(wanted));
    if target <= current {
        return Ok(current);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )
    .with_context(|| format!("raise RLIMIT_NOFILE from {current} to {target}"))?;
    Ok(target)
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    /// CPUs this process may use.
    pub(crate) nproc: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// Kernel release.
    pub(crate) kernel: String,
    /// Total memory, MiB.
    pub(crate) mem_total_mib: u64,
    /// UTC date and time of the run, `YYYY-MM-DD HH:MM:SS UTC`.
    pub(crate) date: String,
}

impl Machine {
    /// Reads what it can; unknown parts say "unknown".
    pub(crate) fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let mem_total_mib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|meminfo| {
                let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
                line.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            mem_total_mib,
            date: utc_now(),
        }
    }
}

/// Now as `YYYY-MM-DD HH:MM:SS UTC` (no time-zone database needed).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Fails unless `/proc/self/stat` is readable: the CPU figures need Linux procfs.
pub(crate) fn check_procfs() -> anyhow::Result<()> {
    if fs::metadata("/proc/self/stat").is_err() {
        bail!("/proc/self/stat is not readable: the bench needs Linux with procfs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        let memory = memory(pid).unwrap();
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(memory.rss > 0 && memory.peak_rss >= memory.rss);
    }
}
