#!/usr/bin/env bash
# bench/waf.sh - the WAF's cost in the proxy: Gatehouse with the OWASP Core Rule Set
# (v4.28, paranoia 1, blocking) next to Gatehouse without a WAF and nginx with
# ModSecurity v3 (Debian's libnginx-mod-http-modsecurity, libmodsecurity 3.0.9) running
# the same CRS copy (waf/crs) with the same engine settings, in one run of the shared
# harness ../shared/bench/peers.sh (HTTP/1.1 keep-alive, wrk, one worker each).
#
#   bash bench/waf.sh [peers.sh options]      e.g. bash bench/waf.sh -r 5 -d 10s
#
# Environment: BENCH_PATH  request path and query (default a clean search query)
#
# Targets:
#   gatehouse       127.0.0.1:18090   no WAF
#   gatehouse-waf   127.0.0.1:18095   CRS paranoia 1, Blocking
#   nginx-modsec    127.0.0.1:18096   nginx 1.22 + ModSecurity 3.0.9, CRS paranoia 1, On
#   nginx-w1        127.0.0.1:18081   plain nginx (the harness's own peer)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_SH="$REPO/../shared/bench/peers.sh"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
QUERY="${BENCH_PATH:-/search?q=running+shoes&page=2}"
export RUST_LOG="${RUST_LOG:-warn}"

[ -f "$PEERS_SH" ] || { echo "harness not found: $PEERS_SH" >&2; exit 1; }
for p in nginx haproxy wrk curl; do command -v $p >/dev/null || NEED=1; done
if [ -n "${NEED:-}" ] || [ ! -e /usr/share/nginx/modules/ngx_http_modsecurity_module.so ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    nginx haproxy wrk curl libnginx-mod-http-modsecurity
fi
(cd "$REPO" && cargo build --release --locked)

STATE=$(mktemp -d /tmp/gatehouse-waf-bench.XXXXXX)
trap 'rm -rf "$STATE"' EXIT

# Gatehouse with a SecurityPolicy on the bench Ingress.
mkdir -p "$STATE/config-waf"
cp "$REPO"/bench/config/*.yaml "$STATE/config-waf/"
cat >"$STATE/config-waf/policy.yaml" <<YAML
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: bench-waf, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: bench}]
  waf: {mode: Blocking, paranoiaLevel: 1}
YAML

# ModSecurity: our engine settings (ModSecurity's recommended ones), CRS's setup, the
# same paranoia level, the same rules.
cat >"$STATE/modsec-main.conf" <<CONF
Include $REPO/crates/security/conf/recommended.conf
SecRequestBodyLimit 131072
SecResponseBodyAccess Off
SecAuditEngine Off
SecDebugLogLevel 0
Include $REPO/waf/crs/crs-setup.conf.example
SecAction "id:900100,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=1,setvar:tx.detection_paranoia_level=1"
Include $REPO/waf/crs/rules/*.conf
CONF
cat >"$STATE/nginx-modsec.conf" <<CONF
load_module /usr/share/nginx/modules/ngx_http_modsecurity_module.so;
worker_processes 1;
daemon off;
pid $STATE/nginx-modsec.pid;
error_log $STATE/nginx-modsec-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $STATE/body;
    proxy_temp_path $STATE/proxy;
    fastcgi_temp_path $STATE/fcgi;
    uwsgi_temp_path $STATE/uwsgi;
    scgi_temp_path $STATE/scgi;
    modsecurity on;
    modsecurity_rules_file $STATE/modsec-main.conf;
    upstream backend { server 127.0.0.1:18080; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:18096 backlog=4096;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
nginx -t -c "$STATE/nginx-modsec.conf" -e "$STATE/nginx-modsec-error.log" 2>&1 | tail -2

GH=$(printf '%q ' "$BIN" --workers 1 run --config "$REPO/bench/config" --http-addr 127.0.0.1:18090 \
  --https-addr 127.0.0.1:18490 --admin-addr 127.0.0.1:18901 --no-watch)
GHW=$(printf '%q ' "$BIN" --workers 1 run --config "$STATE/config-waf" --waf-rules "$REPO/waf/crs" \
  --http-addr 127.0.0.1:18095 --https-addr 127.0.0.1:18495 --admin-addr 127.0.0.1:18905 --no-watch)
MS=$(printf '%q ' nginx -e "$STATE/nginx-modsec-error.log" -c "$STATE/nginx-modsec.conf")

OUT="$REPO/bench/results/waf-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
# Addressed as localhost, so the Host header is a name, as in real traffic: CRS scores a
# numeric Host (rule 920350) and every request would then be logged by both WAFs.
bash "$PEERS_SH" -P nginx -o "$OUT" -s "$GH" -s "$GHW" -s "$MS" "$@" \
  "gatehouse=localhost:18090$QUERY" "gatehouse-waf=localhost:18095$QUERY" \
  "nginx-modsec=localhost:18096$QUERY"
echo "summary: $OUT/summary.txt"
