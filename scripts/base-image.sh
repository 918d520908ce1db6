#!/usr/bin/env bash
# Makes the offline Debian base image `debian:bookworm-slim` when the engine lacks it.
# No registry is reachable here, so the base is built with debootstrap and imported.
set -euo pipefail
if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y debootstrap >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase --include=ca-certificates bookworm "$dir/rootfs" >/dev/null
tar -C "$dir/rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
echo "imported debian:bookworm-slim" >&2
