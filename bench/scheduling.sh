#!/usr/bin/env bash
# Scheduling overhead: a sweep of JOBS simulated jobs of SECONDS each (the
# worker's test-only --simulate-job-seconds: the job sleeps instead of
# training) on WORKERS workers, against the ideal JOBS × SECONDS / WORKERS.
# Also prints hand-off latency (a job's success to the same worker's next
# lease) from the coordinator's event log.
#
#   bench/scheduling.sh [JOBS=200] [WORKERS=4] [SECONDS=1]     (after `make build`)
set -euo pipefail
JOBS=${1:-200}; WORKERS=${2:-4}; SECONDS_PER_JOB=${3:-1}
BIN=${BIN:-target/release}
PORT=${PORT:-50777}
dir=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "state kept in $dir"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT

mkdir -p "$dir/sweep"
seeds=$(seq -s, 1 "$JOBS")
cat > "$dir/sweep/sweep.yaml" <<YAML
name: scheduling
base: base.yaml
seeds: [$seeds]
YAML
cat > "$dir/sweep/base.yaml" <<YAML
name: sim
data: {data_dir: $PWD/data/mnist}
training: {epochs: 1}
YAML

export SWEEP_COORDINATOR="127.0.0.1:$PORT"
"$BIN/sweep-coordinator" --state-dir "$dir/runs" --listen "$SWEEP_COORDINATOR" --http off > "$dir/coordinator.log" 2>&1 &
workers=()
for i in $(seq 1 "$WORKERS"); do
  RUST_LOG=error "$BIN/sweep-worker" --name "sim-$i" --cache-dir "$dir/w$i" \
    --simulate-job-seconds "$SECONDS_PER_JOB" &
  workers+=($!)
done
# Every worker registered (and idle, long-polling) before the sweep arrives, so
# the clock measures scheduling, not process start-up.
until [ "$("$BIN/sweepctl" workers 2>/dev/null | grep -c ' sim-')" -ge "$WORKERS" ]; do sleep 0.2; done
"$BIN/sweepctl" submit "$dir/sweep" >/dev/null
"$BIN/sweepctl" watch scheduling >/dev/null
kill "${workers[@]}"; wait "${workers[@]}" 2>/dev/null || true

python3 - "$dir/runs/coordinator.sqlite" "$JOBS" "$WORKERS" "$SECONDS_PER_JOB" <<'PY'
import sqlite3, sys
db, jobs, workers, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
c = sqlite3.connect(db)
first = c.execute("select min(time_ms) from events where kind='leased'").fetchone()[0]
last = c.execute("select max(time_ms) from events where kind='succeeded'").fetchone()[0]
ok = c.execute("select count(*) from jobs where state='succeeded'").fetchone()[0]
wall = (last - first) / 1000
ideal = jobs * secs / workers
print(f"jobs {jobs} ({ok} succeeded), workers {workers}, {secs:g} s each")
if ideal > 0:
    print(f"wall {wall:.2f} s (first lease to last result), ideal {ideal:.2f} s, overhead {100 * (wall - ideal) / ideal:+.2f}%")
else:
    print(f"wall {wall:.2f} s (first lease to last result): {jobs / wall:.0f} jobs/s dispatched")
# Hand-off latency: a job's success, then the next lease by the same worker.
rows = c.execute("select time_ms, kind, job_id, message from events "
                 "where kind in ('leased','succeeded') order by time_ms, id").fetchall()
worker_of, timeline = {}, {}
for t, kind, job, msg in rows:
    if kind == "leased":
        worker_of[job] = msg.rsplit(" ", 1)[-1]
    timeline.setdefault(worker_of.get(job), []).append((t, kind))
handoffs = []
for events in timeline.values():
    for (t0, k0), (t1, k1) in zip(events, events[1:]):
        if k0 == "succeeded" and k1 == "leased":
            handoffs.append(t1 - t0)
handoffs.sort()
if handoffs:
    pick = lambda q: handoffs[min(len(handoffs) - 1, int(q * len(handoffs)))]
    print(f"hand-off latency (success to next lease, same worker): p50 {pick(0.5)} ms, p99 {pick(0.99)} ms, n={len(handoffs)}")
PY
