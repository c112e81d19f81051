#!/usr/bin/env bash
# Stages the Docker build context for deploy/Dockerfile from what `make build`
# left on this machine, so that no Rust toolchain is needed inside Docker:
#
#   <context>/bin/      sweep-coordinator, sweep-worker, sweepctl, sweepctl-torch (target/release)
#   <context>/lib/      exactly the shared libraries those binaries load that the
#                       base image does not provide (libtorch and the CUDA
#                       libraries it links), found with ldd, one flat directory
#   <context>/configs/  the shipped experiment configs and sweeps
#   <context>/data/mnist/  MNIST (the coordinator serves it to workers)
#   <context>/MANIFEST  what was staged, with sizes
#
#   deploy/build-context.sh [--gpu] [CONTEXT_DIR]      (default target/docker-context)
#
# --gpu (or SWEEPRUN_GPU=1) adds the libraries libtorch opens at run time on a
# GPU only (cuDNN's engine libraries, NVRTC's builtins, the CUDA linear algebra
# library), which ldd cannot see; a CPU image works without them.
#
# Libraries under /lib, /lib64 and /usr/lib (glibc, libstdc++, libgcc) come from
# the base image; the image build checks with ldd that each binary resolves
# everything there, so a base older than the build host fails the build instead
# of the first run. Files are hard-linked when possible (the context is on the
# same file system as the libtorch cache), copied otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpu="${SWEEPRUN_GPU:-}"
ctx=""
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) ctx="$arg" ;;
  esac
done
ctx="${ctx:-$root/target/docker-context}"
bin_dir="${SWEEPRUN_BIN_DIR:-$root/target/release}"
bins=(sweep-coordinator sweep-worker sweepctl sweepctl-torch)

log() { echo "build-context: $*" >&2; }

for b in "${bins[@]}"; do
  if [ ! -x "$bin_dir/$b" ]; then
    log "$bin_dir/$b is missing: run \`make build\` first"
    exit 1
  fi
done

# Place $1 (any path, symlinks resolved) at $2: a hard link if possible.
place() {
  local src dst="$2"
  src="$(readlink -f "$1")"
  ln -f "$src" "$dst" 2>/dev/null || cp -f "$src" "$dst"
}

# The libraries ldd resolves for $@ outside the system directories, as
# "soname<TAB>path" lines. Fails on any library ldd cannot find.
closure() {
  local out
  out="$(ldd "$@" 2>&1)" || { echo "$out" >&2; return 1; }
  # The driver's own libraries come from the host (NVIDIA container runtime).
  out="$(grep -Ev '^\s*(libcuda|libnvidia-ml)\.so\.1 => not found' <<<"$out")"
  if grep -q 'not found' <<<"$out"; then
    grep 'not found' <<<"$out" >&2
    log "unresolved libraries above (is LIBTORCH set up? run \`scripts/libtorch.sh\`)"
    return 1
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $1 "\t" $3 }' <<<"$out" |
    grep -Ev $'\t(/lib|/lib64|/usr/lib|/usr/lib64)/' | sort -u
}

rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/configs" "$ctx/data"

for b in "${bins[@]}"; do
  place "$bin_dir/$b" "$ctx/bin/$b"
done

libs="$(closure "${bins[@]/#/$bin_dir/}")"

if [ -n "$gpu" ]; then
  # Where this build's libtorch and its CUDA libraries live: next to the
  # resolved libtorch_cuda.so and libcudnn.so.9.
  torch_lib="$(dirname "$(awk -F'\t' '$1 == "libtorch_cuda.so" { print $2 }' <<<"$libs")")"
  cudnn_lib="$(dirname "$(awk -F'\t' '$1 == "libcudnn.so.9" { print $2 }' <<<"$libs")")"
  nvrtc_lib="$(dirname "$(awk -F'\t' '$1 == "libnvrtc.so.13" { print $2 }' <<<"$libs")")"
  extra=()
  for f in "$cudnn_lib"/libcudnn_*.so.* "$nvrtc_lib"/libnvrtc-builtins.so.* \
           "$torch_lib"/libcaffe2_nvrtc.so "$torch_lib"/libtorch_cuda_linalg.so; do
    [ -e "$f" ] && extra+=("$f")
  done
  # The extras themselves and whatever they link.
  libs="$( { echo "$libs"; for f in "${extra[@]}"; do printf '%s\t%s\n' "$(basename "$f")" "$f"; done; closure "${extra[@]}"; } | sort -u)"
fi

while IFS=$'\t' read -r soname path; do
  [ -n "$soname" ] || continue
  place "$path" "$ctx/lib/$soname"
done <<<"$libs"

cp -a "$root/configs/." "$ctx/configs/"
mkdir -p "$ctx/data/mnist"
cp -a "$root/data/mnist/." "$ctx/data/mnist/"

{
  echo "# staged by deploy/build-context.sh on $(date -u +%FT%TZ) (gpu=${gpu:-0})"
  (cd "$ctx" && find bin lib -type f -printf '%s\t%p\n' | sort -k2)
} >"$ctx/MANIFEST"

log "staged $(find "$ctx/lib" -type f | wc -l) libraries, $(du -sh --apparent-size "$ctx" | cut -f1) in $ctx"
echo "$ctx"
