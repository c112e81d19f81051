#!/usr/bin/env bash
# Builds the sweeprun image from the binaries of `make build`:
# picks a base image, stages the build context (deploy/build-context.sh) and
# runs `docker build -f deploy/Dockerfile`. Skips the build when the image
# already holds exactly this context (same binaries, libraries, configs and
# Dockerfile), so calling it before every test run is cheap.
#
#   make images                      (= make build + this script)
#   deploy/build-images.sh           CPU image sweeprun:latest
#   GPU=1 deploy/build-images.sh     GPU image sweeprun:gpu (CUDA base, extra CUDA libraries)
#
# Environment:
#   IMAGE       tag to build (default sweeprun:latest, with GPU=1 sweeprun:gpu)
#   BASE_IMAGE  base image; by default the first that works of: one already
#               present (debian:bookworm-slim, sweeprun/debian-base:bookworm),
#               a pull of debian:bookworm-slim, deploy/make-base-image.sh
#               (debootstrap). GPU=1 defaults to nvidia/cuda:13.0.0-runtime-ubuntu24.04.
#   FORCE=1     rebuild even if the image is up to date
#
# Exit status: 0 built or up to date; 3 no base image can be had here (no
# registry and no debootstrap): callers such as the e2e test skip on 3;
# anything else is a failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpu="${GPU:-}"
if [ -n "$gpu" ]; then
  image="${IMAGE:-sweeprun:gpu}"
  default_base="nvidia/cuda:13.0.0-runtime-ubuntu24.04"
else
  image="${IMAGE:-sweeprun:latest}"
  default_base="debian:bookworm-slim"
fi
local_base="sweeprun/debian-base:bookworm"

log() { echo "build-images: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if ! docker info >/dev/null 2>&1; then
  log "no Docker engine answers (docker info failed)"
  exit 3
fi

pick_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    have_image "$BASE_IMAGE" || docker pull "$BASE_IMAGE" >&2 || return 1
    echo "$BASE_IMAGE"; return 0
  fi
  if have_image "$default_base"; then echo "$default_base"; return 0; fi
  if [ -z "$gpu" ] && have_image "$local_base"; then echo "$local_base"; return 0; fi
  log "pulling $default_base"
  if timeout 600 docker pull "$default_base" >&2; then echo "$default_base"; return 0; fi
  if [ -n "$gpu" ]; then
    log "no $default_base: set BASE_IMAGE (any glibc >= 2.36 base works under the NVIDIA runtime)"
    return 1
  fi
  log "no registry: building $local_base with debootstrap instead"
  BASE_TAG="$local_base" "$root/deploy/make-base-image.sh" >/dev/null || return 1
  echo "$local_base"
}

if ! base="$(pick_base)"; then
  log "no base image available (no registry, no debootstrap); see deploy/README.md"
  exit 3
fi
log "base image: $base"

ctx="${CONTEXT_DIR:-$root/target/docker-context${gpu:+-gpu}}"
"$root/deploy/build-context.sh" ${gpu:+--gpu} "$ctx" >/dev/null

# What the image is made of. Libraries are named by path, size and mtime (they
# are large and never edited in place); everything else by content.
hash="$(
  {
    echo "base=$base $(docker image inspect -f '{{.Id}}' "$base")"
    sha256sum "$root/deploy/Dockerfile"
    (cd "$ctx" && find lib -type f -printf '%p %s %T@\n' | sort)
    (cd "$ctx" && find bin configs data -type f -print0 | sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
)"
# The compose file's tokens (kept if they exist).
"$root/deploy/make-secrets.sh"

if [ -z "${FORCE:-}" ] && have_image "$image" &&
   [ "$(docker image inspect -f '{{ index .Config.Labels "org.sweeprun.context" }}' "$image" 2>/dev/null)" = "$hash" ]; then
  log "$image is up to date"
  echo "$image"
  exit 0
fi

log "docker build -> $image (the context is ~3 GB: the first build takes minutes)"
start=$SECONDS
# The classic builder and BuildKit both read this Dockerfile; DOCKER_BUILDKIT
# is left to the user's setup.
docker build -f "$root/deploy/Dockerfile" \
  --build-arg "BASE_IMAGE=$base" \
  --label "org.sweeprun.context=$hash" \
  -t "$image" "$ctx" >&2
log "built $image in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}'))"
echo "$image"
