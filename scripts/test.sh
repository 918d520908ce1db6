#!/usr/bin/env bash
# Set up, then run every test against the real Docker engine (the README's second
# command). Nothing is skipped: without Docker this fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-static.sh --testkit >/dev/null
release="${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release"
export BOTTLE_SIDECAR_BINARY="$release/bottle"
export BOTTLE_TESTKIT_BINARY="$release/bottle-testkit"
# Benchmarks are not tests: `cargo bench` runs them; clippy --all-targets compiles them.
# The Docker engine's own tests and the end-to-end tests are behind features, so that a
# plain `cargo test --workspace` is hermetic; here every one of them runs.
cargo test --locked --workspace --lib --bins --tests \
  --features bottle/e2e,bottle-docker/live-tests -- --include-ignored "$@"
# The Kubernetes backend's tests run against a real single-node cluster
# (scripts/kube/cluster.sh: Kubernetes built from Debian's source package, cached in
# $BOTTLE_KUBE_DIR, default target/kube), brought up here and taken down whatever
# happens, leaving no process, bridge or rule behind. A filtered run (arguments given)
# skips them unless BOTTLE_KUBE_TESTS=1.
if [ $# -eq 0 ] || [ "${BOTTLE_KUBE_TESTS:-0}" = 1 ]; then
  trap 'scripts/kube/cluster.sh down >/dev/null' EXIT
  # The netlock CNI plugin chained, so the cluster offers gVisor as an operator would.
  BOTTLE_KUBE_NETLOCK_BINARY="$release/bottle" scripts/kube/cluster.sh up >/dev/null
  BOTTLE_KUBE_EXPECT_GVISOR=1 \
    cargo test --locked -p bottle-kube --features kube-e2e --tests -- --include-ignored "$@"
fi
