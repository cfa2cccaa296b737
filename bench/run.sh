#!/usr/bin/env bash
# bench/run.sh - Gatehouse next to nginx and HAProxy on loopback, in one run of the shared
# harness ../shared/bench/peers.sh (see its README; `bash bench/run.sh -h` for its options).
#
#   bash bench/run.sh [peers.sh options] [extra targets]
#   e.g. bash bench/run.sh -r 5 -d 20s     # 5 rounds of 20 s
#        bash bench/run.sh -w 1,2          # peers with 1 and with 2 workers
#
# What it does:
#   1. cargo build --release (the gatehouse binary);
#   2. apt-get installs what peers.sh needs, only if a command is missing;
#   3. runs peers.sh, which starts the backend (nginx on 127.0.0.1:18080), the peers and,
#      through -s, gatehouse with bench/config, then measures every target interleaved:
#        gatehouse      http://127.0.0.1:18090/               (wrk, HTTP/1.1)
#        gatehouse-tls  https://127.0.0.1:18490/              (wrk, HTTP/1.1 over TLS)
#        gatehouse-h2   h2load+https://127.0.0.1:18490/       (h2load, h2 over TLS, ALPN)
#      next to direct, nginx-w1, nginx-tls-w1, nginx-h2-w1, haproxy-w1, ... .
#
# Environment:
#   BENCH_PROTOCOLS  which gatehouse targets to add: any of http,https,h2 (default all three;
#                    https adds peers.sh -T, h2 adds -2)
#   BENCH_RESULTS    where result folders go (default bench/results, git-ignored; with
#                    BENCH_STATE set: $BENCH_STATE/results, as peers.sh does). -o DIR wins.
#   RUST_LOG         gatehouse log filter (default warn: no per-request logging)
#   GATEHOUSE_WORKERS  gatehouse worker threads (default 1, matching the peers' 1 worker)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_SH="$REPO/../shared/bench/peers.sh"
CONFIG="$REPO/bench/config"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case $TARGET_DIR in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/gatehouse"

HTTP_ADDR=127.0.0.1:18090
HTTPS_ADDR=127.0.0.1:18490
ADMIN_ADDR=127.0.0.1:18901
PROTOCOLS="${BENCH_PROTOCOLS:-http,https,h2}"
export RUST_LOG="${RUST_LOG:-warn}"

[ -f "$PEERS_SH" ] || { echo "harness not found: $PEERS_SH" >&2; exit 1; }

# ------------------------------------------------------------ arguments
# Split our arguments the way peers.sh's getopts will read them: options first, then
# positional extra targets. Remember whether -o (output dir) or -h was given.
USER_OPTS=() USER_POS=() USER_OUT="" WANT_HELP=0
split_args() {
  local opt OPTIND=1 OPTARG
  while getopts ":r:d:c:t:W:w:T2P:ns:o:kh" opt; do
    case $opt in
      o) USER_OUT=$OPTARG ;;
      h) WANT_HELP=1 ;;
      :) echo "option -$OPTARG needs a value" >&2; exit 2 ;;
      \?) echo "unknown option -$OPTARG (see bash bench/run.sh -h)" >&2; exit 2 ;;
    esac
  done
  USER_OPTS=("${@:1:OPTIND-1}")
  USER_POS=("${@:OPTIND}")
}
split_args "$@"

if [ "$WANT_HELP" = 1 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo
  echo "peers.sh options:"
  bash "$PEERS_SH" -h
  exit 0
fi

# Gatehouse targets (checked before the build, which is slow).
PEERS_FLAGS=() TARGETS=()
IFS=, read -ra PLIST <<<"$PROTOCOLS"
for p in "${PLIST[@]}"; do
  case $p in
    http)  TARGETS+=("gatehouse=http://$HTTP_ADDR/") ;;
    https) PEERS_FLAGS+=(-T); TARGETS+=("gatehouse-tls=https://$HTTPS_ADDR/") ;;
    h2)    PEERS_FLAGS+=(-2); TARGETS+=("gatehouse-h2=h2load+https://$HTTPS_ADDR/") ;;
    *) echo "BENCH_PROTOCOLS: unknown protocol $p (http, https, h2)" >&2; exit 2 ;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || { echo "BENCH_PROTOCOLS selects no target" >&2; exit 2; }

# ------------------------------------------------------------ build
echo "== building gatehouse (release)" >&2
(cd "$REPO" && { cargo build --release --locked 2>/dev/null || cargo build --release; })
[ -x "$BIN" ] || { echo "no binary at $BIN after the build" >&2; exit 1; }

# ------------------------------------------------------------ packages
# command -> Debian package; peers.sh needs all of these (h2load only with -2).
declare -A PKG_OF=(
  [nginx]=nginx [haproxy]=haproxy [wrk]=wrk [h2load]=nghttp2-client
  [curl]=curl [ss]=iproute2 [python3]=python3 [openssl]=openssl
)
missing=()
for cmd in nginx haproxy wrk h2load curl ss python3 openssl; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_OF[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
    { "${SUDO[@]}" apt-get update && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# ------------------------------------------------------------ targets
# peers.sh does not check the ports of extra targets; a stale gatehouse would be measured.
for addr in "$HTTP_ADDR" "$HTTPS_ADDR" "$ADMIN_ADDR"; do
  if [ -n "$(ss -ltnH "sport = :${addr##*:}" 2>/dev/null)" ]; then
    echo "port ${addr##*:} is already in use (an old gatehouse?); stop it first" >&2
    exit 1
  fi
done

# One worker thread by default, like the peers' default of one worker process; set
# GATEHOUSE_WORKERS=2 to compare with `-w 2`.
GATEHOUSE_CMD=$(printf '%q ' "$BIN" --workers "${GATEHOUSE_WORKERS:-1}" run --config "$CONFIG" \
  --http-addr "$HTTP_ADDR" --https-addr "$HTTPS_ADDR" --admin-addr "$ADMIN_ADDR" --no-watch)

# Result folder: the user's -o (passed through in USER_OPTS), else one we choose and pass.
OUT_ARGS=()
if [ -n "$USER_OUT" ]; then
  OUT=$USER_OUT
else
  if [ -n "${BENCH_RESULTS:-}" ]; then RESULTS_ROOT=$BENCH_RESULTS
  elif [ -n "${BENCH_STATE:-}" ]; then RESULTS_ROOT=$BENCH_STATE/results
  else RESULTS_ROOT=$REPO/bench/results
  fi
  OUT=$RESULTS_ROOT/$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -n "$USER_OUT" ] || OUT_ARGS=(-o "$OUT")

# Our flags first so that the user's options (given later) win where they overlap.
CMD=(bash "$PEERS_SH" "${PEERS_FLAGS[@]}" "${OUT_ARGS[@]}" -s "$GATEHOUSE_CMD"
     "${USER_OPTS[@]}" "${USER_POS[@]}" "${TARGETS[@]}")
echo "== $(printf '%q ' "${CMD[@]}")" >&2
rc=0
"${CMD[@]}" || rc=$?

echo >&2
if [ -s "$OUT/summary.txt" ]; then
  echo "summary:     $OUT/summary.txt"
  echo "per run:     $OUT/results.csv"
  echo "raw output:  $OUT/wrk/  configs: $OUT/conf/  logs: $OUT/logs/ (gatehouse: cmd0.out)"
else
  echo "peers.sh exited with $rc and wrote no summary; see $OUT/logs/ (gatehouse: cmd0.out)" >&2
fi
exit $rc
