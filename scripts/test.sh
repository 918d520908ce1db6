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
