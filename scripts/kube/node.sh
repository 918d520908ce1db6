#!/usr/bin/env bash
# The node half of scripts/kube/cluster.sh: run by it as
#   unshare -m --propagation private node.sh
# so that every mount below is private to this mount namespace and goes away with it:
# tmpfs over /run, /var/lib and /var/log (containerd's shim sockets under /run/containerd/s,
# network namespaces under /run/netns, the CNI cache, pod logs), and the kernel settings the
# kubelet would otherwise write on the host (kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory), bind-mounted over with files already holding its values.
# Then starts containerd and the kubelet, records their pids, and waits for them.
source "$(dirname "$0")/lib.sh"
trap - EXIT
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] \
    || { echo "node.sh must run in its own mount namespace (unshare -m)" >&2; exit 1; }

mount --make-rprivate /
for d in /run /var/lib /var/log; do mount -t tmpfs -o mode=755 tmpfs "$d"; done
mkdir -p "$RUN/sysctl"
for kv in kernel/panic=10 kernel/panic_on_oops=1 vm/overcommit_memory=1 vm/panic_on_oom=0; do
    k=${kv%=*}; f=$RUN/sysctl/${k//\//.}
    echo "${kv#*=}" > "$f"
    mount --bind "$f" "/proc/sys/$k"
done

start containerd containerd --config "$RUN/containerd.toml"
wait_for 30 test -S "$RUN/containerd.sock" || { echo "containerd did not start" >&2; exit 1; }

start kubelet kubelet --config="$RUN/kubelet.yaml" --kubeconfig="$RUN/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$RUN/containerd.sock" \
    --hostname-override=localhost --root-dir=/var/lib/kubelet --cert-dir="$RUN/pki/kubelet" \
    --oom-score-adj=0 --v=1
wait
