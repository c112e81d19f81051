#!/usr/bin/env bash
# The coordinator's instructions (user space) over a bench-coordinator run,
# counted by valgrind's callgrind (BENCHMARKS.md, "Fewer calls per job"):
# the same figure for the same binaries and inputs whatever else the machine
# does, unlike seconds. Per job: run it with two job counts and divide the
# difference by the difference of the counts (that removes start and end).
#
#   bench/callgrind.sh BINDIR [WORKERS=10] [JOBS=300]   (BINDIR holds sweep-coordinator and sweepctl)
set -euo pipefail
BIN=${1:?usage: bench/callgrind.sh BINDIR [WORKERS] [JOBS]}; WORKERS=${2:-10}; JOBS=${3:-300}
command -v valgrind >/dev/null || { echo "valgrind is missing (Debian: apt-get install valgrind)" >&2; exit 1; }
PORT=${PORT:-50779}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

export SWEEP_COORDINATOR="127.0.0.1:$PORT"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
  "$BIN/sweep-coordinator" --state-dir "$dir/runs" --listen "$SWEEP_COORDINATOR" --http off \
  > "$dir/coordinator.log" 2>&1 &
coordinator=$!
until "$BIN/sweepctl" workers >/dev/null 2>&1; do
  kill -0 "$coordinator" 2>/dev/null || { echo "the coordinator exited:" >&2; cat "$dir/coordinator.log" >&2; exit 1; }
  sleep 0.5
done
"$BIN/sweepctl" bench-coordinator --workers "$WORKERS" --jobs "$JOBS" --epochs 5 | grep -E "dispatch|exactly once"
kill -INT "$coordinator"
wait "$coordinator" || true
total=$(callgrind_annotate "$dir/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "coordinator instructions: $total ($WORKERS workers, $JOBS jobs)"
