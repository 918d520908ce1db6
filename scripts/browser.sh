#!/usr/bin/env bash
# The browser the console's end-to-end test drives: Debian's headless-capable Chromium
# and its WebDriver server (`chromedriver`), installed from the distribution only when
# missing (nothing is downloaded outside the package manager).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: chromium and chromium-driver are missing; install them (apt-get install chromium chromium-driver) or run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
