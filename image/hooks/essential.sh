#!/bin/sh
# mmdebstrap --essential-hook: after the Essential set, before the kernel. Divert update-initramfs to
# a no-op so neither the kernel postinst nor the initramfs-tools trigger runs mkinitramfs (each run
# costs minutes under qemu-user); customize.sh removes the diversion and builds it once.
set -eu
R=$1
[ -z "${EDGECLAW_BASE_TIMES:-}" ] || echo "essential $(date +%s)" >> "$EDGECLAW_BASE_TIMES"
chroot "$R" dpkg-divert --local --rename --divert /usr/sbin/update-initramfs.edgeclaw-real \
  --add /usr/sbin/update-initramfs
mkdir -p "$R/usr/sbin"
printf '#!/bin/sh\necho "update-initramfs: deferred to the image build (edgeclaw)" >&2\nexit 0\n' \
  > "$R/usr/sbin/update-initramfs"
chmod 755 "$R/usr/sbin/update-initramfs"
