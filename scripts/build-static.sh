#!/usr/bin/env bash
# Builds the static `bottle` (glibc, crt-static; no musl toolchain is needed) that the
# sidecar image is made from, and prints its path. `--target` must be explicit so the
# static flag does not reach build scripts and proc-macros. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --locked --target "$target" --bin bottle
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/release/bottle"
