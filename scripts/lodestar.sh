#!/usr/bin/env bash
# Install Lodestar 1.5.1 (the real validator client the devnet test drives) into a cache folder
# outside the repository, and print, as the last line of standard output, the path of an
# executable that runs it (`<wrapper> dev --help`). Everything else goes to standard error.
#
# - Idempotent: a second run finds the stamp of the same lockfile and returns at once.
# - Non-interactive and bounded: npm and the native builds run under `timeout`.
# - Several runs at once (nextest runs tests in parallel) take turns on a lock file.
# - Installs node/npm, and a C++ toolchain and python3 for two native modules, with apt-get
#   (through sudo when not root) when missing.
#
# The dependency tree is scripts/lodestar/package-lock.json: every @lodestar/* package at exactly
# 1.5.1 (npm `overrides`) and every other dependency at the version of Lodestar's own yarn.lock
# at v1.5.1 (how the lockfile was made: scripts/lodestar/pin-from-yarn-lock.cjs). Today's
# semver ranges do not work: they mix @multiformats/multiaddr 11 and 12, and libp2p then cannot
# listen. Three overrides beyond the @lodestar packages, each within its dependents' range:
# @chainsafe/blst 0.2.11 (the first with a prebuilt binding for Node 20), nan 2.22.2 (2.14 does
# not compile against Node 20's V8) and libp2p 0.42.2 for @lodestar/reqresp's peer dependency
# (0.41.0; beacon-node, its only user, ships 0.42.2).
#
# Node >= 20 lacks nothing else but `Promise.withResolvers` (used by newer transitive code), which
# the wrapper polyfills through NODE_OPTIONS=--require.
#
# Environment: HSM_SIGNER_LODESTAR_DIR (default ~/.cache/hsm-signer/lodestar-1.5.1).
set -euo pipefail

VERSION=1.5.1
SRC="$(cd "$(dirname "$0")/lodestar" && pwd)"
DIR="${HSM_SIGNER_LODESTAR_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hsm-signer/lodestar-$VERSION}"
WRAPPER="$DIR/bin/lodestar"

log() { echo "lodestar.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

stamp_of_sources() {
  cat "$SRC/package.json" "$SRC/package-lock.json" "$SRC/.npmrc" "$0" | sha256sum | cut -d' ' -f1
}

installed() {
  [ -x "$WRAPPER" ] && [ -f "$DIR/.stamp" ] && [ "$(cat "$DIR/.stamp")" = "$(stamp_of_sources)" ] \
    && command -v node >/dev/null 2>&1
}

if installed; then
  echo "$WRAPPER"
  exit 0
fi

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
if ! timeout 1200 flock 9; then
  log "another installation held $DIR.lock for 20 minutes"
  exit 1
fi
# The holder of the lock may have just finished the same installation.
if installed; then
  echo "$WRAPPER"
  exit 0
fi

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v make >/dev/null 2>&1 || need+=(make)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "installing with apt-get: ${need[*]}"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive timeout 900 $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
  log "node $(node --version) is too old for Lodestar $VERSION (need 18 or newer)"
  exit 1
fi

log "installing Lodestar $VERSION into $DIR (a few minutes the first time)"
work="$DIR.tmp.$$"
rm -rf "$work"
mkdir -p "$work/bin"
trap 'rm -rf "$work"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/.npmrc" "$work/"
(
  cd "$work"
  # Install scripts are not run (npm 11 blocks them by default anyway; some would download
  # prebuilt binaries from GitHub): the two native modules that need one are built below.
  timeout 1200 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  # snappy (gossip and req/resp compression) has no fallback; bcrypto's JS fallback is not
  # taken automatically. Both are compiled with node-gyp, skipping their prebuilt downloads.
  npm_config_build_from_source=true timeout 900 npm rebuild snappy bcrypto --foreground-scripts \
    --loglevel=error >&2
  npm ls --omit=optional >/dev/null
)
cat >"$work/polyfill.cjs" <<'EOF'
// Promise.withResolvers (ES2024) for Node 20, which lacks it.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
EOF
cat >"$work/bin/lodestar" <<EOF
#!/bin/sh
# Lodestar $VERSION, installed by hsm-signer's scripts/lodestar.sh.
export NODE_OPTIONS="--require $DIR/polyfill.cjs\${NODE_OPTIONS:+ \$NODE_OPTIONS}"
exec node "$DIR/node_modules/@chainsafe/lodestar/lib/index.js" "\$@"
EOF
chmod +x "$work/bin/lodestar"

rm -rf "$DIR"
mv "$work" "$DIR"
trap - EXIT
got=$("$WRAPPER" --version 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -1 || true)
if [ "$got" != "v$VERSION" ]; then
  log "the installed wrapper says ${got:-nothing} for --version, not v$VERSION"
  exit 1
fi
stamp_of_sources >"$DIR/.stamp"
log "Lodestar $got ready"
echo "$WRAPPER"
