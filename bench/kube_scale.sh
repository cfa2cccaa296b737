#!/usr/bin/env bash
# bench/kube_scale.sh - the Kubernetes source at scale (issue 3's targets): 7,000
# Ingresses, 3,000 HTTPRoutes and 100,000 endpoints served by the in-test API server, through kube-rs.
# Prints initial sync time, memory, route-change and endpoint-change latency, and how a
# burst of 1,000 changes coalesces. Release build; takes a few minutes to compile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUST_LOG="${RUST_LOG:-error}" cargo test --release --test kube_scale -- --ignored --nocapture 2>&1 |
  grep -E '^(---|initial|one full|process|new |  in the|endpoint|burst|snapshots|requests|failed request|test result)|panicked'
