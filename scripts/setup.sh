#!/usr/bin/env bash
# Everything a fresh machine needs before `bottle` runs: a reachable Docker engine, the
# offline Debian base image, gVisor registered as the runtime `runsc`, and the static
# `bottle` the sidecar image is built from; and the MCP SDK wheels the supervise tests
# install into their agent images; Chromium and chromedriver for the console's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is not reachable (is dockerd running? is DOCKER_HOST right?)" >&2
  exit 1
fi
scripts/base-image.sh
scripts/runsc.sh
scripts/wheels.sh
scripts/browser.sh
scripts/build-static.sh >/dev/null
