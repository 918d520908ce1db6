#!/usr/bin/env bash
# Set up, then run `bottle apply` on the example manifest (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/x86_64-unknown-linux-gnu/release/bottle apply -f "${1:-examples/minimal.yaml}"
