#!/usr/bin/env bash
# Command 1: sets up, builds, and runs the gateway in `wrangler dev` on 127.0.0.1:8787 with
# local KV. Without arguments it also starts a demo OpenID Provider (127.0.0.1:9000) and a
# demo origin (127.0.0.1:9100). With --config FILE [--secrets FILE] (or the environment
# variables PORTCULLIS_CONFIG_FILE / PORTCULLIS_SECRETS_FILE) it serves that configuration
# until Ctrl-C. Installs only what the dev stack needs (scripts/setup.sh --dev).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

step_run "setup (dev stack; the first run compiles two Rust tools: about 10 minutes)" bash scripts/setup.sh --dev
# The build that deploys, without the KV fault switch (`make test` builds with it). Under
# `make test` the dev test sets PORTCULLIS_SKIP_BUILD=1 and so runs the suite's one build.
step_run "build (the first run compiles the wasm: a few minutes)" bash scripts/build.sh
if [ -n "${PORTCULLIS_CONFIG_FILE:-}" ]; then
  # The same check the deployed Worker makes, before wrangler starts.
  secrets_arg=()
  [ -n "${PORTCULLIS_SECRETS_FILE:-}" ] && secrets_arg=(--secrets "$PORTCULLIS_SECRETS_FILE")
  step_run "check $PORTCULLIS_CONFIG_FILE" cargo run --quiet --locked --bin portcullis -- check "$PORTCULLIS_CONFIG_FILE" "${secrets_arg[@]}"
fi
export PORTCULLIS_SKIP_BUILD=1
step "start (wrangler dev)"
exec node scripts/dev.mjs "$@"
