#!/usr/bin/env bash
# bench/handshakes.sh - new TLS connections per second: Gatehouse next to nginx, all
# with the same ECDSA P-256 certificate (bench/config/tls-secret.yaml) and one worker,
# in front of the same nginx backend. wrk sends "Connection: close", so every request
# is a new TCP connection and a TLS handshake (wrk offers the previous session, so
# servers that resume do an abbreviated one).
#   nginx        nginx's defaults (1.22: TLS 1.2 only, session tickets), as peers.sh runs it
#   nginx-tls13  ssl_protocols TLSv1.2 TLSv1.3 (nginx's default since 1.23.4)
#   gatehouse    TLS 1.3 (and 1.2), stateless session tickets
#
#   bash bench/handshakes.sh [ROUNDS] [SECONDS]      (default 3 rounds of 5 s)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
ROUNDS=${1:-3}
SECS=${2:-5}
WORK=$(mktemp -d /tmp/gatehouse-handshakes.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx (apt-get install -y wrk nginx)" >&2; exit 1; }
(cd "$REPO" && cargo build --release --quiet)

# The certificate and key Gatehouse serves, for nginx too.
secret="$REPO/bench/config/tls-secret.yaml"
awk '/tls.crt: \|/{f=1;next} /tls.key: \|/{f=0} f' "$secret" | sed 's/^    //' >"$WORK/cert.pem"
awk '/tls.key: \|/{f=1;next} f' "$secret" | sed 's/^    //' >"$WORK/key.pem"

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:18080; keepalive 64; }
  server {
    listen 127.0.0.1:18080 backlog=4096;
    location / { return 200 "bench-backend-ok\n"; }
  }
  server {
    listen 127.0.0.1:18442 ssl backlog=4096;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:18443 ssl backlog=4096;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)
"$BIN" --workers 1 run --config "$REPO/bench/config" --http-addr 127.0.0.1:18092 \
  --https-addr 127.0.0.1:18492 --admin-addr 127.0.0.1:18902 --no-watch >"$WORK/gatehouse.log" 2>&1 &
PIDS+=($!)
sleep 1

echo "target rounds: new connections/s (one request each)"
declare -A all
for r in $(seq 1 "$ROUNDS"); do
  for t in nginx=https://127.0.0.1:18442/ nginx-tls13=https://127.0.0.1:18443/ gatehouse=https://127.0.0.1:18492/; do
    name=${t%%=*} url=${t#*=}
    out=$(wrk -t1 -c50 -d"${SECS}s" -H "Connection: close" "$url" 2>&1)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    errs=$(grep -cE 'Socket errors|Non-2xx' <<<"$out" || true)
    all[$name]="${all[$name]:-} $rps"
    echo "  round $r $name $rps (error lines: $errs)"
  done
done
for name in nginx nginx-tls13 gatehouse; do
  median=$(tr ' ' '\n' <<<"${all[$name]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$name median $median"
done
