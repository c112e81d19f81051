#!/usr/bin/env bash
# Builds, on a machine without a GPU, the binaries that bench/gpu.sh runs on a
# GPU machine whose python3 has another PyTorch than the one this workspace
# builds against (the device machines have PyTorch 2.11; tch 0.24 is the
# version that expects it, and the code builds with it unchanged):
#
#   bench/gpu-build.sh OUT_DIR [TORCH_VERSION [TCH_VERSION]]    # default 2.11.0 0.24
#
# 1. downloads that torch wheel from PyPI once (into SWEEPRUN_CACHE, default
#    ~/.cache/sweeprun) and unpacks its libtorch (lib/, include/, share/);
# 2. copies the tracked files of this checkout, as they are in the working
#    tree, and pins tch and torch-sys to TCH_VERSION in the copy;
# 3. builds sweep-coordinator, sweep-worker and sweepctl-torch against that
#    libtorch (`--allow-shlib-undefined`: the CUDA libraries that
#    libtorch_cuda needs exist only on the GPU machine) and strips them into
#    OUT_DIR, small enough to travel to such a machine (64 MiB per call).
#
# On the GPU machine the binaries find libtorch through `python3 -c 'import
# torch'` (bench/gpu.sh sets LD_LIBRARY_PATH from it):
#   bench/gpu.sh OUT_DIR gpu-check
# (gpu-bin/ and gpu-check/ in the checkout are ignored by git: build into
# gpu-bin to carry the binaries along with the checkout.)
set -euo pipefail
out="${1:?usage: bench/gpu-build.sh OUT_DIR [TORCH_VERSION [TCH_VERSION]]}"
torch_version="${2:-2.11.0}"
tch_version="${3:-0.24}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SWEEPRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sweeprun}"
libtorch="$cache/libtorch-$torch_version"
mkdir -p "$cache" "$out"
out="$(cd "$out" && pwd)"

if [ ! -f "$libtorch/torch/lib/libtorch_cpu.so" ]; then
  echo "gpu-build: downloading torch==$torch_version from PyPI (about 1 GB, once)" >&2
  wheels="$cache/wheels-$torch_version"
  python3 -m pip download --quiet --no-input --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
    -d "$wheels" "torch==$torch_version"
  wheel="$(ls "$wheels"/torch-"$torch_version"*.whl | head -n 1)"
  rm -rf "$libtorch.partial"
  python3 - "$wheel" "$libtorch.partial" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist()
                        if n.startswith(("torch/lib/", "torch/include/", "torch/share/"))])
EOF
  mv "$libtorch.partial" "$libtorch"
  rm -rf "$wheels"
fi

src="$cache/gpu-src-$torch_version"
echo "gpu-build: copying the checkout into $src, tch $tch_version" >&2
rm -rf "$src"
mkdir -p "$src"
(cd "$repo" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$src"
sed -i "s/^tch = .*/tch = \"$tch_version\"/; s/^torch-sys = .*/torch-sys = \"$tch_version\"/" "$src/Cargo.toml"

echo "gpu-build: building against $libtorch/torch (a few minutes)" >&2
(cd "$src" && LIBTORCH="$libtorch/torch" RUSTFLAGS=-Clink-arg=-Wl,--allow-shlib-undefined \
  cargo build --release --target-dir "$cache/gpu-target-$torch_version" \
    -p sweep-coordinator -p sweep-worker -p sweepctl-torch)

for b in sweep-coordinator sweep-worker sweepctl-torch; do
  strip -o "$out/$b" "$cache/gpu-target-$torch_version/release/$b"
done
ls -l "$out"
echo "gpu-build: $(du -sh "$out" | cut -f1) in $out; on the GPU machine: bench/gpu.sh $out gpu-check" >&2
