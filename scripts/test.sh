#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Node.js for solc and
# Foundry's npm packages, Chromium for the page test), checks formatting and lints, then runs
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update && apt-get install -y nodejs npm
fi
# Debian's Chromium, for the pipeline page's browser test (driven by playwright-core).
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update && apt-get install -y chromium
fi
# solc (solcjs), Foundry's cast/forge/anvil, ethers, viem and playwright-core, pinned in
# tools/js/package-lock.json.
(cd tools/js && npm ci --no-audit --no-fund)
node tools/js/compile.js contracts contracts/out

# Re-check the committed fixture models' references against onnxruntime (Python venv from PyPI).
if ! python3 -m venv --help >/dev/null 2>&1; then
  apt-get update && apt-get install -y python3-venv
fi
./scripts/fixtures.sh --check
# Re-check the dev chain's language model against llama.cpp (built from PyPI's source; needs a
# C++ compiler): it must still give the committed greedy answers, which a Rust test then
# requires of pipe's runtime.
if ! command -v g++ >/dev/null 2>&1; then
  apt-get update && apt-get install -y g++
fi
./scripts/llm-reference.sh --check

# A one-shot build gains nothing from incremental caches, which only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
