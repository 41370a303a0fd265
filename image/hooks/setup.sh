#!/bin/sh
# mmdebstrap --setup-hook: runs on the host before any package is installed. $1 = the root.
set -eu
R=$1
[ -z "${EDGECLAW_BASE_TIMES:-}" ] || echo "setup $(date +%s)" >> "$EDGECLAW_BASE_TIMES"
HERE=$(dirname "$0")
mkdir -p "$R/boot/firmware" "$R/etc/initramfs-tools/conf.d"
# Only the modules that boot (see image/initramfs-modules); the initramfs itself is made once, in
# the customize hook, instead of once by the kernel's postinst and again by the trigger.
printf 'MODULES=list\nCOMPRESS=zstd\n' > "$R/etc/initramfs-tools/conf.d/edgeclaw.conf"
grep -v '^#' "$HERE/../initramfs-modules" > "$R/etc/initramfs-tools/modules"
# the read-only root (systemd.volatile=overlay) is done by this initramfs-tools script
install -D -m 0755 "$HERE/../initramfs/edgeclaw-volatile" "$R/etc/initramfs-tools/scripts/local-bottom/edgeclaw-volatile"
# raspi-firmware writes cmdline.txt from this: boot the root partition by its label.
mkdir -p "$R/etc/default"
printf 'ROOTPART=LABEL=rootfs\nCONSOLES="ttyS1,115200 tty0"\n' > "$R/etc/default/raspi-firmware"
