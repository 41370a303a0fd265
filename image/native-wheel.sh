#!/usr/bin/env bash
# Compile an aarch64 wheel from an sdist PyPI has no wheel of for the card's Python (lgpio: wheels for
# cp39-cp312 only, the card has 3.13), inside a throwaway arm64 copy of the cached base under
# qemu-user: the compiler, swig and headers are installed there with apt, never in the card's root.
#   image/native-wheel.sh BASE_TARBALL SDIST WHEELHOUSE     (puts the wheel into WHEELHOUSE)
# Cached in $CACHE/image-native-wheel-<key>/, keyed by the sdist's sha256 and the base (its Python
# and glibc), so only the first build on a new base pays the minutes this takes.
# lgpio's sdist with PYPI=1 links its C library statically into the module: the card needs no liblgpio.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BASE=$1 SDIST=$2 HOUSE=$3
[ -s "$BASE" ] && [ -s "$SDIST" ] && [ -d "$HOUSE" ] || die "usage: $0 BASE_TARBALL SDIST WHEELHOUSE"
KEY=$( { sha256sum < "$SDIST" | cut -c1-64; basename "$BASE"; echo native-wheel-1; } | sha256sum | cut -c1-16)
DONE=$CACHE/image-native-wheel-$KEY
mkdir -p "$CACHE"
# one builder per key: a second build (another worktree, a CI run) waits and then takes the cache
exec 9>"$DONE.lock"
flock 9
if ls "$DONE"/*.whl >/dev/null 2>&1; then
  cp "$DONE"/*.whl "$HOUSE/"
  log "$(basename "$SDIST"): cached wheel $(cd "$DONE" && ls -- *.whl)"
  exit 0
fi
T=$(mktemp -d "$CACHE/.native-wheel.tmp.$$.XXXX")
trap 'rm -rf "$T"' EXIT
t0=$(date +%s)
mkdir -p "$T/root" "$T/out"
tar -C "$T/root" --zstd -xpf "$BASE" --numeric-owner
# the base's resolv.conf points at systemd-resolved, which does not run in a chroot
rm -f "$T/root/etc/resolv.conf" && cp /etc/resolv.conf "$T/root/etc/resolv.conf"
install -m 0644 "$SDIST" "$T/root/tmp/$(basename "$SDIST")"
in_throwaway() {  # a private mount namespace: /proc, /sys, /dev for apt and the compiler, gone after
  unshare --mount --propagation private sh -c 'mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" &&
    mount --rbind /dev "$1/dev" && r=$1 && shift && exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$T/root" "$@"
}
retry in_throwaway timeout 600 apt-get -qq update >&2
retry in_throwaway timeout 1800 apt-get -qq install -y --no-install-recommends \
  build-essential swig python3-dev python3-setuptools python3-wheel >/dev/null
t1=$(date +%s)
name=$(basename "$SDIST" .tar.gz)
in_throwaway sh -c "cd /tmp && tar xzf '$name.tar.gz' && cd '$name' && PYPI=1 python3 setup.py -q bdist_wheel -d /tmp/wheel" >&2
whl=$(ls "$T/root/tmp/wheel/"*.whl)
# the wheel must carry an aarch64 extension module for the base's CPython
python3 -c 'import sys, zipfile; sys.exit(not any(n.endswith("-aarch64-linux-gnu.so") for n in zipfile.ZipFile(sys.argv[1]).namelist()))' "$whl" || die "$(basename "$whl"): no aarch64 extension inside"
rm -rf "$DONE" "$DONE.tmp.$$" && mkdir -p "$DONE.tmp.$$" && cp "$whl" "$DONE.tmp.$$/" && mv -T "$DONE.tmp.$$" "$DONE"
cp "$whl" "$HOUSE/"
log "$(basename "$whl"): compiled under qemu-user in $(( $(date +%s) - t0 )) s (toolchain $(( t1 - t0 )) s)"
