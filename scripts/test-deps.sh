#!/usr/bin/env bash
# Installs the Debian packages that the tests need, when they are missing and
# can be installed (root, or password-less sudo, and apt-get). `make test` runs
# it first, so that no test has to skip itself for want of a tool: under
# CI=true a skipped test fails the run (see crates/testkit/src/lib.rs).
#
# Idempotent and quick when everything is present (one dpkg-query, no network).
# Where nothing can be installed (not Debian, no root) it says what is missing
# and exits 0: the tests that need it skip themselves, or fail under CI=true.
#
# To add a package, append it to PACKAGES with a comment naming the test.
set -euo pipefail

PACKAGES=(
  # tests/docker_compose.rs: deploy/make-base-image.sh builds the image's base
  # with debootstrap where no registry can be reached.
  debootstrap
  # crates/train/tests/sanity.rs: Fashion-MNIST loads from /usr/share/datasets.
  dataset-fashion-mnist
  # tests/dashboard_browser.rs: the dashboard in a real headless browser,
  # driven over WebDriver.
  chromium
  chromium-driver
  # tests/slurm.rs: a one-node SLURM cluster (slurmctld, slurmd, sbatch...)
  # with munge authentication runs deploy/slurm/sweep-worker.sbatch.
  slurm-wlm
  munge
  # tests/dist_wheel.rs: deploy/dist/build-wheel.py (`make dist`) sets the
  # binaries' run path with patchelf and strips them with binutils' strip.
  patchelf
  binutils
)
# tests/dist_wheel.rs: python3 with venv and pip. Only for Debian's own
# python3 (or none): another python3 on PATH, such as pyenv's, brings both.
case "$(command -v python3 || true)" in
  "") PACKAGES+=(python3 python3-venv python3-pip) ;;
  /usr/bin/python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || PACKAGES+=(python3-venv)
    python3 -m pip --version >/dev/null 2>&1 || PACKAGES+=(python3-pip)
    ;;
esac
# tests/deploy_manifests.rs: `kubectl apply --dry-run=client` on deploy/k8s.
# Any kubectl does (Debian's kubernetes-client was tried), so only when none
# is on PATH: another one may own /usr/bin/kubectl.
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)

log() { echo "test-deps: $*" >&2; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  log "not a Debian system: make sure these are installed: ${PACKAGES[*]}"
  exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [ "$status" = installed ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  log "missing ${missing[*]}, and no root to install them: apt-get install ${missing[*]}"
  exit 0
fi

log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
