#!/usr/bin/env bash
# bench/mesh.sh - what the east-west mesh costs, against a direct pod-to-pod path in the
# same run (examples/mesh_bench.rs; needs root for network namespaces).
#
#   bash bench/mesh.sh [key=value ...]     e.g. bash bench/mesh.sh rounds=5 seconds=10
#   (keys: rounds=3 seconds=10 rate=1000 conns=8 iperf=5 known=1000 threads=1)
#
# On the tests' network of namespaces (a bridge, two node namespaces, pods behind each
# node's own bridge), a pod on node 1 talks to a pod on node 2 two ways:
#   direct  two pods outside the mesh (plain routing over the same nodes and bridges)
#   mesh    two meshed pods: captured by nftables, carried by node 1's proxy through a
#           mutual-TLS HTTP/2 CONNECT tunnel to node 2's proxy, delivered there
# and measures, alternating direct and mesh phases `rounds` times:
#   - latency at a constant 1,000 requests/s of 1 KB HTTP/1.1 responses over 8
#     keep-alive connections, from each request's scheduled send time: p50/p90/p99,
#     and the mesh's addition (mesh minus direct, per round; medians reported);
#   - CPU time per request of each node proxy (utime+stime from /proc);
#   - resident memory of each node proxy at that load, and after 1,000 more workloads
#     (on 20 other nodes, 100 Services, 100 policies) are loaded;
#   - single-stream bulk TCP throughput with iperf3, direct and through the mesh.
# Prints JSON with the medians and every round; also written to
# $BENCH_STATE/mesh-<time>.json (BENCH_STATE defaults to /tmp/gatehouse-bench).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
STATE="${BENCH_STATE:-/tmp/gatehouse-bench}"
mkdir -p "$STATE"

[ "$(id -u)" = 0 ] || { echo "bench/mesh.sh needs root (network namespaces)" >&2; exit 1; }
for tool in ip nft iperf3; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 nftables iperf3
done
(cd "$REPO" && cargo build --release --locked && cargo build --release --locked --example mesh_bench)

OUT="$STATE/mesh-$(date +%Y%m%d-%H%M%S).json"
cd "$REPO"
"$TARGET/release/examples/mesh_bench" bin="$TARGET/release/gatehouse" out="$OUT" "$@"
echo "results: $OUT" >&2
