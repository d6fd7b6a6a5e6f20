#!/usr/bin/env bash
# The test command: installs what the tests need beyond Rust (Python grpcio
# for the cross-implementation test), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "== installing Python grpcio and grpcio-tools (cross-implementation test)"
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --no-fail-fast "$@"
