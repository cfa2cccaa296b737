#!/usr/bin/env bash
# bench/analytics.sh - what Gatehouse's analytics cost (issue 9).
#
#   bash bench/analytics.sh [ROUNDS] [DURATION]     (default: 7 rounds of 8s)
#
# 1. Throughput and latency, next to nginx and HAProxy in one run of the shared harness
#    (../shared/bench/peers.sh): the release binary with every analytics feature off
#    (--analytics-tick-ms 0, no access log) against the same binary with all of them on
#    (analytics ticking every second with baselines and anomaly detection, the request
#    rings, per-route reason counters, and the access log sampled 1 in 100 with every
#    error logged). Results: bench/results/<time>/ (peers.sh's summary).
# 2. Memory under high-cardinality traffic: 100,000 requests, each from its own client
#    address (127.X.Y.Z) on its own connection, over 10,000 paths, twice over (the
#    second time from 100,000 other addresses); VmRSS and VmHWM of the analytics-on
#    proxy after start, after each pass. Bounded means the second pass adds nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
ROUNDS="${1:-7}"
DURATION="${2:-8s}"
WORK=$(mktemp -d /tmp/gatehouse-analytics.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$REPO" && cargo build --release --quiet)
COMMON="--workers 1 run --config $REPO/bench/config --no-watch"
OFF="$BIN $COMMON --http-addr 127.0.0.1:18091 --https-addr 127.0.0.1:18491 --admin-addr 127.0.0.1:18911 --analytics-tick-ms 0"
ON="$BIN $COMMON --http-addr 127.0.0.1:18092 --https-addr 127.0.0.1:18492 --admin-addr 127.0.0.1:18912 --analytics-tick-ms 1000 --access-log $WORK/access.log --access-log-sample 100"

echo "== 1. throughput: analytics off and on, next to nginx and HAProxy"
bash "$REPO/../shared/bench/peers.sh" -P nginx,haproxy -r "$ROUNDS" -d "$DURATION" \
  -s "$OFF" -s "$ON" \
  analytics-off=127.0.0.1:18091/ analytics-on=127.0.0.1:18092/

echo "== 2. memory: 100,000 client addresses, 10,000 paths, twice"
. "$REPO/bench/nginx_backend.sh"
start_nginx_backend "$WORK"
$ON >"$WORK/gatehouse.log" 2>&1 &
GH=$!
PIDS+=($GH)
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:18912/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$GH/status"; echo; }
echo "after start:        $(rss)"
python3 "$REPO/bench/cardinality.py" 127.0.0.1:18092 --clients 100000 --paths 10000
sleep 2
echo "after pass 1:       $(rss)"
python3 "$REPO/bench/cardinality.py" 127.0.0.1:18092 --clients 100000 --paths 10000 --offset 100000
sleep 2
echo "after pass 2:       $(rss)"
curl -s http://127.0.0.1:18912/metrics | grep -E '^gatehouse_(analytics_keys|anomalies_total)' || true
echo "access log lines: $(wc -l <"$WORK/access.log")"
