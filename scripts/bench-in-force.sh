#!/usr/bin/env bash
# Time from `bottle apply` to "the change is in force", for a live allowlist change
# (issue 17, point 2): `apply --no-wait` (the sidecars pick the file up on their own
# poll, about once a second) beside plain `apply` (SIGHUP through the engine, then it
# waits for each sidecar's acknowledgement), alternating in one run.
#
# One bottle; each round moves the allowlist to a new host and measures, from the start
# of `apply`, until a request for that host through the agent's proxy is no longer
# refused by policy (403). The host does not exist, so "in force" shows as the proxy
# trying it (502), which needs no upstream. Prints the median per mode and the ratio.
#
# Usage: scripts/bench-in-force.sh [ROUNDS]   (needs setup.sh done and the static bottle)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
bottle="${BOTTLE:-${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/bottle}"
dir="$(mktemp -d)"
project="bench-force-$$"
trap '"$bottle" delete -p "$project" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
printf 'FROM debian:bookworm-slim\nCMD ["sleep", "infinity"]\n' >"$dir/Dockerfile"
manifest() {
  cat >"$dir/bottles.yaml" <<EOF
project: $project
bottles:
  b:
    image: {dockerfile: Dockerfile}
    runtime: runc
    egress:
      allow: [$1]
agents:
  a:
    bottle: b
    provider: claude
EOF
}
now_ms() { date +%s%3N; }
# The status line the agent's proxy gives for http://$1/.
status_of() {
  docker exec "bottle-$project-a-agent" bash -c "exec 3<>/dev/tcp/egress/3128 && \
    printf 'GET http://$1/ HTTP/1.1\r\nHost: $1\r\nConnection: close\r\n\r\n' >&3 && \
    head -c 12 <&3" 2>/dev/null | awk '{print $2}'
}
manifest start.example.test
"$bottle" apply -f "$dir/bottles.yaml" >/dev/null 2>&1
declare -A times
for i in $(seq 1 "$rounds"); do
  for mode in no-wait wait; do
    host="h$i-$mode.example.test"
    manifest "$host"
    flag=()
    [ "$mode" = no-wait ] && flag=(--no-wait)
    t0=$(now_ms)
    "$bottle" apply -f "$dir/bottles.yaml" "${flag[@]}" >/dev/null 2>&1
    t_apply=$(( $(now_ms) - t0 ))
    tries=0
    until [ "$(status_of "$host")" != 403 ]; do
      tries=$((tries + 1))
      [ "$tries" -lt 400 ] || { echo "never in force: $host" >&2; exit 1; }
      sleep 0.02
    done
    t_force=$(( $(now_ms) - t0 ))
    times[$mode]+="$t_force "
    echo "round $i $mode: apply returned ${t_apply} ms, in force ${t_force} ms, refused requests after apply: $tries"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
nw=$(echo "${times[no-wait]}" | median)
w=$(echo "${times[wait]}" | median)
echo "median apply -> in force: --no-wait (poll) ${nw} ms, apply (nudge + ack) ${w} ms, ratio $(awk "BEGIN {printf \"%.2f\", $w / $nw}")x"
