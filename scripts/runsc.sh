#!/usr/bin/env bash
# Registers gVisor's runsc with the Docker engine: installs Debian's runsc when absent,
# MERGES a `runtimes.runsc` entry into /etc/docker/daemon.json (keeping every other key:
# the engine's storage driver and MTU live there), and reloads the daemon with SIGHUP.
# `--network=host` is needed here: without it runsc refuses to start in the root
# network namespace; an `--internal` network still has no route out.
set -euo pipefail
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
  exit 0
fi
command -v runsc >/dev/null || apt-get install -y runsc >/dev/null
conf=/etc/docker/daemon.json
[ -f "$conf" ] || echo '{}' > "$conf"
python3 - "$conf" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    conf = json.load(f)
conf.setdefault("runtimes", {})["runsc"] = {
    "path": "/usr/bin/runsc",
    "runtimeArgs": ["--platform=ptrace", "--network=host"],
}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2)
import os
os.replace(tmp, path)
PY
kill -HUP "$(pidof dockerd)"
for _ in $(seq 50); do
  if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    echo "registered runsc with the Docker engine" >&2
    exit 0
  fi
  sleep 0.2
done
echo "error: runsc did not appear in docker info after reload" >&2
exit 1
