#!/usr/bin/env bash
# Installs what the test tiers need, each only if missing: Debian packages (ffmpeg, systemd-nspawn,
# debootstrap, image tools) and a Python venv with the project's dependencies, cached by pyproject.toml.
# Prints the venv's directory on its last line.
set -euo pipefail
. "$(dirname "$0")/retry.sh"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_ROOT="${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}"
mkdir -p "$CACHE_ROOT"
# one installer at a time: parallel runs must not delete each other's half-built cache
exec 9>"$CACHE_ROOT/.install.lock"
flock -w 1800 9 || { echo "timed out waiting for $CACHE_ROOT/.install.lock" >&2; exit 1; }

APT_PACKAGES=(ffmpeg iproute2 util-linux systemd-container debootstrap procps
              mmdebstrap qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs zstd)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  retry apt-get update -qq >&2
  retry apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

key=$( (cat "$ROOT/pyproject.toml"; python3 --version) | sha256sum | cut -c1-16)
VENV="$CACHE_ROOT/venv-$key"
if [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip >&2 2>/dev/null || true
  # dependencies only: the code under test is always the checkout (PYTHONPATH), never a stale copy
  deps=$(python3 - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(doc["dependencies"] + doc["optional-dependencies"]["test"]))
PY
)
  mapfile -t dep_list <<<"$deps"
  retry "$VENV/bin/pip" install -q "${dep_list[@]}" >&2
  touch "$VENV/.complete"
fi
echo "$VENV"
