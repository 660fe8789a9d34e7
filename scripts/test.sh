#!/usr/bin/env bash
# Runs every check and test from a fresh machine: installs what is missing, then format,
# lints, native tests, the wasm build, a packaging dry run, and the end-to-end tests that
# start the gateway in workerd with real peers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "format"
cargo fmt --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings
# The Worker shell compiles for wasm32 only: lint it there too.
cargo clippy --target wasm32-unknown-unknown --locked -- -D warnings

step "native tests"
cargo test --locked

step "wasm build"
bash scripts/build.sh

step "package for the platform (wrangler deploy --dry-run)"
node_modules/.bin/wrangler deploy --dry-run --outdir target/dry-run >target/dry-run.log 2>&1 || {
  cat target/dry-run.log
  exit 1
}
tail -n 3 target/dry-run.log

step "end-to-end tests (workerd + real peers)"
mkdir -p test-artifacts
PORTCULLIS_SKIP_BUILD=1 node --test --test-concurrency=1 --test-timeout=300000 tests/e2e/
