#!/usr/bin/env bash
# bench/flood.sh - is a flood contained? Normal clients (10 loopback sources, 4,000
# requests/s between them at a constant rate, over keep-alive connections) run alone
# for 4 s, then with a flood of 10x their load from 3 sources on top for 4 s, five times
# over (examples/flood.rs). Each target is measured in turn, in interleaved rounds;
# medians are printed at the end.
#
#   bash bench/flood.sh [-r ROUNDS] [key=value ...]     e.g. bash bench/flood.sh -r 3
#   (keys as in examples/flood.rs: rate=4000 factor=10 normal=4 attack=4 cycles=5 ...)
#
# The proxy under test runs on CPU 1; the load generator and the backend share CPU 0.
# Targets (one worker each, the same nginx backend on 127.0.0.1:18080):
#   gatehouse            no policy: the flood is served like everyone else
#   gatehouse-adaptive   SecurityPolicy adaptiveBlocking (1,000 requests/s a source)
#   nginx-limit-req      nginx with limit_req at the same 1,000 requests/s per address
#                        (the usual nginx answer: the flood gets 503 but is still read)
# Targets: normal clients' success ratio > 99% and p99 under the flood within 2x of
# their p99 without it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
FLOOD="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/flood"
export RUST_LOG="${RUST_LOG:-warn}"
ROUNDS=3
if [ "${1:-}" = "-r" ]; then ROUNDS=$2; shift 2; fi

command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx
(cd "$REPO" && cargo build --release --locked && cargo build --release --locked --example flood)

STATE=$(mktemp -d /tmp/gatehouse-flood-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$STATE/backend/nginx.pid" ] && kill "$(cat "$STATE/backend/nginx.pid")" 2>/dev/null || true
  [ -f "$STATE/peer/nginx.pid" ] && kill "$(cat "$STATE/peer/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$STATE"
}
trap cleanup EXIT

# The backend: a fixed ~100-byte answer, 2 workers.
mkdir -p "$STATE/backend" "$STATE/peer"
cat > "$STATE/backend/nginx.conf" <<EOF
worker_processes 1;
pid $STATE/backend/nginx.pid;
error_log $STATE/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18080 reuseport backlog=4096;
    keepalive_requests 1000000;
    location / { return 200 "backend: fixed answer for the proxy benchmarks, about one hundred bytes long....\n"; }
  }
}
EOF
taskset -c 0 nginx -c "$STATE/backend/nginx.conf" -p "$STATE/backend"

# nginx as the proxy, with limit_req per client address.
cat > "$STATE/peer/nginx.conf" <<EOF
worker_processes 1;
pid $STATE/peer/nginx.pid;
error_log $STATE/peer/error.log crit;
events { worker_connections 8192; }
http {
  access_log off;
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000r/s;
  upstream backend { server 127.0.0.1:18080; keepalive 64; }
  server {
    listen 127.0.0.1:18190 backlog=4096;
    keepalive_requests 1000000;
    location / {
      limit_req zone=perip burst=200 nodelay;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
taskset -c 1 nginx -c "$STATE/peer/nginx.conf" -p "$STATE/peer"

mkdir -p "$STATE/adaptive"
cp "$REPO"/bench/config/*.yaml "$STATE/adaptive/"
cat > "$STATE/adaptive/policy.yaml" <<EOF
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: bench, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: bench}]
  adaptiveBlocking:
    requestsPerSecond: 1000
    window: 2s
    blockDuration: 5m
EOF

start_gatehouse() { # config port admin
  taskset -c 1 "$BIN" --workers 1 run --config "$1" --http-addr "127.0.0.1:$2" --https-addr "127.0.0.1:$(( $2 + 400 ))" \
    --admin-addr "127.0.0.1:$3" --no-watch >"$STATE/gh-$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$3/readyz" >/dev/null && return; sleep 0.1; done
  echo "gatehouse on $2 did not start" >&2; cat "$STATE/gh-$2.log" >&2; exit 1
}

OUT="$REPO/bench/results/flood-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  for target in gatehouse gatehouse-adaptive nginx-limit-req; do
    case $target in
      gatehouse) start_gatehouse "$REPO/bench/config" 18090 18901; port=18090 ;;
      gatehouse-adaptive) start_gatehouse "$STATE/adaptive" 18091 18902; port=18091 ;;
      nginx-limit-req) port=18190 ;;
    esac
    line=$(taskset -c 0 "$FLOOD" "127.0.0.1:$port" localhost "$@")
    echo "$target round $round: $line" | tee -a "$OUT/runs.txt"
    if [ "$target" != nginx-limit-req ]; then kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; fi
    sleep 1
  done
done

python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    target, rest = line.split(" round ", 1)
    runs.setdefault(target, []).append(json.loads(rest.split(": ", 1)[1]))
med = lambda xs: statistics.median(xs)
print(f"{'target':<20} {'p99 normal':>11} {'p99 flood':>10} {'ratio':>6} {'p99 2s on':>10} {'ratio':>6} {'success':>9} {'flood served':>13} {'after 2 s':>10}")
for t, rs in runs.items():
    n99 = med([r["normal"]["p99_ms"] for r in rs]); a99 = med([r["attack"]["p99_ms"] for r in rs])
    c99 = med([r["contained"]["p99_ms"] for r in rs])
    cr = med([r["contained"]["p99_ms"] / max(r["normal"]["p99_ms"], 1e-9) for r in rs])
    ok = min(r["attack"]["success"] for r in rs)
    served = med([r["flood_served"] for r in rs])
    late = med([r["flood_served_after_2s"] for r in rs])
    print(f"{t:<20} {n99:>9.2f}ms {a99:>8.2f}ms {med([r['p99_ratio'] for r in rs]):>6.2f} {c99:>8.2f}ms {cr:>6.2f} {ok*100:>8.2f}% {served:>13.0f} {late:>10.0f}")
print("p99: normal clients' 99th percentile latency, from when each request was due; ratio: under")
print("the flood over without it (medians of the rounds' ratios); '2s on': from 2 s after the flood")
print("began; success: the lowest of the rounds; flood served: flood requests answered 200.")
PY
echo "summary: $OUT/summary.txt"
