//! Resident memory of this process, for the memory examples.

/// Resident set size in KiB (`/proc/self/statm`), 0 when unreadable.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}
