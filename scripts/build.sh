#!/usr/bin/env bash
# Builds the worker bundle (build/worker/) with worker-build, using the locally installed
# wasm-bindgen, esbuild and wasm-opt instead of worker-build's own downloads.
# PORTCULLIS_SKIP_BUILD=1 makes it a no-op (the tests build once, then start many workers).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PORTCULLIS_SKIP_BUILD:-0}" = 1 ] && [ -f build/worker/shim.mjs ]; then exit 0; fi
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
PATH="$HOME/.cargo/bin:$PATH"
exec worker-build --release "$@"
