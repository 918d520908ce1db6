# Shared settings and helpers for scripts/kube/*.sh (sourced, not run).
# Everything lives under $BOTTLE_KUBE_DIR (default <repo>/target/kube):
#   apt/    private apt config, lists and cache (the host's /etc/apt is never changed)
#   debs/   downloaded .deb files;  root/  their contents (dpkg -x), nothing installed
#   src/    the kubernetes source package and its build tree (removed after a build)
#   bin/    the built server binaries: the cache a second `up` reuses
#   run/    state of a running cluster (certs, kubeconfig, logs, pids); removed by `down`

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KDIR=${BOTTLE_KUBE_DIR:-$REPO/target/kube}
mkdir -p "$KDIR"
KDIR=$(cd "$KDIR" && pwd)
ROOT=$KDIR/root
BIN=$KDIR/bin
RUN=$KDIR/run
K8S_VERSION=v1.20.2

# Ports and names on the host (override when two clusters share a machine).
API_PORT=${BOTTLE_KUBE_API_PORT:-6443}
ETCD_PORT=${BOTTLE_KUBE_ETCD_PORT:-2379}
ETCD_PEER_PORT=${BOTTLE_KUBE_ETCD_PEER_PORT:-2380}
REGISTRY_PORT=${BOTTLE_KUBE_REGISTRY_PORT:-5000}
BRIDGE=${BOTTLE_KUBE_BRIDGE:-bottlekube0}
POD_CIDR=${BOTTLE_KUBE_POD_CIDR:-10.244.0.0/24}
REGISTRY=127.0.0.1:$REGISTRY_PORT

STEP="(start)"
step() { STEP="$*"; printf '[kube %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'cluster: FAILED at step "%s": %s\n' "$STEP" "$*" >&2; trap - EXIT; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || printf "cluster: FAILED at step \"%s\" (exit %d, line %d)\n" "$STEP" "$rc" "$LINENO" >&2' EXIT

need() { for c in "$@"; do command -v "$c" >/dev/null || die "command '$c' not found on PATH"; done; }

# Wait up to $1 seconds for the command in "${@:2}" to succeed.
wait_for() {
    local t=$1; shift
    local end=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}

# Start "$2..." in the background as component $1, logging to $RUN/log/$1.log, its pid in
# $RUN/pid/$1.
start() {
    local name=$1; shift
    "$@" > "$RUN/log/$name.log" 2>&1 &
    echo $! > "$RUN/pid/$name"
}

# Everything dpkg -x'd into $ROOT comes first on PATH.
export PATH=$BIN:$ROOT/usr/local/bin:$ROOT/usr/bin:$ROOT/usr/sbin:$ROOT/usr/lib/go-1.19/bin:$PATH
