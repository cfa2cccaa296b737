#!/usr/bin/env bash
# bench/control.sh - the central controller at scale (examples/control_bench.rs): the real
# controller (table and gRPC server) holding 10,000 Services with 100,000 endpoints, and
# 1,000 lightweight proxies of the real protocol in a second process, on loopback.
#
#   bash bench/control.sh [key=value ...]   e.g. bash bench/control.sh proxies=1000 changes=20
#   (keys: proxies=1000 services=10000 endpoints=10 changes=20)
#
# Measures the connection storm (all proxies join holding nothing), the latency from
# one endpoint change to each proxy's receipt, the bytes sent (whole set and per
# change), and the controller's memory. Prints JSON; also written to
# $BENCH_STATE/control-<time>.json (BENCH_STATE defaults to /tmp/gatehouse-bench).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
STATE="${BENCH_STATE:-/tmp/gatehouse-bench}"
mkdir -p "$STATE"
(cd "$REPO" && cargo build --release --locked --example control_bench)
OUT="$STATE/control-$(date +%Y%m%d-%H%M%S).json"
"$TARGET/release/examples/control_bench" out="$OUT" "$@"
echo "results: $OUT" >&2
