#!/usr/bin/env bash
# Builds the worker bundle (build/worker/) with worker-build, using the locally installed
# wasm-bindgen, esbuild and wasm-opt instead of worker-build's own downloads, and the
# configuration module the entry imports (build/config.mjs).
#
#   bash scripts/build.sh [--config FILE]
#
# --config FILE (or PORTCULLIS_BUILD_CONFIG=FILE): a configuration file (JSON, or TOML by
# its .toml name) to bundle into the Worker. It is checked first with `portcullis check`,
# the Worker's own validation: any error stops the build with its field path. Without it,
# build/config.mjs is `null` and the Worker reads the PORTCULLIS_CONFIG variable.
# Why a JavaScript module and not the file compiled into the wasm: every environment shares
# one wasm build (worker-build is unchanged), wrangler's bundler takes the module as it is,
# and a configuration change needs no Rust compile. The module counts toward the Worker's
# size limit (3 MB compressed on the Free plan), not the 5 KB limit of a variable.
# PORTCULLIS_SKIP_BUILD=1 skips the wasm build when one exists (the tests build once, then
# start many workers); the configuration module is written either way.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${PORTCULLIS_BUILD_CONFIG:-}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --config=*) config="${1#--config=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
PATH="$HOME/.cargo/bin:$PATH"

module="$(mktemp)"
trap 'rm -f "$module"' EXIT
if [ -n "$config" ]; then
  if [ ! -f "$config" ]; then
    echo "build: configuration file $config not found (start from config/example.json; see docs/deploying.md)" >&2
    exit 1
  fi
  echo "build: checking $config" >&2
  cargo run --quiet --locked --bin portcullis -- check "$config" --bundle "$module" >&2
else
  echo 'export default null;' >"$module"
fi

if ! { [ "${PORTCULLIS_SKIP_BUILD:-0}" = 1 ] && [ -f build/worker/shim.mjs ]; }; then
  export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
  export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
  export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
  worker-build --release ${args[@]+"${args[@]}"}
  # The names section (function names: 380 KB raw, 100 KB gzipped) only makes wasm stack
  # traces and profiles readable: kept with PORTCULLIS_WASM_NAMES=1 (for
  # `node scripts/bench-serve.mjs profile`), dropped otherwise.
  if [ "${PORTCULLIS_WASM_NAMES:-0}" != 1 ]; then
    out=build
    set -- ${args[@]+"${args[@]}"}
    while [ $# -gt 0 ]; do
      case "$1" in -d | --out-dir) out="${2:-build}"; shift ;; -d=* | --out-dir=*) out="${1#*=}" ;; esac
      shift
    done
    wasm="$out/index_bg.wasm"
    "$WASM_OPT_BIN" --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
      --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling \
      --strip-debug --strip-producers "$wasm" -o "$wasm.tmp"
    mv "$wasm.tmp" "$wasm"
  fi
fi
mkdir -p build
# Unchanged content is not rewritten: a running `wrangler dev` would reload on the write.
cmp -s "$module" build/config.mjs 2>/dev/null || cp "$module" build/config.mjs
