#!/usr/bin/env bash
# Runs every check and test from a fresh machine: installs what is missing, then format,
# lints, native tests, the wasm build, a packaging dry run, and the end-to-end tests that
# start the gateway in workerd with real peers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

step_run "setup (everything the tests use)" bash scripts/setup.sh

step "format"
cargo fmt --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings
# The Worker shell compiles for wasm32 only: lint it there too, as deployed (no fault
# switch) and as the end-to-end tests run it (feature test-faults).
cargo clippy --target wasm32-unknown-unknown --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown --locked --features test-faults -- -D warnings

step "native tests"
cargo test --locked

step "wasm build (the test build: the KV fault switch compiled in)"
# One wasm build for everything below: wrangler runs scripts/build.sh itself, and with
# PORTCULLIS_SKIP_BUILD=1 that reuses this one. The deployed build, without the switch, is
# checked by tests/e2e/build.test.mjs (a cargo build of the crate alone, no second bundle).
bash scripts/build.sh --test-faults

step "configuration files (portcullis check)"
for f in config/*.json; do
  cargo run --quiet --locked --bin portcullis -- check "$f"
done

step "package for the platform (wrangler deploy --dry-run, each environment)"
# Each environment's build bundles (and first checks) its configuration file; the wasm is
# the one just built. The top level comes last: it bundles none, as the tests need.
for env in staging production ""; do
  log="target/dry-run${env:+-$env}.log"
  PORTCULLIS_SKIP_BUILD=1 node_modules/.bin/wrangler deploy --dry-run ${env:+--env "$env"} --outdir "target/dry-run${env:+-$env}" >"$log" 2>&1 || {
    cat "$log"
    exit 1
  }
  tail -n 3 "$log"
done

step "end-to-end tests (workerd + real peers)"
mkdir -p test-artifacts
PORTCULLIS_SKIP_BUILD=1 node --test --test-concurrency=1 --test-timeout=300000 tests/e2e/
