#!/usr/bin/env bash
# Prints the libtorch directory (the one holding include/ and lib/) that the build
# links against, installing PyTorch 2.13.0 from PyPI into one cached place the
# first time. tch 0.26 accepts exactly this version.
#
#   LIBTORCH=/path            use that libtorch as it is
#   LIBTORCH_USE_PYTORCH=1    use the torch package of the current python3
#   SWEEPRUN_CACHE=/path      where the cached install lives (default ~/.cache/sweeprun)
set -euo pipefail
TORCH_VERSION=2.13.0

if [ -n "${LIBTORCH:-}" ]; then
  echo "$LIBTORCH"; exit 0
fi
if [ -n "${LIBTORCH_USE_PYTORCH:-}" ]; then
  python3 -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parent)'; exit 0
fi

cache="${SWEEPRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sweeprun}"
site="$cache/torch-$TORCH_VERSION"
if [ ! -f "$site/torch/lib/libtorch_cpu.so" ]; then
  echo "libtorch: installing torch==$TORCH_VERSION from PyPI into $site (about 4.7 GB, once)" >&2
  mkdir -p "$cache"
  rm -rf "$site.partial"
  python3 -m pip install --quiet --no-input --disable-pip-version-check \
    --target "$site.partial" "torch==$TORCH_VERSION" >&2
  mv "$site.partial" "$site"
fi
echo "$site/torch"
