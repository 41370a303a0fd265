#!/usr/bin/env bash
# Builds (once) a Debian bookworm root filesystem with systemd as PID 1 and Python, for booting with
# `systemd-nspawn --boot` in the systemd and Ansible test tiers, and prints its path on the last line.
#   scripts/rootfs.sh            -> ${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}/rootfs-bookworm-<hash>
# The directory name carries a hash of the package list and suite, so changing either builds a new one;
# a finished build has a .complete marker and is never written again (tests boot an overlayfs copy).
# About 55 s and 290 MB cold; a no-op when cached.
set -euo pipefail
. "$(dirname "$0")/retry.sh"
SUITE="${EDGECLAW_ROOTFS_SUITE:-bookworm}"
MIRROR="${EDGECLAW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(systemd systemd-sysv dbus procps python3 python3-venv)
CACHE_ROOT="${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}"
key=$(printf '%s\n' "$SUITE" minbase "${PACKAGES[@]}" | sha256sum | cut -c1-12)
DIR="$CACHE_ROOT/rootfs-$SUITE-$key"
if [ -f "$DIR/.complete" ]; then
  echo "$DIR"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "rootfs.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is not installed" >&2; exit 1; }
mkdir -p "$CACHE_ROOT"
# one builder at a time (the systemd and Ansible tiers may ask concurrently)
exec 9>"$CACHE_ROOT/.rootfs-$SUITE-$key.lock"
flock -w 900 9 || { echo "rootfs.sh: timed out waiting for another build" >&2; exit 1; }
if [ -f "$DIR/.complete" ]; then
  echo "$DIR"
  exit 0
fi
TMP="$DIR.tmp"
rm -rf "$TMP"
echo "building $SUITE rootfs (minbase + ${PACKAGES[*]}) in $DIR" >&2
include=$(IFS=,; echo "${PACKAGES[*]}")
fresh_debootstrap() { rm -rf "$TMP"; debootstrap --variant=minbase --include="$include" "$SUITE" "$TMP" "$MIRROR" >&2; }
retry fresh_debootstrap \
  || { echo "rootfs.sh: debootstrap failed; see $TMP/debootstrap/debootstrap.log" >&2; exit 1; }
# a booted copy generates its own machine id; no package caches kept
: >"$TMP/etc/machine-id"
rm -f "$TMP/var/lib/dbus/machine-id"
rm -rf "$TMP/var/cache/apt/archives/"*.deb "$TMP/var/lib/apt/lists/"*
# the container has no network: don't wait for it at boot
rm -f "$TMP/etc/systemd/system/multi-user.target.wants/systemd-networkd.service" \
      "$TMP/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
touch "$TMP/.complete"
mv "$TMP" "$DIR"
echo "$DIR"
