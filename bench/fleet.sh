#!/usr/bin/env bash
# A fleet of simulated workers against a real coordinator (BENCHMARKS.md):
# starts `sweep-coordinator` on a fresh state directory, then runs
# `sweepctl bench-coordinator` (N simulated workers over real gRPC: register,
# heartbeat at the coordinator's interval, lease, report E epochs, complete;
# nothing is trained), which prints dispatch throughput, per-call latency,
# the coordinator's CPU time, peak RSS and SQLite size, and checks that every
# job completed exactly once.
#
#   bench/fleet.sh [WORKERS=100] [JOBS=10000] [EPOCHS=5] [JOB_SECONDS=0]   (after `make build`)
set -euo pipefail
WORKERS=${1:-100}; JOBS=${2:-10000}; EPOCHS=${3:-5}; JOB_SECONDS=${4:-0}
BIN=${BIN:-target/release}
PORT=${PORT:-50778}
dir=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "state kept in $dir"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT

export SWEEP_COORDINATOR="127.0.0.1:$PORT"
RUST_LOG=warn "$BIN/sweep-coordinator" --state-dir "$dir/runs" --listen "$SWEEP_COORDINATOR" \
  > "$dir/coordinator.log" 2>&1 &
coordinator=$!
until "$BIN/sweepctl" workers >/dev/null 2>&1; do
  kill -0 "$coordinator" 2>/dev/null || { echo "the coordinator exited:" >&2; cat "$dir/coordinator.log" >&2; exit 1; }
  sleep 0.1
done
"$BIN/sweepctl" bench-coordinator --workers "$WORKERS" --jobs "$JOBS" --epochs "$EPOCHS" \
  --job-seconds "$JOB_SECONDS" --coordinator-pid "$coordinator" --state-dir "$dir/runs" ${JSON:+--json}
