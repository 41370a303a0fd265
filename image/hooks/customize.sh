#!/bin/sh
# mmdebstrap --customize-hook: everything installed. Build the initramfs exactly once, then the
# base-image settings that do not depend on EdgeClaw (those come per build in image/build.sh).
set -eu
R=$1
[ -z "${EDGECLAW_BASE_TIMES:-}" ] || echo "customize $(date +%s)" >> "$EDGECLAW_BASE_TIMES"
rm -f "$R/usr/sbin/update-initramfs"
chroot "$R" dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
t0=$(date +%s)
chroot "$R" update-initramfs -c -k all
echo "initramfs: $(( $(date +%s) - t0 )) s" >&2
[ -z "${EDGECLAW_BASE_TIMES:-}" ] || echo "initramfs $(date +%s)" >> "$EDGECLAW_BASE_TIMES"
ls "$R/boot/firmware" >&2
# A rootfs image must not carry a machine identity or SSH host keys: every card would share them.
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R"/etc/ssh/ssh_host_*
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
