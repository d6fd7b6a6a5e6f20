#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each and prints,
# per target, how many inputs it executed (libFuzzer's `#N DONE` line).
#
#   bash scripts/fuzz.sh [SECONDS]      # default 20 s per target
#
# Installs cargo-fuzz (and the nightly toolchain) when missing. Starts each
# target from its seed corpus in fuzz/corpus/<target>/ (read only) and keeps
# what it finds in a scratch corpus ($FUZZ_WORK_DIR, default fuzz/work/), so
# the repository's seeds stay small. A crash, leak, timeout or out-of-memory
# stops the script with a non-zero status; the input is in fuzz/artifacts/.
# Build output goes to $FUZZ_TARGET_DIR (default fuzz/target), apart from the
# workspace's target directory (sanitizer flags, nightly).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (a positive number of seconds per target)" >&2
    exit 2
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
work="${FUZZ_WORK_DIR:-$PWD/fuzz/work}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

targets=$(cargo +nightly fuzz list)
echo "== building fuzz targets: $(echo $targets)"
cargo +nightly fuzz build -O

summary=()
for target in $targets; do
    mkdir -p "$work/$target" "fuzz/corpus/$target"
    log="$work/$target.log"
    echo "== fuzz $target for ${seconds} s"
    cargo +nightly fuzz run -O "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    }
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "$done_line"
    summary+=("$(printf '%-16s %4s s  %10s executions' "$target" "$seconds" "${execs:-?}")")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
