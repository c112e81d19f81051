#!/usr/bin/env bash
# The GPU check (BENCHMARKS.md, "Not measured here"): on a machine with a CUDA GPU and a
# python3 whose torch matches the binaries' libtorch, in this order:
#   1. one epoch of configs/cnn.yaml on CUDA (`sweepctl-torch train`),
#   2. training throughput against PyTorch on the same GPU (`sweepctl bench
#      --device cuda`, FC and CNN),
#   3. the quickstart sweep served by a coordinator to one CUDA worker,
#   4. the full configs/ablations sweep (7 variants x 3 seeds, full MNIST) on
#      one CUDA worker running 4 jobs at once.
#
#   bench/gpu.sh BIN_DIR [OUT_DIR]
#
# The steps' time limits add up to 570 s, so that the whole check fits one
# call of 600 s to a lent GPU machine; a step cut short still reports what it
# did (the ablations sweep: the runs it finished).
#
# BIN_DIR holds sweep-coordinator, sweep-worker and sweepctl-torch built
# against that torch: on the GPU machine itself `LIBTORCH_USE_PYTORCH=1 make
# build`, or, on a machine without a GPU, `bench/gpu-build.sh BIN_DIR` for a
# machine with PyTorch 2.11 (it builds with tch 0.24 against that version's
# libtorch and strips the binaries: 29 MB, small enough to carry). The
# binaries find libtorch through `python3 -c 'import torch'` below, so they
# need no LD_LIBRARY_PATH of their own.
set -uo pipefail
bin="$(cd "${1:?usage: bench/gpu.sh BIN_DIR [OUT_DIR]}" && pwd)"
out="${2:-gpu-check}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."

torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
step() { echo; echo "== $* ($(date +%T))"; }
# Each step goes on when the one before failed (no -e): one run reports all it can.
# Background processes of a step are stopped if the script is cut short.
coordinator=; worker=
trap 'kill $coordinator $worker 2>/dev/null' EXIT

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
ldd "$bin/sweep-worker" | grep -E 'libtorch|libc10' || true

step "1. one CNN epoch on CUDA"
start=$(date +%s%N)
timeout 150 "$bin/sweepctl-torch" train --config configs/cnn.yaml --device cuda --epochs 1 --run-dir "$out/cnn-epoch"
echo "wall $(( ($(date +%s%N) - start) / 1000000 )) ms"
cat "$out/cnn-epoch/metrics.json"; echo

step "2. throughput against PyTorch on the same GPU"
timeout 50 "$bin/sweepctl-torch" bench --model fc --device cuda --steps 3000
timeout 50 "$bin/sweepctl-torch" bench --model cnn --device cuda --steps 1000
timeout 50 "$bin/sweepctl-torch" bench --model cnn --device cuda --threads 4 --steps 1000

# sweep_on_cuda SWEEP_DIR STATE_DIR PORT LIMIT_S SLOTS: serves the sweep to one
# CUDA worker with SLOTS jobs at once, stopping the coordinator after LIMIT_S.
sweep_on_cuda() {
  local state="$out/$2"
  rm -rf "$state"
  timeout "$4" "$bin/sweep-coordinator" --config "$1" --state-dir "$state" --listen "127.0.0.1:$3" \
    --http off --exit-when-done &
  coordinator=$!
  "$bin/sweep-worker" --connect "127.0.0.1:$3" --device cuda --slots "$5" --cache-dir "$out/worker-cache" &
  worker=$!
  local start=$(date +%s%N)
  wait "$coordinator"
  echo "sweep wall $(( ($(date +%s%N) - start) / 1000000 )) ms"
  kill "$worker" 2>/dev/null || true
  wait "$worker" 2>/dev/null || true
  find "$state" -name provenance.json -exec grep -h "\"device" {} + | sort | uniq -c || true
}

step "3. the quickstart sweep on one CUDA worker"
sweep_on_cuda configs/quickstart sweep-state 50071 90 1

step "4. configs/ablations on one CUDA worker, 4 jobs at once"
sweep_on_cuda configs/ablations ablations-state 50072 180 4
