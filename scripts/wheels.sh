#!/usr/bin/env bash
# Downloads the official Python MCP SDK (`mcp`) and its dependencies as wheels for the
# test agents' Python (Debian bookworm: CPython 3.11, x86_64) into target/wheels. PyPI is
# reachable from this host but not from inside containers, so the agent images COPY these.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/wheels
if ls "$out"/mcp-*.whl >/dev/null 2>&1; then
  exit 0
fi
command -v pip3 >/dev/null || { echo "error: pip3 is needed to fetch the MCP SDK wheels" >&2; exit 1; }
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
pip3 download --quiet --disable-pip-version-check -d "$tmp" --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  mcp
rm -rf "$out"
mv "$tmp" "$out"
echo "downloaded the mcp wheels into $out" >&2
