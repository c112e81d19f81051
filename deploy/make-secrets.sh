#!/usr/bin/env bash
# Creates the two bearer tokens the compose cluster uses, once:
#   deploy/secrets/admin_token   submit, cancel, results (sweepctl)
#   deploy/secrets/worker_token  register, lease, report (sweep-worker)
# Existing files are kept. The directory is private to you (0700); the files
# are 0644 so that the containers' unprivileged user (uid 10001) can read the
# bind-mounted secret: nobody else on this host can reach them through the
# directory.
#
#   deploy/make-secrets.sh [DIR]      (default deploy/secrets)
set -euo pipefail
dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"
for name in admin_token worker_token; do
  if [ ! -s "$dir/$name" ]; then
    # 32 random bytes, hex: no newline, no shell-special characters.
    (umask 022; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$name")
    echo "make-secrets: created $dir/$name" >&2
  fi
  chmod 0644 "$dir/$name"
done
