#!/usr/bin/env bash
# Installs everything the build, the dev stack and the tests use, on a fresh machine.
# Idempotent: each step checks what is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# --- Rust: the wasm target and the two build tools, pinned -------------------------
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

WORKER_BUILD_VERSION=0.8.7
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)

installed_version() { # crate binary -> version or empty
  cargo install --list 2>/dev/null | awk -v c="$1" '$1==c {gsub(/[v:]/,"",$2); print $2}'
}
if [ "$(installed_version worker-build)" != "$WORKER_BUILD_VERSION" ]; then
  log "installing worker-build $WORKER_BUILD_VERSION (a few minutes, once)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi
if [ "$(installed_version wasm-bindgen-cli)" != "$WASM_BINDGEN_VERSION" ]; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
  # Its lock file pins a yanked crate at some versions: fall back to a fresh resolution.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked --force \
    || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# --- Debian packages the tests use --------------------------------------------------
# nginx, Apache + PHP and Tomcat are origins in tests/e2e/origins.test.mjs; the tests start
# them from their own configuration (none is enabled as a service).
APT_PACKAGES=(xmlsec1 chromium nginx-light apache2 libapache2-mod-php tomcat10)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- npm: wrangler (workerd), esbuild, binaryen, and the test peers -----------------
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dev dependencies from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "ready"
