#!/usr/bin/env bash
# Command 1: sets up, builds, and runs the gateway in `wrangler dev` on 127.0.0.1:8787 with
# local KV. Without arguments it also starts a demo OpenID Provider (127.0.0.1:9000) and a
# demo origin (127.0.0.1:9100). With --config FILE [--secrets FILE] (or the environment
# variables PORTCULLIS_CONFIG_FILE / PORTCULLIS_SECRETS_FILE) it serves that configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export PORTCULLIS_SKIP_BUILD=1
exec node scripts/dev.mjs "$@"
