#!/usr/bin/env bash
# A single-node Kubernetes on 127.0.0.1 for bottle's Kubernetes backend tests.
#
#   scripts/kube/cluster.sh up     build (or reuse) the binaries, start everything, print KUBECONFIG
#   scripts/kube/cluster.sh env    print the environment of the running cluster (eval-able)
#   scripts/kube/cluster.sh down   stop everything this script started and remove its state
#
# Kubernetes v1.20.2 built from Debian bookworm's source package (scripts/kube/build.sh),
# Debian's etcd (data on tmpfs), containerd and CNI plugins, runc and, when the host has
# runsc, gVisor through a RuntimeClass `runsc`. Images come from a local registry (Debian's
# docker-registry) on 127.0.0.1:$BOTTLE_KUBE_REGISTRY_PORT (5000): `docker push` reaches it
# without TLS (Docker treats loopback registries as insecure) and the node's containerd pulls
# from it over plain HTTP. It holds `pause:3.2` (the pod sandbox) and `busybox:1.35`.
#
# Authentication: static tokens for the admin (system:masters), the scheduler, the
# controller-manager (which runs each controller under its own service account) and the
# kubelet (system:node:localhost, checked by the Node authorizer and NodeRestriction); the
# API server authenticates to the kubelet with a client certificate. Nothing listens beyond
# loopback except what pods open on the bridge $BOTTLE_KUBE_BRIDGE (no address on the host).
# Host changes: a bridge, the kubelet's cgroups, processes, provisioned volumes under
# /tmp/hostpath_pv (StorageClass bottle-hostpath, the default); `down` removes them all. The
# node's mounts and kernel settings stay in its private mount namespace (scripts/kube/node.sh).
# Every step says what it does; a failure names the step and the log to read, and exits 1.
#
# BOTTLE_KUBE_NETLOCK_BINARY (optional, at `up`): a static `bottle`. Copied into $RUN and
# chained after the bridge as the CNI plugin `bottle-netlock` (`bottle sidecar cni`: it
# writes netlock's table into a gVisor agent pod's network namespace, docs/design.md 9.5).
# The RuntimeClass `runsc` is then labelled `bottle.netlock=cni`, which makes the backend
# offer runsc (without the plugin it is not: nothing would lock a gVisor agent pod).
source "$(dirname "$0")/lib.sh"

PKI=$RUN/pki
KCFG=$RUN/admin.kubeconfig
ETCD_DATA=/dev/shm/bottle-kube-etcd-$(echo -n "$KDIR" | sha256sum | cut -c1-12)

# Where kube-controller-manager's host-path provisioner makes volumes (fixed in its source).
HOSTPATH_PV=/tmp/hostpath_pv

# The netlock CNI plugin: a wrapper in the plugins' directory (containerd reads one), execing
# the copy of BOTTLE_KUBE_NETLOCK_BINARY in $RUN; removed by `down`.
NETLOCK_PLUGIN=$ROOT/usr/lib/cni/bottle-netlock
NETLOCK=${BOTTLE_KUBE_NETLOCK_BINARY:-}

FWD_RULE=(-i "$BRIDGE" -o "$BRIDGE" -m comment --comment "bottle-kube pod-to-pod" -j ACCEPT)

pid_alive() { [ -f "$RUN/pid/$1" ] && kill -0 "$(cat "$RUN/pid/$1")" 2>/dev/null; }

# Fail with the last lines of a component's log.
die_log() {
    tail -15 "$RUN/log/$1.log" >&2 2>/dev/null || true
    die "$2 (log: $RUN/log/$1.log)"
}

port_free() {
    ! ss -Hltn "sport = :$1" | grep -q .
}

kubeconfig() { # file user token
    cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: bottle-kube
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {token: "$3"}
contexts:
- name: bottle-kube
  context: {cluster: bottle-kube, user: $2}
current-context: bottle-kube
KC
    chmod 600 "$1"
}

pki() {
    step "certificates and tokens in $PKI"
    mkdir -p "$PKI/kubelet"
    ( cd "$PKI"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
          -subj /CN=bottle-kube-ca 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
          -subj /CN=kube-apiserver 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' > san.ext
      openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
          -out apiserver.crt -days 30 -extfile san.ext 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
          -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' > client.ext
      openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
          -out kubelet-client.crt -days 30 -extfile client.ext 2>/dev/null
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
      chmod 600 ./*.key ) || die "openssl failed"
    local admin sched cm kubelet
    admin=$(openssl rand -hex 16); sched=$(openssl rand -hex 16)
    cm=$(openssl rand -hex 16); kubelet=$(openssl rand -hex 16)
    ( umask 077; cat > "$PKI/tokens.csv" <<TOK
$admin,admin,admin,system:masters
$sched,system:kube-scheduler,system:kube-scheduler
$cm,system:kube-controller-manager,system:kube-controller-manager
$kubelet,system:node:localhost,system:node:localhost,system:nodes
TOK
    )
    kubeconfig "$KCFG" admin "$admin"
    kubeconfig "$RUN/scheduler.kubeconfig" system:kube-scheduler "$sched"
    kubeconfig "$RUN/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
    kubeconfig "$RUN/kubelet.kubeconfig" system:node:localhost "$kubelet"
}

control_plane() {
    step "etcd on 127.0.0.1:$ETCD_PORT (data on tmpfs: $ETCD_DATA)"
    rm -rf "$ETCD_DATA"; mkdir -p "$ETCD_DATA"; chmod 700 "$ETCD_DATA"
    start etcd etcd --name bottle-kube --data-dir "$ETCD_DATA" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "bottle-kube=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_for 30 etcdctl --endpoints "127.0.0.1:$ETCD_PORT" endpoint health || die_log etcd "etcd not healthy after 30 s"

    step "kube-apiserver on https://127.0.0.1:$API_PORT"
    start kube-apiserver kube-apiserver \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" --anonymous-auth=false \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true --service-cluster-ip-range=10.96.0.0/16 \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
        --kubelet-preferred-address-types=Hostname,InternalIP \
        --profiling=false --v=1
    wait_for 90 kubectl --kubeconfig "$KCFG" get --raw /readyz \
        || die_log kube-apiserver "kube-apiserver not ready after 90 s"

    step "kube-controller-manager and kube-scheduler"
    start kube-controller-manager kube-controller-manager \
        --kubeconfig="$RUN/controller-manager.kubeconfig" --port=0 --secure-port=0 \
        --leader-elect=false --controllers='*,-nodeipam' --use-service-account-credentials \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --enable-hostpath-provisioner \
        --profiling=false --v=1
    start kube-scheduler kube-scheduler --kubeconfig="$RUN/scheduler.kubeconfig" \
        --port=0 --secure-port=0 --leader-elect=false --profiling=false --v=1
}

registry() {
    step "registry (docker-registry) on $REGISTRY"
    mkdir -p "$RUN/registry"
    cat > "$RUN/registry.yaml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $RUN/registry}
  delete: {enabled: true}
http: {addr: "$REGISTRY"}
YAML
    start registry docker-registry serve "$RUN/registry.yaml"
    wait_for 20 curl -fsS "http://$REGISTRY/v2/" || die_log registry "registry not answering on $REGISTRY"

    step "images pause:3.2 and busybox:1.35 into $REGISTRY"
    if [ ! -x "$KDIR/pause" ]; then
        [ -f "$KDIR/pause.c" ] || die "$KDIR/pause.c missing (remove $BIN and run up again to rebuild)"
        gcc -Os -static -o "$KDIR/pause.tmp" "$KDIR/pause.c" -DVERSION=3.2 || die "gcc -static pause.c failed"
        mv "$KDIR/pause.tmp" "$KDIR/pause"
    fi
    local ctx=$RUN/images
    mkdir -p "$ctx/pause" "$ctx/busybox"
    cp "$KDIR/pause" "$ctx/pause/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$ctx/pause/Dockerfile"
    cp "$ROOT/bin/busybox" "$ctx/busybox/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nCMD ["/bin/sh"]\n' > "$ctx/busybox/Dockerfile"
    for img in pause:3.2 busybox:1.35; do
        docker build -q -t "$REGISTRY/$img" "$ctx/${img%%:*}" >> "$RUN/log/images.log" 2>&1 \
            || die_log images "docker build $img failed"
        docker push -q "$REGISTRY/$img" >> "$RUN/log/images.log" 2>&1 || die_log images "docker push $REGISTRY/$img failed"
    done
}

node() {
    step "containerd + kubelet in a private mount namespace (bridge $BRIDGE, pods $POD_CIDR)"
    mkdir -p "$RUN/cni" "$RUN/containerd"
    local chain=""
    if [ -n "$NETLOCK" ]; then
        [ -x "$NETLOCK" ] || die "BOTTLE_KUBE_NETLOCK_BINARY=$NETLOCK is not an executable"
        install -m 755 "$NETLOCK" "$RUN/bottle-netlock"
        printf '#!/bin/sh\n# bottle netlock CNI plugin (scripts/kube/cluster.sh)\nexec %s sidecar cni\n' \
            "$RUN/bottle-netlock" > "$NETLOCK_PLUGIN"
        chmod 755 "$NETLOCK_PLUGIN"
        # It reads pods as the node does (the Node authorizer lets it read its own pods).
        chain=",
  {\"type\": \"bottle-netlock\", \"kubeconfig\": \"$RUN/kubelet.kubeconfig\"}"
    fi
    cat > "$RUN/cni/10-bottle.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "bottle-kube", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]]}}$chain]}
CNI
    local runsc_rt=""
    if command -v runsc > /dev/null; then
        # Debian's runsc has no containerd-shim-runsc-v1; under the runc v2 shim it hangs on a
        # pod's second container (gVisor's multi-container pod model expects its own shim).
        # Without the CRI's container-type annotations each container is its own sandbox in
        # the pod's network namespace, as under Docker. And when a container has exited, the
        # CRI still kills it before deleting it: runsc answers "sandbox is not running",
        # which the shim does not read as "already gone" (runc says "container not
        # running"), so the exit was never recorded and an init container that ended stayed
        # running, its pod `Init:0/1`. The wrapper says it as runc does.
        cat > "$RUN/runsc" <<SH
#!/bin/sh
# runsc for the runc v2 shim (see cluster.sh): drop the CRI sandbox annotations on create;
# say a kill of an ended sandbox as runc says it.
prev=""; kill=""; for a in "\$@"; do
  if [ "\$prev" = "--bundle" ] || [ "\$prev" = "-b" ]; then
    c="\$a/config.json"
    jq 'del(.annotations["io.kubernetes.cri.container-type"], .annotations["io.kubernetes.cri.sandbox-id"])' "\$c" > "\$c.tmp" && mv "\$c.tmp" "\$c"
  fi
  [ "\$a" = kill ] && kill=1
  prev=\$a
done
if [ -n "\$kill" ]; then
  err=\$($(command -v runsc) --platform=ptrace --network=host "\$@" 2>&1 >/dev/null); rc=\$?
  case "\$err" in
    *"sandbox is not running"*) echo "container not running" >&2 ;;
    *) [ -n "\$err" ] && printf '%s\\n' "\$err" >&2 ;;
  esac
  exit \$rc
fi
exec $(command -v runsc) --platform=ptrace --network=host "\$@"
SH
        chmod +x "$RUN/runsc"
        runsc_rt="
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc.options]
        BinaryName = \"$RUN/runsc\""
    fi
    cat > "$RUN/containerd.toml" <<TOML
version = 2
root = "$RUN/containerd/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  # Without CAP_SYS_RESOURCE (as on this project's CI machines) an oom_score_adj below
  # containerd's own cannot be written: the sandbox's -998 would fail every pod.
  restrict_oom_score_adj = true
  sandbox_image = "$REGISTRY/pause:3.2"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"$runsc_rt
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$ROOT/usr/lib/cni"
    conf_dir = "$RUN/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
TOML
    cat > "$RUN/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
YAML
    # Docker sets bridge-nf-call-iptables and a FORWARD policy of DROP, which would drop
    # pod-to-pod packets crossing our bridge; one rule (removed by `down`) lets them through.
    iptables -w -I FORWARD 1 "${FWD_RULE[@]}" || die "iptables: adding the pod-to-pod FORWARD rule failed"
    start node unshare -m --propagation private "$REPO/scripts/kube/node.sh"
    wait_for 30 test -S "$RUN/containerd.sock" || die_log node "containerd did not start (see also $RUN/log/containerd.log)"
    wait_for 120 kubectl --kubeconfig "$KCFG" get node localhost \
        || die_log kubelet "node did not register within 120 s"
    kubectl --kubeconfig "$KCFG" wait --for=condition=Ready node/localhost --timeout=120s > /dev/null \
        || die_log kubelet "node not Ready within 120 s"
}

cluster_objects() {
    step "default service account, StorageClass and RuntimeClass"
    wait_for 60 kubectl --kubeconfig "$KCFG" -n default get serviceaccount default \
        || die_log kube-controller-manager "no default service account after 60 s"
    # Volume claims (a bottle's home, workspace, supervise state) are provisioned by the
    # controller-manager's host-path provisioner (one node only) as directories under
    # $HOSTPATH_PV, which `down` removes.
    kubectl --kubeconfig "$KCFG" apply -f - > /dev/null <<YAML || die "creating StorageClass bottle-hostpath failed"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: bottle-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
YAML
    if command -v runsc > /dev/null; then
        # Labelled bottle.netlock=cni (the operator's word that the class's nodes lock a
        # gVisor agent pod, docs/design.md 9.5) only when the netlock plugin is chained.
        local label=""
        [ -n "$NETLOCK" ] && label="labels: {bottle.netlock: cni}"
        kubectl --kubeconfig "$KCFG" apply -f - > /dev/null <<YAML || die "creating RuntimeClass runsc failed"
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runsc, $label}
handler: runsc
YAML
    fi
}

print_env() {
    echo "export KUBECONFIG=$KCFG"
    echo "export BOTTLE_KUBE_REGISTRY=$REGISTRY"
}

up() {
    local t0=$SECONDS
    if pid_alive kube-apiserver; then print_env; return 0; fi
    [ ! -d "$RUN" ] || die "stale state in $RUN (a cluster that did not go down cleanly); run: $0 down"
    need docker curl openssl ss containerd runc unshare jq gcc ip iptables
    STEP="build or reuse the binaries (scripts/kube/build.sh)"
    "$REPO/scripts/kube/build.sh"
    STEP="preflight: free ports and bridge"
    for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$REGISTRY_PORT" 10250 10248; do
        port_free "$p" || die "port 127.0.0.1:$p is in use (another cluster? set BOTTLE_KUBE_*_PORT)"
    done
    ! ip link show "$BRIDGE" > /dev/null 2>&1 || die "bridge $BRIDGE exists already; run: $0 down"
    mkdir -p "$RUN/pid" "$RUN/log"
    STEP=certificates
    pki
    control_plane
    registry
    node
    cluster_objects
    step "ready in $((SECONDS - t0)) s"
    print_env
}

kill_pidfile() { # name: TERM, wait up to 10 s, then KILL
    local f=$RUN/pid/$1 p
    [ -f "$f" ] || return 0
    p=$(cat "$f")
    if kill "$p" 2>/dev/null; then
        wait_for 10 sh -c "! kill -0 $p" || kill -9 "$p" 2>/dev/null || true
    fi
    rm -f "$f"
}

# What `up` changed on the host outside $RUN: the bridge, the FORWARD rule, etcd's data,
# the provisioned volumes.
host_cleanup() {
    ip link del "$BRIDGE" 2>/dev/null || true
    while iptables -w -D FORWARD "${FWD_RULE[@]}" 2>/dev/null; do :; done
    rm -rf "$ETCD_DATA" "$HOSTPATH_PV"
    rm -f "$NETLOCK_PLUGIN"
}

down() {
    if [ ! -d "$RUN" ]; then host_cleanup; return 0; fi
    step "stop kubelet, then every container of the node's containerd"
    kill_pidfile kubelet
    if [ -S "$RUN/containerd.sock" ]; then
        local c="ctr -a $RUN/containerd.sock -n k8s.io"
        for t in $($c tasks ls -q 2>/dev/null); do $c tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
        sleep 1
        for t in $($c tasks ls -q 2>/dev/null); do $c tasks delete -f "$t" >/dev/null 2>&1 || true; done
        for t in $($c containers ls -q 2>/dev/null); do $c containers delete "$t" >/dev/null 2>&1 || true; done
    fi
    kill_pidfile containerd
    # Shims outlive containerd; ours name our socket in their command line.
    local p
    for p in $(grep -l -F -- "$RUN/containerd.sock" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
        kill -9 "$p" 2>/dev/null || true
    done
    kill_pidfile node
    step "stop scheduler, controller-manager, apiserver, etcd, registry"
    for n in kube-scheduler kube-controller-manager kube-apiserver etcd registry; do kill_pidfile "$n"; done
    step "remove the bridge, the kubelet's cgroups and the state"
    host_cleanup
    for d in $(find /sys/fs/cgroup -maxdepth 2 -type d -name 'kubepods*' 2>/dev/null | sort -r); do
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    # The containerd root holds overlay snapshots, which may still be mounted if a shim died hard.
    { grep -F " $RUN/" /proc/mounts || true; } | cut -d' ' -f2 | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$RUN"
    step "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) STEP=env; pid_alive kube-apiserver || die "no cluster running (state dir $RUN)"; print_env ;;
    *) echo "usage: $0 up|down|env   (state and build cache in \$BOTTLE_KUBE_DIR, default target/kube)" >&2; exit 2 ;;
esac
