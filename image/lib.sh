# Shared by the image build scripts (sourced). Host: Debian 12, root.
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$IMAGE_DIR/.." && pwd)
. "$REPO_DIR/scripts/retry.sh"
CACHE=${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}
SUITE=${SUITE:-trixie}
ARCH=arm64
# SNAPSHOT=20250520T000000Z pins every package to snapshot.debian.org at that time (reproducible
# builds); MIRROR overrides the archive (e.g. a local mirror of the same snapshot).
SNAPSHOT=${SNAPSHOT:-}
if [ -n "$SNAPSHOT" ]; then
  MIRROR=${MIRROR:-http://snapshot.debian.org/archive/debian/$SNAPSHOT}
  SECURITY_MIRROR=${SECURITY_MIRROR:-http://snapshot.debian.org/archive/debian-security/$SNAPSHOT}
else
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
fi
COMPONENTS="main non-free-firmware"

log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Host tools the build needs, installed from Debian's archive when missing.
ensure_host_tools() {
  local want=() pkg bin
  for pair in mmdebstrap:mmdebstrap arch-test:arch-test qemu-user-static:qemu-aarch64-static binfmt-support:update-binfmts \
              mtools:mcopy dosfstools:mkfs.vfat fdisk:sfdisk e2fsprogs:mke2fs zstd:zstd python3-pip:pip3 \
              "$@"; do
    pkg=${pair%%:*}; bin=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || want+=("$pkg")
  done
  [ "${#want[@]}" -eq 0 ] && return 0
  log "installing host packages: ${want[*]}"
  retry timeout 600 apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive retry timeout 900 apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
    || die "apt-get install ${want[*]} failed"
}

# qemu-user's aarch64 handler, machine-wide: register it only if missing (with F so it works inside
# chroots and containers); never touch, and never remove, a handler someone else registered.
ensure_binfmt() {
  local bm=/proc/sys/fs/binfmt_misc
  [ -e "$bm/register" ] || mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc"
  if [ -e "$bm/qemu-aarch64" ]; then
    grep -q '^enabled' "$bm/qemu-aarch64" || die "qemu-aarch64 binfmt handler present but disabled (not ours to enable)"
    grep -q '^flags:.*F' "$bm/qemu-aarch64" || log "warning: qemu-aarch64 handler lacks the F flag; chroots may fail"
    return 0
  fi
  log "registering qemu-user aarch64 binfmt handler (it was missing)"
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if [ ! -e "$bm/qemu-aarch64" ]; then
    # update-binfmts refused (e.g. binfmt-support state out of sync): write the same entry directly.
    local magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    printf ':qemu-aarch64:M::%s:%s:/usr/bin/qemu-aarch64-static:F' "$magic" "$mask" > "$bm/register"
  fi
  [ -e "$bm/qemu-aarch64" ] || die "could not register the aarch64 binfmt handler"
}

# The base tarball's cache key: everything that decides its content (not the per-build app layer).
base_key() {
  {
    echo "$SUITE $ARCH $MIRROR $SECURITY_MIRROR $COMPONENTS ${EXTRA_PACKAGES:-}"
    # not initramfs-modules: a list that differs from the base's is applied by hooks/app-layer.sh
    # (one mkinitramfs, minutes) instead of rebuilding the whole base (tens of minutes)
    cat "$IMAGE_DIR/packages.txt" "$IMAGE_DIR"/hooks/{customize,essential,setup}.sh \
      "$IMAGE_DIR/build-base.sh"
  } | sha256sum | cut -c1-16
}
base_tarball() { echo "$CACHE/image-base-$SUITE-$ARCH-$(base_key).tar.zst"; }
