#!/usr/bin/env bash
# Builds the static `bottle` (glibc, crt-static; no musl toolchain is needed) that the
# sidecar image is made from, and prints its path. `--target` must be explicit so the
# static flag does not reach build scripts and proc-macros. Honours CARGO_TARGET_DIR.
# With `--testkit` it also builds `bottle-testkit`, the end-to-end tests' servers, in a
# cargo run of its own: building both at once would unify features and put the test
# doubles into the shipped `bottle`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
export RUSTFLAGS='-C target-feature=+crt-static'
cargo build --quiet --release --locked --target "$target" -p bottle --bin bottle
if [ "${1:-}" = "--testkit" ]; then
  cargo build --quiet --release --locked --target "$target" -p bottle-testkit
fi
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/release/bottle"
