#!/usr/bin/env bash
# bench/protect.sh - what north-south protection costs: Gatehouse unprotected, next to
# Gatehouse with a SecurityPolicy holding a 50,000-entry deny list and rate limits, in
# one run of the shared harness ../shared/bench/peers.sh (HTTP/1.1 keep-alive, wrk, one
# worker each). Two protected set-ups:
#   - gatehouse-100routes: 100 policies on 100 Ingresses, one limit each (100 rules in
#     the config, one on each request's route), plus the deny list;
#   - gatehouse-100limits: 100 limits on the benchmarked route itself (every request
#     counted by all of them: the worst case), plus the deny list.
# The limits are far above the load, so no request is refused: the cost measured is
# the checking. nginx plain is the harness's own peer.
#
#   bash bench/protect.sh [peers.sh options]      e.g. bash bench/protect.sh -r 5 -d 5s
#
# Targets:
#   gatehouse             127.0.0.1:18090   no policy
#   gatehouse-100routes   127.0.0.1:18097
#   gatehouse-100limits   127.0.0.1:18098
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_SH="$REPO/../shared/bench/peers.sh"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
QUERY="${BENCH_PATH:-/search?q=running+shoes&page=2}"
export RUST_LOG="${RUST_LOG:-warn}"

[ -f "$PEERS_SH" ] || { echo "harness not found: $PEERS_SH" >&2; exit 1; }
for p in nginx wrk curl python3; do command -v $p >/dev/null || NEED=1; done
if [ -n "${NEED:-}" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx wrk curl python3
fi
(cd "$REPO" && cargo build --release --locked)

STATE=$(mktemp -d /tmp/gatehouse-protect-bench.XXXXXX)
trap 'rm -rf "$STATE"' EXIT

python3 - "$REPO/bench/config" "$STATE" <<'PY'
import os, shutil, sys
src, state = sys.argv[1], sys.argv[2]
# 50,000 /24 networks from 11.0.0.0 up, none of them loopback.
deny = ", ".join(f"{11 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24" for i in range(50_000))
limit = lambda name, key: (f"    - {{name: {name}, requests: 1000000000, per: 1s, "
                           f"burst: 1000000000{', key: ' + key if key else ''}}}\n")
keys = ["{clientIP: {}}", "{clientIP: {ipv4Prefix: 24}}", "{path: true}", None]
for setup in ("100routes", "100limits"):
    d = os.path.join(state, setup)
    os.makedirs(d)
    for f in os.listdir(src):
        if f.endswith(".yaml"):
            shutil.copy(os.path.join(src, f), d)
    with open(os.path.join(d, "policies.yaml"), "w") as out:
        if setup == "100limits":
            limits = "".join(limit(f"l{i}", keys[i % 4]) for i in range(100))
            out.write("apiVersion: gatehouse.dev/v1alpha1\nkind: SecurityPolicy\n"
                      "metadata: {name: bench, namespace: default}\nspec:\n"
                      "  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: bench}]\n"
                      f"  rateLimits:\n{limits}  ipAccess:\n    deny: [{deny}]\n")
            continue
        # 99 more Ingresses on their own hosts, each with a policy of one limit; the
        # benchmarked Ingress's policy also holds the deny list.
        for i in range(100):
            name = "bench" if i == 0 else f"app{i}"
            if i:
                out.write(f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                          f"metadata: {{name: {name}, namespace: default}}\nspec:\n"
                          f"  ingressClassName: gatehouse\n  rules:\n  - host: app{i}.example\n"
                          f"    http:\n      paths:\n      - path: /\n        pathType: Prefix\n"
                          f"        backend: {{service: {{name: bench, port: {{number: 80}}}}}}\n")
            out.write(f"---\napiVersion: gatehouse.dev/v1alpha1\nkind: SecurityPolicy\n"
                      f"metadata: {{name: {name}, namespace: default}}\nspec:\n"
                      f"  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: {name}}}]\n"
                      f"  rateLimits:\n{limit('per-client', keys[0])}")
            if i == 0:
                out.write(f"  ipAccess:\n    deny: [{deny}]\n")
PY

GH=$(printf '%q ' "$BIN" --workers 1 run --config "$REPO/bench/config" --http-addr 127.0.0.1:18090 \
  --https-addr 127.0.0.1:18490 --admin-addr 127.0.0.1:18901 --no-watch)
G1=$(printf '%q ' "$BIN" --workers 1 run --config "$STATE/100routes" --http-addr 127.0.0.1:18097 \
  --https-addr 127.0.0.1:18497 --admin-addr 127.0.0.1:18907 --no-watch)
G2=$(printf '%q ' "$BIN" --workers 1 run --config "$STATE/100limits" --http-addr 127.0.0.1:18098 \
  --https-addr 127.0.0.1:18498 --admin-addr 127.0.0.1:18908 --no-watch)

OUT="$REPO/bench/results/protect-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
bash "$PEERS_SH" -P nginx -o "$OUT" -s "$GH" -s "$G1" -s "$G2" "$@" \
  "gatehouse=localhost:18090$QUERY" "gatehouse-100routes=localhost:18097$QUERY" \
  "gatehouse-100limits=localhost:18098$QUERY"
echo "summary: $OUT/summary.txt"
