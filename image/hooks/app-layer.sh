#!/usr/bin/env bash
# The per-build layer on top of the cached base: EdgeClaw's venv from aarch64 wheels, the unit files
# from systemd/ (the same ones the Ansible role installs), and the image's own first-boot, growroot,
# read-only-root, network, SSH and journald settings (image/rootfs/).
#   app-layer.sh ROOTFS WHEEL WHEELHOUSE REQUIREMENTS_FILE VENV_LAYER_TARBALL
# The venv comes in two layers: the dependencies (pip under qemu-user, slow) cached as a tarball keyed
# by the base, the wheelhouse and the requirement list; then EdgeClaw's own pure-Python wheel,
# installed from the host by image/install_wheel.py in about a second.
set -euo pipefail
R=$1 WHEEL=$2 HOUSE=$3 REQS=$4 VENV_LAYER=$5
HERE=$(cd "$(dirname "$0")/.." && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=/opt/edgeclaw/venv
say() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# a clean environment inside the chroot: the host's PIP_*/PYTHON* settings are not the image's
in_root() { chroot "$R" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
pip_in_root() {  # pip inside the arm64 root (qemu-user), from the wheelhouse only
  mkdir -p "$R/tmp/edgeclaw-wheels"
  cp "$HOUSE"/*.whl "$R/tmp/edgeclaw-wheels/"
  in_root PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q --no-index \
    --find-links /tmp/edgeclaw-wheels "$@"
  rm -rf "$R/tmp/edgeclaw-wheels" "$R/root/.cache/pip"
}

# 1. the dependency layer of the venv
t=$(date +%s)
if [ -s "$VENV_LAYER" ]; then
  mkdir -p "$R/opt/edgeclaw"
  tar -C "$R/opt/edgeclaw" --zstd -xpf "$VENV_LAYER" --numeric-owner
  say "venv dependency layer: cached ($(basename "$VENV_LAYER")), $(( $(date +%s) - t )) s"
else
  in_root /usr/bin/python3 -m venv "$VENV"
  install -m 0644 "$REQS" "$R/tmp/edgeclaw-requirements.txt"
  pip_in_root -r /tmp/edgeclaw-requirements.txt
  rm -f "$R/tmp/edgeclaw-requirements.txt"
  tar -C "$R/opt/edgeclaw" --zstd -cf "$VENV_LAYER.tmp.$$" venv
  mv "$VENV_LAYER.tmp.$$" "$VENV_LAYER"
  say "venv dependency layer: built under qemu-user and cached, $(( $(date +%s) - t )) s"
fi
# 2. EdgeClaw itself, from the host (pip under qemu-user only if the wheel were not pure Python)
t=$(date +%s)
rc=0; python3 "$HERE/install_wheel.py" --root "$R" --venv "$VENV" "$WHEEL" >&2 || rc=$?
if [ $rc -eq 2 ]; then
  cp "$WHEEL" "$R/tmp/"
  pip_in_root --no-deps "/tmp/$(basename "$WHEEL")"
  rm -f "$R/tmp/$(basename "$WHEEL")"
elif [ $rc -ne 0 ]; then
  exit $rc
fi
# byte-compiled by the card's own interpreter when the host's CPython is another version (a Debian 12
# host has 3.11, trixie's venv 3.13; install_wheel.py then skips it): .pyc files are per version
SP=$(cd "$R" && ls -d ."$VENV"/lib/python3*/site-packages | cut -c2-)
PYTAG=$(basename "$(dirname "$SP")" | tr -d 'python.')
if ! ls "$R$SP"/edgeclaw/__pycache__/cli.cpython-"$PYTAG".pyc >/dev/null 2>&1; then
  in_root "$VENV/bin/python3" -m compileall -q "$SP/edgeclaw" >&2
fi
say "EdgeClaw wheel installed, $(( $(date +%s) - t )) s"
# the smoke check: the arm64 interpreter imports it and the dependencies resolve
t=$(date +%s)
in_root "$VENV/bin/edgeclaw" --version >&2
in_root "$VENV/bin/python3" -c "import edgeclaw.cli, edgeclaw.firstboot, uvloop, nacl.signing, yaml, websockets, gpiozero, lgpio"
say "import check under qemu-user, $(( $(date +%s) - t )) s"

# units and their companions, as systemd/ documents their installed paths
install -D -m 0644 "$REPO/systemd/edgeclaw.service" "$R/usr/lib/systemd/system/edgeclaw.service"
install -D -m 0644 "$REPO/systemd/edgeclaw-run.socket" "$R/usr/lib/systemd/system/edgeclaw-run.socket"
install -D -m 0644 "$REPO/systemd/edgeclaw-run@.service" "$R/usr/lib/systemd/system/edgeclaw-run@.service"
install -D -m 0644 "$REPO/systemd/sysusers.d/edgeclaw.conf" "$R/usr/lib/sysusers.d/edgeclaw.conf"
install -D -m 0644 "$REPO/systemd/tmpfiles.d/edgeclaw.conf" "$R/usr/lib/tmpfiles.d/edgeclaw.conf"
install -D -m 0644 "$REPO/systemd/udev/60-edgeclaw-gpio.rules" "$R/etc/udev/rules.d/60-edgeclaw-gpio.rules"
ln -sfn "$VENV/bin/edgeclaw" "$R/usr/local/bin/edgeclaw"

# the image's own files (first boot, growroot, read-only root, network, SSH, journald, fstab, hostname)
cp -a --no-preserve=ownership "$HERE/rootfs/." "$R/"
install -D -m 0644 "$HERE/edgeclaw.yaml.example" "$R/usr/share/doc/edgeclaw/edgeclaw.yaml.example"
# Wi-Fi firmware Debian does not package: the Zero 2 W's BCM43436/43436s/43430b0 radios, from
# Raspberry Pi's firmware-nonfree (image/firmware/README.md), beside their licences. Debian's own
# files are never replaced, only the missing ones added.
mkdir -p "$R/usr/lib/firmware/brcm" "$R/usr/share/doc/edgeclaw/firmware"
for fw in "$HERE"/firmware/brcm/*; do
  [ -e "$R/usr/lib/firmware/brcm/${fw##*/}" ] || [ -L "$R/usr/lib/firmware/brcm/${fw##*/}" ] \
    || cp -P --no-preserve=ownership "$fw" "$R/usr/lib/firmware/brcm/"
done
install -m 0644 "$HERE"/firmware/LICENCE.* "$HERE/firmware/README.md" "$R/usr/share/doc/edgeclaw/firmware/"
mkdir -p "$R/etc/edgeclaw" "$R/var/lib/edgeclaw"
chmod 0700 "$R/var/lib/edgeclaw"

# The read-only-root script lives in the initramfs, which the base build makes once. If the script
# changed since that base was built, put it in and regenerate the initramfs here (slow: mkinitramfs
# under qemu-user) rather than rebuilding the whole base.
# The same for the initramfs module list (not part of the base's cache key, see lib.sh).
IRS=etc/initramfs-tools/scripts/local-bottom/edgeclaw-volatile
IRM=etc/initramfs-tools/modules
if ! cmp -s "$HERE/initramfs/edgeclaw-volatile" "$R/$IRS" || ! grep -v '^#' "$HERE/initramfs-modules" | cmp -s - "$R/$IRM"; then
  t=$(date +%s)
  install -D -m 0755 "$HERE/initramfs/edgeclaw-volatile" "$R/$IRS"
  grep -v '^#' "$HERE/initramfs-modules" > "$R/$IRM"
  say "initramfs script or module list differs from the base's: regenerating the initramfs under qemu-user"
  # mkinitramfs wants /proc, /sys and /dev: a private mount namespace, gone when it exits
  unshare --mount --propagation private sh -c 'mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" &&
    mount --rbind /dev "$1/dev" && exec chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    update-initramfs -u -k all' sh "$R" >&2
  say "initramfs regenerated, $(( $(date +%s) - t )) s"
fi

# users and groups on the host's systemd-sysusers (no emulation), then the state dir's owner
systemd-sysusers --root="$R" >/dev/null
systemd-tmpfiles --root="$R" --create /usr/lib/tmpfiles.d/edgeclaw.conf >/dev/null 2>&1 || true
# keys only: no password for anyone
in_root passwd -l root >/dev/null
# The root spec: PARTUUID of this card's second partition (build.sh picks the disk identifier), in
# cmdline.txt now, in raspi-firmware's ROOTPART so a kernel upgrade's regenerated cmdline.txt keeps it,
# and in fstab (both partitions). Never LABEL=rootfs: Raspberry Pi OS labels its root the same, and a
# second disk with it (a USB SSD on the same board) could become this card's root.
ID=${EDGECLAW_DISK_ID:?build.sh sets the disk identifier}
case $ID in [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;; *) echo "bad disk id $ID" >&2; exit 1 ;; esac
SPEC=PARTUUID=$ID-02
sed -i '/^ROOTPART=/d' "$R/etc/default/raspi-firmware"
echo "ROOTPART=$SPEC" >> "$R/etc/default/raspi-firmware"
sed -i -E "s|(^\| )root=[^ ]*|\1root=$SPEC|" "$R/boot/firmware/cmdline.txt"
sed -i "s|@DISK_ID@|$ID|g" "$R/etc/fstab"
grep -q "root=$SPEC " "$R/boot/firmware/cmdline.txt" || { echo "cmdline.txt: no root=$SPEC" >&2; exit 1; }
if grep -q '@DISK_ID@\|LABEL=rootfs' "$R/etc/fstab"; then echo "fstab still names the root by label" >&2; exit 1; fi

systemctl --root="$R" enable -q systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  ssh.service edgeclaw-ssh-hostkeys.service edgeclaw.service edgeclaw-firstboot.service \
  edgeclaw-growroot.service edgeclaw-notice.service edgeclaw-run.socket
# the D-Bus wpa_supplicant is not how Wi-Fi is set up here (wpa_supplicant@wlan0 from first boot)
systemctl --root="$R" disable -q wpa_supplicant.service 2>/dev/null || true
: > "$R/etc/machine-id"
rm -f "$R"/etc/ssh/ssh_host_*
