#!/usr/bin/env bash
# Regression check of the key performance figures: the working tree against another
# revision (default: main), both built the same way, measured alternately in one run so
# that the machine's load affects both alike. Not part of `make test` (several minutes).
#
#   bash scripts/bench-compare.sh [BASE_REV]
#
# Figures: index_bg.wasm raw and gzip -9 bytes, and from `node scripts/bench-serve.mjs cold`
# the new isolate's first request, process start to listening, and the JavaScript worker's
# first request (the baseline of the issue's "≤ 3× the JS worker" goal).
# Knobs (environment): BENCH_COMPARE_ROUNDS (alternating rounds, default 3),
# BENCH_COLD_RUNS (workerd starts per round and build, default 10), PORTCULLIS_SKIP_BUILD=1
# (use the existing build/ for the working tree), BENCH_COMPARE_BASE_BUILD=DIR (use an
# existing build of the base instead of building it), BENCH_COMPARE_HEAD_BUILD=DIR (the same
# for the working tree: compare two existing builds), BENCH_COMPARE_LIMIT=PCT (exit 1 when
# the working tree's first request or gzip size is more than PCT % above the base's;
# default 10), BENCH_COMPARE_LATENCY=1 (also `bench-serve.mjs latency` each round, about a
# minute per build: workerd CPU per proxied request and requests/s with 16 connections, and
# p99 paced at 1,000 req/s, each beside the JavaScript proxy worker measured in the same run;
# the CPU per request joins the figures checked against the limit).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-main}"
rounds="${BENCH_COMPARE_ROUNDS:-3}"
limit="${BENCH_COMPARE_LIMIT:-10}"
export BENCH_COLD_RUNS="${BENCH_COLD_RUNS:-10}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
tmp="$(mktemp -d)"
cleanup() {
  git worktree remove --force "$tmp/base" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

base_build="${BENCH_COMPARE_BASE_BUILD:-}"
if [ -z "$base_build" ]; then
  echo "bench-compare: building $base ($(git rev-parse --short "$base"))" >&2
  git worktree add --detach "$tmp/base" "$base" >/dev/null
  # The base shares this tree's target directory (only the crate itself is rebuilt) and
  # its JavaScript tools.
  (cd "$tmp/base" && CARGO_TARGET_DIR="$OLDPWD/target" bash scripts/build.sh >"$tmp/base-build.log" 2>&1) || {
    tail -20 "$tmp/base-build.log" >&2
    exit 1
  }
  base_build="$tmp/base/build"
fi
if [ -z "${BENCH_COMPARE_HEAD_BUILD:-}" ] && { [ "${PORTCULLIS_SKIP_BUILD:-0}" != 1 ] || [ ! -f build/index_bg.wasm ]; }; then
  echo "bench-compare: building the working tree" >&2
  bash scripts/build.sh >"$tmp/head-build.log" 2>&1 || {
    tail -20 "$tmp/head-build.log" >&2
    exit 1
  }
fi
head_build="$(cd "${BENCH_COMPARE_HEAD_BUILD:-build}" && pwd)"
base_build="$(cd "$base_build" && pwd)"

# One `bench-serve.mjs cold` run; appends "name value" lines to $tmp/figures-NAME.
measure() {
  local name="$1" dir="$2" out
  out="$(PORTCULLIS_BENCH_BUILD="$dir" node scripts/bench-serve.mjs cold 2>&1)" || {
    echo "$out" >&2
    exit 1
  }
  echo "$out" | awk -v f="$tmp/figures-$name" '
    /^process start to listening/ { print "listening", $(NF-2) >> f }
    /^first request \(new isolate/ { print "first", $(NF-2) >> f }
    /^for comparison: a JS worker/ { print "js_first", $(NF-2) >> f }
    /^wasm / { print "raw", $3 >> f; print "gzip", $6 >> f }'
  if [ "${BENCH_COMPARE_LATENCY:-0}" = 1 ]; then
    out="$(PORTCULLIS_BENCH_BUILD="$dir" node scripts/bench-serve.mjs latency 2>&1)" || {
      echo "$out" >&2
      exit 1
    }
    echo "$out" | awk -v f="$tmp/figures-$name" '
      function field(after,   i) { for (i = 1; i < NF; i++) if ($i == after) return $(i + 1) }
      function before(what,   i) { for (i = 2; i <= NF; i++) if ($i == what) return $(i - 1) }
      /^through the gateway, valid session, 16 concurrent/ { print "cpu", field("CPU") >> f; print "rps", before("req/s") >> f }
      /^JS proxy worker in the same workerd \(baseline\), 16 concurrent/ { print "js_cpu", field("CPU") >> f; print "js_rps", before("req/s") >> f }
      /^through the gateway, valid session, 16 connections, paced/ { print "p99", field("p99") >> f }
      /^JS proxy worker in the same workerd \(baseline\), 16 connections, paced/ { print "js_p99", field("p99") >> f }'
  fi
}

for r in $(seq 1 "$rounds"); do
  echo "bench-compare: round $r of $rounds" >&2
  measure base "$base_build"
  measure head "$head_build"
done

node - "$tmp/figures-base" "$tmp/figures-head" "$base" "$limit" <<'EOF'
const fs = require('node:fs');
const [baseFile, headFile, baseRev, limit] = process.argv.slice(2);
const read = (f) => {
  const m = {};
  for (const line of fs.readFileSync(f, 'utf8').trim().split('\n')) {
    const [k, v] = line.split(' ');
    (m[k] ??= []).push(Number(v));
  }
  return m;
};
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const b = read(baseFile);
const h = read(headFile);
const rows = [
  ['index_bg.wasm gzip -9 (bytes)', 'gzip'],
  ['index_bg.wasm raw (bytes)', 'raw'],
  ['first request of a new isolate (ms)', 'first'],
  ['process start to listening (ms)', 'listening'],
  ['JS worker first request (ms)', 'js_first'],
  ['workerd CPU per proxied request, 16 connections (µs)', 'cpu'],
  ['JS proxy worker: CPU per request, same runs (µs)', 'js_cpu'],
  ['requests/s through the gateway, 16 connections', 'rps'],
  ['JS proxy worker: requests/s, same runs', 'js_rps'],
  ['p99 through the gateway at 1,000 req/s (ms)', 'p99'],
  ['JS proxy worker: p99 at 1,000 req/s, same runs (ms)', 'js_p99'],
].filter(([, k]) => b[k] && h[k]);
console.log(`figure | ${baseRev} | working tree | ratio   (medians of ${b.first.length} rounds; per-round values in brackets)`);
for (const [label, k] of rows) {
  const bm = median(b[k]);
  const hm = median(h[k]);
  console.log(`${label} | ${bm} [${b[k].join(', ')}] | ${hm} [${h[k].join(', ')}] | ${(hm / bm).toFixed(2)}`);
}
console.log(`first request against the JS worker's (same runs): ${baseRev} ${(median(b.first) / median(b.js_first)).toFixed(1)}×, working tree ${(median(h.first) / median(h.js_first)).toFixed(1)}× (goal ≤ 3×)`);
if (b.cpu && h.cpu) {
  const r = (m, k, j) => (median(m[k]) / median(m[j])).toFixed(2);
  console.log(`against the JS proxy (same runs): CPU ${baseRev} ${r(b, 'cpu', 'js_cpu')}×, working tree ${r(h, 'cpu', 'js_cpu')}× (goal ≤ 1.5×); requests/s ${r(b, 'rps', 'js_rps')}×, ${r(h, 'rps', 'js_rps')}× (goal ≥ 0.7×); p99 ${r(b, 'p99', 'js_p99')}×, ${r(h, 'p99', 'js_p99')}× (goal ≤ 2×)`);
}
const worse = ['gzip', 'first', 'cpu'].filter((k) => b[k] && h[k]).filter((k) => median(h[k]) > median(b[k]) * (1 + Number(limit) / 100));
if (worse.length) {
  console.log(`regression over ${limit} %: ${worse.join(', ')}`);
  process.exit(1);
}
EOF
