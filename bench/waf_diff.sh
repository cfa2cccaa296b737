#!/usr/bin/env bash
# bench/waf_diff.sh - do Gatehouse and ModSecurity block the same requests? Every
# request of the CRS regression tests (../shared/crs/tests/regression/tests, sent byte
# for byte) goes to Gatehouse and to nginx + ModSecurity 3 (Debian's
# libnginx-mod-http-modsecurity), both blocking at the same paranoia level with the same
# CRS copy (waf/crs) and engine settings, in front of the same echo backend; the
# verdicts (403 or not) are compared and every difference is listed.
#
#   bash bench/waf_diff.sh [PARANOIA_LEVEL]      (default 1)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PL="${1:-1}"
TESTS="$REPO/../shared/crs/tests/regression/tests"
[ -e /usr/share/nginx/modules/ngx_http_modsecurity_module.so ] ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libnginx-mod-http-modsecurity
(cd "$REPO" && cargo build --release --locked --bin gatehouse --example waf_diff)
BIN="$REPO/target/release/gatehouse"
STATE=$(mktemp -d /tmp/gatehouse-waf-diff.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$STATE"; }
trap cleanup EXIT

"$BIN" echo --listen 127.0.0.1:18281 --name echo >/dev/null 2>&1 & PIDS+=($!)

mkdir -p "$STATE/config"
cat >"$STATE/config/waf.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gatehouse
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: gatehouse.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 18281}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 18281}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: all, namespace: default}
spec: {defaultBackend: {service: {name: echo, port: {number: 80}}}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: waf, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: all}]
  waf: {mode: Blocking, paranoiaLevel: $PL}
YAML
"$BIN" --workers 1 run --config "$STATE/config" --waf-rules "$REPO/waf/crs" --no-watch \
  --http-addr 127.0.0.1:18285 --https-addr 127.0.0.1:18287 --admin-addr 127.0.0.1:18288 \
  --waf-log "$STATE/gatehouse-waf.log" >"$STATE/gatehouse.out" 2>&1 & PIDS+=($!)

cat >"$STATE/modsec.conf" <<CONF
Include $REPO/crates/security/conf/recommended.conf
SecRequestBodyLimit 131072
SecResponseBodyAccess Off
SecAuditEngine Off
Include $REPO/waf/crs/crs-setup.conf.example
SecAction "id:900100,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=$PL,setvar:tx.detection_paranoia_level=$PL"
Include $REPO/waf/crs/rules/*.conf
CONF
cat >"$STATE/nginx.conf" <<CONF
load_module /usr/share/nginx/modules/ngx_http_modsecurity_module.so;
worker_processes 1;
daemon off;
pid $STATE/nginx.pid;
error_log $STATE/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $STATE/body; proxy_temp_path $STATE/proxy;
    fastcgi_temp_path $STATE/fcgi; uwsgi_temp_path $STATE/uwsgi; scgi_temp_path $STATE/scgi;
    modsecurity on;
    modsecurity_rules_file $STATE/modsec.conf;
    server {
        listen 127.0.0.1:18286;
        location / { proxy_pass http://127.0.0.1:18281; }
    }
}
CONF
nginx -e "$STATE/nginx-error.log" -c "$STATE/nginx.conf" & PIDS+=($!)
for port in 18281 18285 18286; do
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
"$REPO/target/release/examples/waf_diff" "$TESTS" 127.0.0.1:18285 127.0.0.1:18286 | tee "$STATE/diff.txt"
mkdir -p "$REPO/bench/results"
cp "$STATE/diff.txt" "$REPO/bench/results/waf-diff-pl$PL-$(date +%Y%m%d-%H%M%S).txt"
cp "$STATE/nginx-error.log" "$REPO/bench/results/waf-diff-pl$PL-modsec.log" 2>/dev/null || true
cp "$STATE/gatehouse-waf.log" "$REPO/bench/results/waf-diff-pl$PL-gatehouse.log" 2>/dev/null || true
