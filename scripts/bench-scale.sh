#!/usr/bin/env bash
# Scale benchmark (issue 18, point 5): N bottles (default 10, 50 and 100) of one bottle
# policy, against docker-compose bringing up and tearing down the same shape in the
# same run.
#
# Per N, bottle (the static release binary, default options: `apply` waits for every
# sidecar to report ready, --timeout raised for large N; runtime runc):
#   cold apply (images already built), the no-op apply (median of BENCH_ROUNDS, and its
#   engine API calls, counted through a unix-socket proxy: scripts/bench-scale.py),
#   the no-op with a 2 GB directory beside the Dockerfile that .dockerignore leaves out
#   (sparse files, moved in and out of the context, alternating), the memory of the
#   containers (sum of `docker stats --no-stream`), bottle's own peak RSS
#   (/usr/bin/time), drift repair (`docker rm -f` of one bottle's pipelock, then
#   apply) and delete.
# Then docker-compose (v1) with the same shape, generated from `docker inspect` of one
# bottle's containers, networks and volumes (scripts/bench-scale.py compose): per copy
# the same networks (internal one with the same options; explicit /28s of 10.214/16,
# as the engine's default pools hold about 31 networks), the same named volumes
# (empty), the same containers with the same hardening; the sidecars run `sleep
# infinity` in debian:bookworm-slim (bottle's sidecars need the volumes bottle seeds).
# Measured: cold `up -d`, no-op `up -d` (median, and API calls), memory, drift repair
# (`up -d` after the same removal), `down -v -t 0` (bottle's delete kills too).
#
# Prints a markdown table per N with bottle/compose ratios, and the machine's load.
#
# Usage: scripts/bench-scale.sh [N...]
#   BOTTLE=path/to/static/bottle (default $CARGO_TARGET_DIR or target, release)
#   BENCH_ROUNDS=5 (no-op repetitions)   BENCH_PROJECT=scale   BENCH_STEP_TIMEOUT=1800 (s)
# Needs: docker, docker-compose, python3, /usr/bin/time, debian:bookworm-slim.
set -euo pipefail
cd "$(dirname "$0")/.."
here="$PWD"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 50 100)
bottle="${BOTTLE:-${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/bottle}"
rounds="${BENCH_ROUNDS:-5}"
step_timeout="${BENCH_STEP_TIMEOUT:-1800}"
# docker-compose v1 deadlocks when a project has more services than its thread pool
# (COMPOSE_PARALLEL_LIMIT, default 64): each service's task waits for a slot for its
# container's own task (docker/compose#5864, #8161; here: 200 services stalled after
# 12 containers). The known workaround is a limit above the number of services.
export COMPOSE_PARALLEL_LIMIT="${COMPOSE_PARALLEL_LIMIT:-1000}"
# With that many requests at once the engine on 2 cores answers some after more than
# compose's default 60 s (at 100 bottles: 19 services failed with "Read timed out").
export COMPOSE_HTTP_TIMEOUT="${COMPOSE_HTTP_TIMEOUT:-600}"
project="${BENCH_PROJECT:-scale}"
cproject="${project}compose"
helper="$here/scripts/bench-scale.py"
[ -x "$bottle" ] || { echo "no static bottle at $bottle (scripts/build-static.sh, or BOTTLE=)" >&2; exit 2; }
for tool in docker docker-compose python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

work="$(mktemp -d /tmp/bench-scale.XXXXXX)"
export XDG_CACHE_HOME="$work/cache" XDG_STATE_HOME="$work/state"
ctx="$work/ctx"
mkdir -p "$ctx" "$work/away" "$XDG_CACHE_HOME" "$XDG_STATE_HOME"
proxy_pid=""
compose_file="$work/compose.json"

cleanup() {
  set +e
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  "$bottle" delete -p "$project" >/dev/null 2>&1
  [ -f "$compose_file" ] && docker-compose -p "$cproject" -f "$compose_file" down -v -t 0 --remove-orphans >/dev/null 2>&1
  # Anything either left behind (labels of both).
  docker ps -aq --filter "label=bottle.project=$project" | xargs -r docker rm -f >/dev/null 2>&1
  docker ps -aq --filter "label=com.docker.compose.project=$cproject" | xargs -r docker rm -f >/dev/null 2>&1
  docker network ls -q --filter "label=bottle.project=$project" | xargs -r docker network rm >/dev/null 2>&1
  docker network ls -q --filter "label=com.docker.compose.project=$cproject" | xargs -r docker network rm >/dev/null 2>&1
  docker volume ls -q --filter "label=bottle.project=$project" | xargs -r docker volume rm >/dev/null 2>&1
  docker volume ls -q --filter "label=com.docker.compose.project=$cproject" | xargs -r docker volume rm >/dev/null 2>&1
  docker images -q "bottle-$project-agent" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }
now_ns() { date +%s%N; }

# run_timed CMD...: runs CMD with /usr/bin/time; sets MS (wall) and RSS_KB (peak RSS of
# the command, children included as /usr/bin/time reports). Output to $work/last.out;
# on failure prints it and stops.
run_timed() {
  local t0 t1
  t0=$(now_ns)
  if ! timeout "$step_timeout" /usr/bin/time -f '%M' -o "$work/rss" "$@" >"$work/last.out" 2>&1; then
    echo "failed: $*" >&2
    tail -40 "$work/last.out" >&2
    exit 1
  fi
  t1=$(now_ns)
  MS=$(( (t1 - t0) / 1000000 ))
  RSS_KB=$(tail -1 "$work/rss")
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3gx", a / b; else print "-" }'; }
secs() { awk -v ms="$1" 'BEGIN { if (ms >= 10000) printf "%.1f s", ms / 1000; else if (ms >= 1000) printf "%.2f s", ms / 1000; else printf "%d ms", ms }'; }

# Sum of the containers' memory (MiB) per `docker stats --no-stream`, by label filter.
mem_mib() {
  local ids
  ids=$(docker ps -q --filter "label=$1")
  [ -n "$ids" ] || { echo 0; return; }
  # shellcheck disable=SC2086
  docker stats --no-stream --format '{{.MemUsage}}' $ids | awk '
    { v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
      f = (u == "B") ? 1 / 1048576 : (u == "KiB" || u == "kB") ? 1 / 1024 : (u == "MiB" || u == "MB") ? 1 : (u == "GiB" || u == "GB") ? 1024 : 0
      s += v * f } END { printf "%.0f", s }'
}

# count_calls OUT CMD...: runs CMD with DOCKER_HOST on the counting proxy; sets CALLS
# to the number of API requests; the request lines go to OUT.
count_calls() {
  local out="$1"; shift
  local sock="$work/count.sock"
  : >"$out"
  rm -f "$sock"
  python3 "$helper" count-proxy "$sock" "$out" </dev/null >/dev/null 2>"$work/proxy.err" &
  proxy_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { echo "the counting proxy did not start:" >&2; cat "$work/proxy.err" >&2; exit 1; }
  DOCKER_HOST="unix://$sock" "$@" >"$work/last.out" 2>&1 || { cat "$work/last.out" >&2; exit 1; }
  sleep 0.2
  kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=""
  CALLS=$(wc -l <"$out")
}

manifest() { # N -> $work/bottles.yaml
  {
    echo "project: $project"
    echo "bottles:"
    echo "  dev:"
    echo "    image: {dockerfile: Dockerfile}"
    echo "    runtime: runc"
    echo "    egress:"
    echo "      allow: [api.example.test]"
    echo "agents:"
    for i in $(seq 0 $(($1 - 1))); do echo "  a$i: {bottle: dev}"; done
  } >"$ctx/bottles.yaml"
}

# The agent image's context: a Dockerfile, a .dockerignore that leaves out big/, and
# the manifest beside them.
printf 'FROM debian:bookworm-slim\nCMD ["sleep", "infinity"]\n' >"$ctx/Dockerfile"
printf 'big/\nbottles.yaml\n' >"$ctx/.dockerignore"
# 2 GB in 1000 sparse files of 2 MiB (no disk used), kept outside the context until
# the flatness rounds move it in.
mkdir -p "$work/away/big"
for i in $(seq 1000); do truncate -s 2M "$work/away/big/f$i"; done

apply_args=(apply -f "$ctx/bottles.yaml")
machine="$(nproc) vCPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), Docker Engine $(docker version --format '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
log "machine: $machine; COMPOSE_PARALLEL_LIMIT=$COMPOSE_PARALLEL_LIMIT COMPOSE_HTTP_TIMEOUT=$COMPOSE_HTTP_TIMEOUT"
log "bottle: $bottle ($(stat -c '%y' "$bottle" | cut -d. -f1))"

# Warm-up: one agent, so the agent and sidecar images exist and "cold" below means
# no containers, networks or volumes, images built. Its containers are the template
# of the compose file.
manifest 1
run_timed "$bottle" "${apply_args[@]}"
log "warm-up apply of 1 bottle: $(secs "$MS")"
# shellcheck disable=SC2046
docker inspect $(docker ps -aq --filter "label=bottle.project=$project") >"$work/containers.json"
# shellcheck disable=SC2046
docker network inspect $(docker network ls -q --filter "label=bottle.project=$project") >"$work/networks.json"
# shellcheck disable=SC2046
docker volume inspect $(docker volume ls -q --filter "label=bottle.project=$project") >"$work/volumes.json"
agent_image=$(docker inspect -f '{{.Config.Image}}' "bottle-$project-a0-agent")
sidecar_image="debian:bookworm-slim"
per_bottle="$(docker ps -aq --filter "label=bottle.project=$project" | wc -l) containers, $(docker network ls -q --filter "label=bottle.project=$project" | wc -l) networks, $(docker volume ls -q --filter "label=bottle.project=$project" | wc -l) volumes"
log "one bottle: $per_bottle; agent image $agent_image"
run_timed "$bottle" delete -f "$ctx/bottles.yaml"

declare -A R
for n in "${sizes[@]}"; do
  log "=== N=$n"
  R[$n,load0]=$(cut -d' ' -f1 /proc/loadavg)
  manifest "$n"
  timeout_s=$((120 + 6 * n))
  # --- bottle
  run_timed "$bottle" "${apply_args[@]}" --timeout "${timeout_s}s"
  R[$n,b_cold]=$MS R[$n,b_cold_rss]=$RSS_KB
  log "bottle cold apply: $(secs "$MS"), peak RSS $RSS_KB KiB"
  cp "$work/last.out" "$work/cold-$n.out"
  R[$n,b_containers]=$(docker ps -q --filter "label=bottle.project=$project" | wc -l)
  R[$n,b_objects]="$(docker network ls -q --filter "label=bottle.project=$project" | wc -l) networks, $(docker volume ls -q --filter "label=bottle.project=$project" | wc -l) volumes"
  "$bottle" diff -f "$ctx/bottles.yaml" >/dev/null 2>&1 || { echo "diff after cold apply is not in sync" >&2; "$bottle" diff -f "$ctx/bottles.yaml" >&2; exit 1; }
  run_timed "$bottle" "${apply_args[@]}" # untimed: first no-op after the cold apply
  times=""
  for _ in $(seq "$rounds"); do
    run_timed "$bottle" "${apply_args[@]}"
    times+="$MS "
    grep -q '^0 created, 0 removed, 0 started, 0 failed' "$work/last.out" || { echo "not a no-op:" >&2; cat "$work/last.out" >&2; exit 1; }
  done
  R[$n,b_noop]=$(echo "$times" | median) R[$n,b_noop_rss]=$RSS_KB
  log "bottle no-op apply: ${times}ms (median ${R[$n,b_noop]}), last output: $(tr '\n' ' ' <"$work/last.out" | cut -c1-200)"
  count_calls "$work/calls-$n.txt" "$bottle" "${apply_args[@]}"
  R[$n,b_calls]=$CALLS
  log "bottle no-op API calls: ${R[$n,b_calls]}: $(sed 's/?.*//' "$work/calls-$n.txt" | tr '\n' ';')"
  # Flatness in context size: alternate without / with the 2 GB directory; in each
  # state one untimed no-op first (a changed context may refresh a cache once).
  without="" with=""
  for _ in $(seq "$rounds"); do
    run_timed "$bottle" "${apply_args[@]}"; run_timed "$bottle" "${apply_args[@]}"; without+="$MS "
    mv "$work/away/big" "$ctx/big"
    run_timed "$bottle" "${apply_args[@]}"; run_timed "$bottle" "${apply_args[@]}"; with+="$MS "
    mv "$ctx/big" "$work/away/big"
  done
  R[$n,ctx_without]=$(echo "$without" | median) R[$n,ctx_with]=$(echo "$with" | median)
  log "no-op without 2 GB: $without; with: $with"
  sleep 5
  R[$n,b_mem]=$(mem_mib "bottle.project=$project")
  log "bottle containers' memory: ${R[$n,b_mem]} MiB"
  docker rm -f "bottle-$project-a0-pipelock" >/dev/null
  run_timed "$bottle" "${apply_args[@]}" --timeout "${timeout_s}s"
  R[$n,b_drift]=$MS
  log "bottle drift repair: $(secs "$MS"): $(tr '\n' ' ' <"$work/last.out" | cut -c1-300)"
  run_timed "$bottle" delete -f "$ctx/bottles.yaml"
  R[$n,b_delete]=$MS R[$n,b_delete_rss]=$RSS_KB
  log "bottle delete: $(secs "$MS")"
  left=$(docker ps -aq --filter "label=bottle.project=$project" | wc -l)
  leftn=$(docker network ls -q --filter "label=bottle.project=$project" | wc -l)
  leftv=$(docker volume ls -q --filter "label=bottle.project=$project" | wc -l)
  R[$n,b_left]="$left containers, $leftn networks, $leftv volumes"
  # --- compose
  python3 "$helper" compose "$n" "$agent_image" "$sidecar_image" 10.214 \
    "$work/containers.json" "$work/networks.json" "$work/volumes.json" >"$compose_file"
  dc=(docker-compose -p "$cproject" -f "$compose_file")
  run_timed "${dc[@]}" up -d
  R[$n,c_cold]=$MS R[$n,c_cold_rss]=$RSS_KB
  R[$n,c_containers]=$(docker ps -q --filter "label=com.docker.compose.project=$cproject" | wc -l)
  R[$n,c_objects]="$(docker network ls -q --filter "label=com.docker.compose.project=$cproject" | wc -l) networks, $(docker volume ls -q --filter "label=com.docker.compose.project=$cproject" | wc -l) volumes"
  log "compose cold up -d: $(secs "$MS"), ${R[$n,c_containers]} running"
  # shellcheck disable=SC2046
  docker inspect $(docker ps -a --filter "label=com.docker.compose.project=$cproject" \
    --format '{{.ID}} {{.Label "com.docker.compose.service"}}' | awk '$2 ~ /^b0-/ {print $1}') >"$work/compose-b0.json"
  log "compose copy b0 against bottle's a0: $(python3 "$helper" check "$work/containers.json" "$work/compose-b0.json" | tr '\n' ';')"
  run_timed "${dc[@]}" up -d
  times=""
  for _ in $(seq "$rounds"); do
    run_timed "${dc[@]}" up -d
    times+="$MS "
  done
  R[$n,c_noop]=$(echo "$times" | median) R[$n,c_noop_rss]=$RSS_KB
  log "compose no-op up -d: ${times}ms (median ${R[$n,c_noop]})"
  count_calls "$work/ccalls-$n.txt" "${dc[@]}" up -d
  R[$n,c_calls]=$CALLS
  log "compose no-op API calls: $CALLS; peak RSS cold ${R[$n,c_cold_rss]} KiB, no-op ${R[$n,c_noop_rss]} KiB"
  sleep 5
  R[$n,c_mem]=$(mem_mib "com.docker.compose.project=$cproject")
  log "compose containers' memory: ${R[$n,c_mem]} MiB"
  docker rm -f "$(docker ps -q --filter "label=com.docker.compose.project=$cproject" --filter "label=com.docker.compose.service=b0-pipelock")" >/dev/null
  run_timed "${dc[@]}" up -d
  R[$n,c_drift]=$MS
  log "compose drift repair: $(secs "$MS"): $(tr '\n' ' ' <"$work/last.out" | cut -c1-300)"
  # bottle removes containers by force (SIGKILL); compose's default stop waits 10 s
  # for the stand-in sidecars (sleep as PID 1 ignores SIGTERM), so -t 0.
  run_timed "${dc[@]}" down -v -t 0
  R[$n,c_delete]=$MS
  log "compose down -v -t 0: $(secs "$MS")"
  R[$n,c_left]="$(docker ps -aq --filter "label=com.docker.compose.project=$cproject" | wc -l) containers, $(docker network ls -q --filter "label=com.docker.compose.project=$cproject" | wc -l) networks, $(docker volume ls -q --filter "label=com.docker.compose.project=$cproject" | wc -l) volumes"
  R[$n,load1]=$(cut -d' ' -f1 /proc/loadavg)
done

echo
echo "Machine: $machine; bottle $(stat -c '%y' "$bottle" | cut -d. -f1); $(date -u +%Y-%m-%d)."
echo
echo "| N | measurement | bottle | docker-compose | bottle / compose |"
echo "|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  row() { echo "| $n | $1 | $2 | $3 | $4 |"; }
  row "running containers; networks, volumes" "${R[$n,b_containers]}; ${R[$n,b_objects]}" "${R[$n,c_containers]}; ${R[$n,c_objects]}" ""
  row "cold apply / \`up -d\`" "$(secs "${R[$n,b_cold]}")" "$(secs "${R[$n,c_cold]}")" "$(ratio "${R[$n,b_cold]}" "${R[$n,c_cold]}")"
  row "no-op apply / \`up -d\` (median of $rounds)" "$(secs "${R[$n,b_noop]}")" "$(secs "${R[$n,c_noop]}")" "$(ratio "${R[$n,b_noop]}" "${R[$n,c_noop]}")"
  row "API calls of the no-op" "${R[$n,b_calls]}" "${R[$n,c_calls]}" ""
  row "no-op, 2 GB ignored dir beside the Dockerfile (median of $rounds)" "$(secs "${R[$n,ctx_with]}") vs $(secs "${R[$n,ctx_without]}") without: $(ratio "${R[$n,ctx_with]}" "${R[$n,ctx_without]}")" "" ""
  row "drift repair (one pipelock removed)" "$(secs "${R[$n,b_drift]}")" "$(secs "${R[$n,c_drift]}")" "$(ratio "${R[$n,b_drift]}" "${R[$n,c_drift]}")"
  row "delete / \`down -v -t 0\`" "$(secs "${R[$n,b_delete]}")" "$(secs "${R[$n,c_delete]}")" "$(ratio "${R[$n,b_delete]}" "${R[$n,c_delete]}")"
  row "containers' memory (docker stats)" "${R[$n,b_mem]} MiB" "${R[$n,c_mem]} MiB" ""
  row "client peak RSS: cold / no-op" "$((R[$n,b_cold_rss] / 1024)) / $((R[$n,b_noop_rss] / 1024)) MiB" "$((R[$n,c_cold_rss] / 1024)) / $((R[$n,c_noop_rss] / 1024)) MiB" ""
  row "load average at start / end" "${R[$n,load0]} / ${R[$n,load1]}" "" ""
  row "left after delete / down" "${R[$n,b_left]}" "${R[$n,c_left]}" ""
done
