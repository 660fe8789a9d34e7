#!/usr/bin/env bash
# Builds the worker bundle (build/worker/) with worker-build, using the locally installed
# wasm-bindgen, esbuild and wasm-opt instead of worker-build's own downloads, and the
# configuration module the entry imports (build/config.mjs).
#
#   bash scripts/build.sh [--config FILE] [--test-faults]
#
# --config FILE (or PORTCULLIS_BUILD_CONFIG=FILE): a configuration file (JSON, or TOML by
# its .toml name) to bundle into the Worker. It is checked first with `portcullis check`,
# the Worker's own validation: any error stops the build with its field path. Without it,
# build/config.mjs is `null` and the Worker reads the PORTCULLIS_CONFIG variable.
# Why a JavaScript module and not the file compiled into the wasm: every environment shares
# one wasm build (worker-build is unchanged), wrangler's bundler takes the module as it is,
# and a configuration change needs no Rust compile. The module counts toward the Worker's
# size limit (3 MB compressed on the Free plan), not the 5 KB limit of a variable.
# --test-faults: the test build, with the KV fault switch compiled in (cargo feature
# `test-faults`, src/faults/switch.rs); `make test` builds it once and every end-to-end test
# runs it. Without the flag, the build that deploys and that `make dev` runs: no fault switch
# at all (tests/e2e/build.test.mjs checks its wasm). build/variant records which one
# build/ holds.
# PORTCULLIS_SKIP_BUILD=1 skips the wasm build when one exists, of either kind (the tests
# build once, then start many workers, and wrangler runs this script without flags); the
# configuration module is written either way. Without it, the wasm is built as asked, so
# `make dev` and `wrangler deploy` after `make test` get the build without the switch.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${PORTCULLIS_BUILD_CONFIG:-}"
test_faults=0
out_dir=build
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --config=*) config="${1#--config=}"; shift ;;
    --test-faults) test_faults=1; shift ;;
    -d|--out-dir) out_dir="${2:?$1 needs a directory}"; args+=("$1" "$2"); shift 2 ;;
    --out-dir=*) out_dir="${1#--out-dir=}"; args+=("$1"); shift ;;
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

# What build/variant says: the kind, and any further worker-build arguments (a bench build).
variant="production${args[*]+ ${args[*]}}"
if [ "$test_faults" = 1 ]; then
  variant="test-faults${args[*]+ ${args[*]}}"
  args+=(--features test-faults)
fi
if ! { [ "${PORTCULLIS_SKIP_BUILD:-0}" = 1 ] && [ -f build/worker/shim.mjs ]; }; then
  export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
  export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
  export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
  rm -f "$out_dir/variant"
  worker-build --release ${args[@]+"${args[@]}"}
  # The names section (function names: 380 KB raw, 100 KB gzipped) only makes wasm stack
  # traces and profiles readable: kept with PORTCULLIS_WASM_NAMES=1 (for
  # `node scripts/bench-serve.mjs profile`), dropped otherwise.
  if [ "${PORTCULLIS_WASM_NAMES:-0}" != 1 ]; then
    wasm="$out_dir/index_bg.wasm"
    "$WASM_OPT_BIN" --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
      --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling \
      --strip-debug --strip-producers "$wasm" -o "$wasm.tmp"
    mv "$wasm.tmp" "$wasm"
  fi
  echo "$variant" >"$out_dir/variant"
fi
mkdir -p build
# Unchanged content is not rewritten: a running `wrangler dev` would reload on the write.
cmp -s "$module" build/config.mjs 2>/dev/null || cp "$module" build/config.mjs
