#!/usr/bin/env bash
# Instructions per call of a gateway binary, counted by valgrind's callgrind:
# deterministic where CPU time on a shared machine is not, so two builds can be
# compared to the percent (user space only; kernel time is not counted).
#
#   bash scripts/callgrind-per-call.sh GATEWAY_BIN grpc|json|nested [CALLS]
#
# Starts one sample backend (target/release/sample-server) and the gateway under
# callgrind with instrumentation off, makes 400 warm-up calls, counts CALLS
# (default 3000) more (Python: grpcio unary Echo, or JSON POSTs over HTTP/1.1
# keep-alive, 4 threads: Echo/Unary's small body, or the bench's 1.2 KiB nested
# body to /v1/types:echo; scripts/callgrind_load.py), and prints the count per
# call. Needs valgrind, python3 with grpcio and grpcio-tools, and
# `cargo build --release -p sample-services --bin sample-server`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin=$1 kind=$2 calls=${3:-3000}
dir=$(mktemp -d)
trap 'kill ${gpid:-} ${bpid:-} 2>/dev/null || true; [ -n "${KEEP_CG:-}" ] && cp "$dir"/cg.out* "$KEEP_CG"/ ; rm -rf "$dir"'  EXIT
port=$((20000 + RANDOM % 20000)); back=$((port + 1))
python3 - "$root" "$dir/samples.pb" <<'PY'
import os, sys, grpc_tools
from grpc_tools import protoc
root, out = sys.argv[1], sys.argv[2]
wk = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
sys.exit(protoc.main(["protoc", f"-I{root}/sample-services/proto", f"-I{wk}", f"-I{root}/proto",
                      "--include_imports", f"--descriptor_set_out={out}", "echo.proto", "library.proto"]))
PY
"$root/target/release/sample-server" --listen "127.0.0.1:$back" --id b > "$dir/backend.log" 2>&1 &
bpid=$!
cat > "$dir/gw.toml" <<TOML
[[listeners]]
name = "front"
address = "127.0.0.1:$port"
[[clusters]]
name = "backend"
endpoints = [{ name = "b0", address = "127.0.0.1:$back" }]
[[routes]]
cluster = "backend"
[admin]
enabled = false
[access_log]
enabled = false
[registry]
preload = ["$dir/samples.pb"]
TOML
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
  "$bin" run --config "$dir/gw.toml" > "$dir/gw.log" 2>&1 &
gpid=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.5; done
python3 "$root/scripts/callgrind_load.py" "$kind" "127.0.0.1:$port" 400
callgrind_control -i on "$gpid" > /dev/null
python3 "$root/scripts/callgrind_load.py" "$kind" "127.0.0.1:$port" "$calls"
callgrind_control -i off "$gpid" > /dev/null
callgrind_control -d "$gpid" > /dev/null
sleep 1
total=$(cat "$dir"/cg.out* | grep -E "^totals:" | awk '{s += $2} END {print s}')
echo "$bin $kind calls=$calls instructions=$total per_call=$((total / calls))"
