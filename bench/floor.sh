#!/usr/bin/env bash
# bench/floor.sh - how cheap can a proxy be on this machine? Runs the harness (plain
# HTTP/1.1 only) with bench/null_proxy.c next to gatehouse, nginx and HAProxy. The null
# proxy does no HTTP work at all (bytes in, bytes out, one upstream connection per
# client connection), so its `cpu us/req` is the kernel's loopback TCP cost of a proxy:
# the floor under any proxy's CPU per request here.
#
#   bash bench/floor.sh [peers.sh options]     e.g. bash bench/floor.sh -r 5 -d 10s
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }
BIN=$(mktemp -d)/null_proxy
cc -O2 -o "$BIN" "$REPO/bench/null_proxy.c"
BENCH_PROTOCOLS=http exec bash "$REPO/bench/run.sh" -P nginx,haproxy "$@" \
  -s "$BIN 127.0.0.1:18095 127.0.0.1:18080" null=http://127.0.0.1:18095/
