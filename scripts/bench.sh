#!/usr/bin/env bash
# Benchmarks (not part of `make test`): native micro-benchmarks and the bundle size.
# Prints the figures BENCHMARKS.md reports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
echo "== bundle size (release build, wasm-opt)"
bash scripts/build.sh >/dev/null 2>&1
raw=$(stat -c %s build/index_bg.wasm)
gz=$(gzip -9 -c build/index_bg.wasm | wc -c)
js=$(stat -c %s build/index.js)
printf 'wasm: %d bytes raw, %d bytes gzip -9 (%.1f KiB); JS glue: %d bytes\n' "$raw" "$gz" "$(echo "$gz/1024" | bc -l)" "$js"
echo "== native micro-benchmarks"
cargo bench --bench core 2>/dev/null
echo "== parsers on their worst inputs, per KiB, against valid inputs of the same size"
cargo bench --bench parsers 2>/dev/null
