#!/usr/bin/env bash
# Installs what the build and the dev stack use (--dev: `make dev`), or that plus what only
# the tests use (no argument: `make test`), on a fresh machine. Idempotent: each step checks
# what is already there. Safe to run again.
#
#   dev stack:  the wasm target, worker-build and wasm-bindgen-cli (pinned; compiled once,
#               about 10 minutes), npm packages from package-lock.json (wrangler/workerd,
#               esbuild, binaryen, oidc-provider for the demo IdP)
#   tests also: Debian's xmlsec1 (signs the SAML test IdP's responses), chromium (the
#               browser tests), python3-jwt and python3-cryptography (the Python origin
#               example, tests/project/origin_examples.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

MODE=all
case "${1:-}" in
  --dev) MODE=dev ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# --- What this script cannot install: say so in a sentence ---------------------------
command -v rustup >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/rustup" ] \
  || fail "rustup is not installed. Install Rust with rustup (the installer on the Rust project's site, or Debian's rustup package), open a new shell, and run this again."
PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH although rustup is installed. Open a new shell (or run: . \"\$HOME/.cargo/env\") and run this again."
command -v node >/dev/null 2>&1 \
  || fail "Node.js is not installed. Install Node.js 20 or later with npm (Debian 13: apt-get install nodejs npm; older releases need a newer Node.js than theirs), then run this again."
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: wrangler needs Node.js 20 or later. Upgrade Node.js, then run this again."
command -v npm >/dev/null 2>&1 || fail "npm is not installed (Node.js is). Install npm (Debian: apt-get install npm), then run this again."

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

# --- npm: wrangler (workerd), esbuild, binaryen, and the demo/test peers -------------
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dev dependencies from package-lock.json (about a minute)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# --- Debian packages only the tests use ----------------------------------------------
if [ "$MODE" = all ]; then
  # nginx, Apache + PHP and Tomcat are origins in tests/e2e/origins.test.mjs; the tests
  # start them from their own configuration (none is enabled as a service).
  APT_PACKAGES=(xmlsec1 chromium python3-jwt python3-cryptography nginx-light apache2 libapache2-mod-php tomcat10)
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 \
      || fail "the tests need ${missing[*]} and this is not a Debian-like system (no apt-get). Install them with the system's package manager, then run this again."
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null 2>&1 || fail "the tests need ${missing[*]}: run as root or install sudo, or install them yourself (apt-get install ${missing[*]})."
      SUDO="sudo"
    fi
    log "installing Debian packages for the tests: ${missing[*]} (a few minutes)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

log "ready ($MODE)"
