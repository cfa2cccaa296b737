#!/usr/bin/env bash
# bench/memory.sh - resident memory of gatehouse with many routes and endpoints.
#
#   bash bench/memory.sh [ROUTES...]        (default: 1000 5000)
#
# For each route count, generates a manifest directory with one Gateway, ROUTES
# HTTPRoutes (one hostname each) spread over 100 Services, and 10,000 endpoints
# (100 per Service, in EndpointSlices of 100, all addresses in 127/8 so that every one
# reaches the local nginx backend, which listens on port 18080 of every address), starts the release binary on it with
# one worker, and reports:
#   - RSS idle, once the config is served (VmRSS from /proc);
#   - RSS under load: wrk -t1 -c50 -d5s across the routes' hostnames, against a
#     local nginx backend on 127.0.0.1:18080 (started here);
#   - translate time, from the startup log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
ROUTES=("$@")
[ ${#ROUTES[@]} -gt 0 ] || ROUTES=(1000 5000)
WORK=$(mktemp -d /tmp/gatehouse-memory.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx (apt-get install -y wrk nginx)" >&2; exit 1; }
(cd "$REPO" && cargo build --release --quiet)

# The backend: nginx answering every request with a small body.
. "$REPO/bench/nginx_backend.sh"
start_nginx_backend "$WORK"

generate() { # ROUTES DIR
  python3 - "$1" "$2" <<'EOF'
import sys, os
routes, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out, exist_ok=True)
services, per = 100, 100
with open(f"{out}/gateway.yaml", "w") as f:
    f.write("""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 18095, protocol: HTTP, hostname: "*.bench.example"}]
""")
with open(f"{out}/services.yaml", "w") as f:
    for s in range(services):
        f.write(f"""---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: 18080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-1, namespace: default, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
ports: [{{name: http, port: 18080}}]
endpoints:
""")
        for e in range(per):
            # All of 127/8 is loopback: every endpoint reaches the nginx backend.
            ip = f"127.{1 + s // 250}.{s % 250}.{e + 1}"
            f.write(f"- addresses: ['{ip}']\n  conditions: {{ready: true}}\n")
with open(f"{out}/routes.yaml", "w") as f:
    for r in range(routes):
        f.write(f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{r}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [r{r}.bench.example]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: svc-{r % services}, port: 80}}]
  - backendRefs: [{{name: svc-{r % services}, port: 80}}]
""")
EOF
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

printf '%-8s %-10s %-14s %-16s %s\n' routes endpoints "RSS idle MiB" "RSS load MiB" "load req/s"
for n in "${ROUTES[@]}"; do
  dir="$WORK/config-$n"
  generate "$n" "$dir"
  log="$WORK/gatehouse-$n.log"
  "$BIN" --workers 1 run --config "$dir" --http-addr 127.0.0.1:18093 --https-addr 127.0.0.1:18493 \
    --admin-addr 127.0.0.1:18903 --no-watch >"$log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:18903/readyz >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 2 # settle
  idle=$(rss_kib $pid)
  # Load over 50 hostnames (wrk sends one Host; a Lua script rotates them).
  cat >"$WORK/hosts.lua" <<EOF
local i = 0
request = function()
  i = (i + 1) % $(( n < 50 ? n : 50 ))
  return wrk.format("GET", "/api/x", {Host = "r" .. i .. ".bench.example"})
end
EOF
  wrk -t1 -c50 -d5s -s "$WORK/hosts.lua" http://127.0.0.1:18095/ >"$WORK/wrk-$n.txt" &
  wrkpid=$!
  load=0
  for _ in $(seq 1 9); do # the largest RSS seen during the run
    sleep 0.5
    now=$(rss_kib $pid)
    [ "$now" -gt "$load" ] && load=$now
  done
  wait $wrkpid || true
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$n.txt")
  printf '%-8s %-10s %-14s %-16s %s\n' "$n" 10000 "$(echo "scale=1; $idle/1024" | bc)" "$(echo "scale=1; $load/1024" | bc)" "$rps"
  kill $pid; wait $pid 2>/dev/null || true
done
