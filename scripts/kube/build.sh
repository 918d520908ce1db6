#!/usr/bin/env bash
# Fetch and build a single-node Kubernetes from Debian bookworm's own packages.
#
# Debian bookworm ships the server components only in the `kubernetes` *source* package
# (1.20.2); this script downloads it (deb-src through a private apt config, signature-checked
# like any apt download), swaps the vendored reflect2 1.0.1 for Debian's 1.0.2 (1.0.1 makes the
# API server panic under Go >= 1.18), and builds kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet with Debian's Go 1.19. The runtime pieces (etcd, CNI plugins,
# kubectl, docker-registry, busybox) are downloaded as .debs and unpacked with dpkg -x: nothing
# is installed system-wide and no service starts. A second run with the binaries present
# does nothing.
source "$(dirname "$0")/lib.sh"

DEBS=(golang-1.19-go golang-1.19-src rsync libpopt0 etcd-server etcd-client
      containernetworking-plugins busybox-static golang-github-modern-go-reflect2-dev
      kubernetes-client docker-registry)
SERVERS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

apt_private() {
    local a=$KDIR/apt
    mkdir -p "$a/etc" "$a/lists/partial" "$a/cache/archives/partial"
    cat > "$a/etc/debian.sources" <<SRC
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$a/etc"
         -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache" -o APT::Sandbox::User=root)
}

fetch_debs() {
    [ -f "$ROOT/.done" ] && return 0
    step "apt-get update (private lists under $KDIR/apt)"
    apt_private
    apt-get "${APT[@]}" -qq update || die "apt-get update failed (is deb.debian.org reachable?)"
    step "download ${#DEBS[@]} .debs"
    mkdir -p "$KDIR/debs" && cd "$KDIR/debs"
    apt-get "${APT[@]}" -qq download "${DEBS[@]}" || die "apt-get download failed"
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    for f in *.deb; do dpkg -x "$f" "$ROOT" || die "dpkg -x $f failed"; done
    touch "$ROOT/.done"
}

build_servers() {
    local missing=0
    for b in "${SERVERS[@]}"; do [ -x "$BIN/$b" ] || missing=1; done
    if [ $missing = 0 ]; then step "server binaries cached in $BIN"; return 0; fi
    apt_private
    step "apt-get source kubernetes/bookworm"
    rm -rf "$KDIR/src" && mkdir -p "$KDIR/src" && cd "$KDIR/src"
    apt-get "${APT[@]}" -qq source --download-only kubernetes/bookworm \
        || die "apt-get source kubernetes failed"
    local orig
    orig=$(ls kubernetes_*.orig.tar.gz) || die "no orig tarball downloaded"
    tar xzf "$orig"
    cd kubernetes-1.20.2 || die "unexpected source layout: $(ls)"
    step "swap vendored reflect2 1.0.1 for Debian's 1.0.2"
    local r=vendor/github.com/modern-go/reflect2 d=$ROOT/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -f "$d/reflect2.go" ] || die "Debian's reflect2 source not found at $d"
    rm -f "$r"/*.go "$r"/*.s
    cp "$d"/*.go "$d"/*.s "$r"/
    step "make ${SERVERS[*]} (Go $(go version | cut -d' ' -f3); 5-20 min on 2 cores)"
    export LD_LIBRARY_PATH=$ROOT/usr/lib/x86_64-linux-gnu CGO_ENABLED=0 \
        KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_TREE_STATE=clean GOFLAGS= GOPATH= GOROOT=
    local what=""
    for b in "${SERVERS[@]}"; do what="$what cmd/$b"; done
    nice -n 10 make WHAT="${what# }" > "$KDIR/src/make.log" 2>&1 \
        || { tail -30 "$KDIR/src/make.log" >&2; die "make failed; full log in $KDIR/src/make.log"; }
    mkdir -p "$BIN"
    for b in "${SERVERS[@]}"; do cp "_output/local/bin/linux/amd64/$b" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"; done
    cp build/pause/linux/pause.c "$KDIR/pause.c"
    cd "$KDIR" && rm -rf "$KDIR/src"
}

need apt-get dpkg tar make flock
# One build at a time per $BOTTLE_KUBE_DIR: a second run waits, then finds the binaries.
exec 9> "$KDIR/build.lock"
flock -n 9 || { step "waiting for another build in $KDIR"; flock 9; }
fetch_debs
build_servers
step "built: $(cd "$BIN" && ls | tr '\n' ' ')"
