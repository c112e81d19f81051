#!/usr/bin/env bash
# Builds a local Debian base image for deploy/Dockerfile where no registry can
# be reached: a minimal root file system made by debootstrap from Debian's
# package mirror, imported with `docker import`. On a machine that can pull
# images you do not need this: the Dockerfile's default BASE_IMAGE
# (debian:bookworm-slim) is pulled as usual.
#
#   deploy/make-base-image.sh            builds sweeprun/debian-base:bookworm once
#   FORCE=1 deploy/make-base-image.sh    rebuilds it even if it exists
#
# Environment: BASE_TAG (image name, default sweeprun/debian-base:bookworm),
# SUITE (default bookworm), MIRROR (default http://deb.debian.org/debian).
# Needs root (debootstrap) and the debootstrap package (apt-get install debootstrap).
# Prints the image name on stdout, progress on stderr.
set -euo pipefail

BASE_TAG="${BASE_TAG:-sweeprun/debian-base:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# The runtime needs libstdc++ and libgcc (minbase has them through apt),
# ldconfig/ldd (libc-bin), CA certificates for TLS to a coordinator with a
# public certificate, and tini-like signal handling is left to `init: true`.
INCLUDE="ca-certificates"

log() { echo "make-base-image: $*" >&2; }

if [ -z "${FORCE:-}" ] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  log "$BASE_TAG exists (FORCE=1 rebuilds it)"
  echo "$BASE_TAG"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "debootstrap is not installed (apt-get install -y debootstrap), or pull debian:bookworm-slim instead"
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  log "debootstrap needs root"
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sweeprun-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

log "debootstrap --variant=minbase $SUITE from $MIRROR (a minute or two)"
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  log "debootstrap failed"
  exit 1
}

# Slim it the way debian:*-slim is slimmed: no apt lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
# The apt sources the image will use if someone extends it.
echo "deb $MIRROR $SUITE main" >"$rootfs/etc/apt/sources.list"

log "docker import -> $BASE_TAG"
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE ($MIRROR)" \
  - "$BASE_TAG" >/dev/null
log "built $BASE_TAG ($(docker image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$BASE_TAG"
