#!/usr/bin/env bash
# The per-build layer on top of the cached base: EdgeClaw's venv from aarch64 wheels (pip under
# qemu-user, no index), the unit files from systemd/ (the same ones the Ansible role installs), and
# the image's own first-boot, network, SSH and journald settings (image/rootfs/).
#   app-layer.sh ROOTFS WHEEL WHEELHOUSE EXTRAS
set -euo pipefail
R=$1 WHEEL=$2 HOUSE=$3 EXTRAS=$4
HERE=$(cd "$(dirname "$0")/.." && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=/opt/edgeclaw/venv
# a clean environment inside the chroot: the host's PIP_*/PYTHON* settings are not the image's
in_root() { chroot "$R" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# venv: python3 -m venv inside the arm64 root, then pip from the wheelhouse only
mkdir -p "$R/tmp/edgeclaw-wheels"
cp "$WHEEL" "$HOUSE"/*.whl "$R/tmp/edgeclaw-wheels/"
in_root /usr/bin/python3 -m venv "$VENV"
spec="edgeclaw${EXTRAS:+[$EXTRAS]} @ file:///tmp/edgeclaw-wheels/$(basename "$WHEEL")"
in_root PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q --no-index \
  --find-links /tmp/edgeclaw-wheels "$spec"
rm -rf "$R/tmp/edgeclaw-wheels" "$R/root/.cache/pip"
in_root "$VENV/bin/edgeclaw" --version

# units and their companions, as systemd/ documents their installed paths
install -D -m 0644 "$REPO/systemd/edgeclaw.service" "$R/usr/lib/systemd/system/edgeclaw.service"
install -D -m 0644 "$REPO/systemd/sysusers.d/edgeclaw.conf" "$R/usr/lib/sysusers.d/edgeclaw.conf"
install -D -m 0644 "$REPO/systemd/tmpfiles.d/edgeclaw.conf" "$R/usr/lib/tmpfiles.d/edgeclaw.conf"
install -D -m 0644 "$REPO/systemd/udev/60-edgeclaw-gpio.rules" "$R/etc/udev/rules.d/60-edgeclaw-gpio.rules"
ln -sfn "$VENV/bin/edgeclaw" "$R/usr/local/bin/edgeclaw"

# the image's own files (first boot, network, SSH, journald, fstab, hostname)
cp -a --no-preserve=ownership "$HERE/rootfs/." "$R/"
install -D -m 0644 "$HERE/edgeclaw.yaml.example" "$R/usr/share/doc/edgeclaw/edgeclaw.yaml.example"
mkdir -p "$R/etc/edgeclaw" "$R/var/lib/edgeclaw"
chmod 0700 "$R/var/lib/edgeclaw"

# users and groups on the host's systemd-sysusers (no emulation), then the state dir's owner
systemd-sysusers --root="$R" >/dev/null
systemd-tmpfiles --root="$R" --create /usr/lib/tmpfiles.d/edgeclaw.conf >/dev/null 2>&1 || true
# keys only: no password for anyone
in_root passwd -l root >/dev/null
# raspi-firmware regenerates cmdline.txt on kernel upgrades: keep it on the root label
grep -q '^ROOTPART=LABEL=rootfs' "$R/etc/default/raspi-firmware" 2>/dev/null \
  || echo 'ROOTPART=LABEL=rootfs' >> "$R/etc/default/raspi-firmware"

systemctl --root="$R" enable -q systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  ssh.service edgeclaw-ssh-hostkeys.service edgeclaw.service edgeclaw-firstboot.service
# the D-Bus wpa_supplicant is not how Wi-Fi is set up here (wpa_supplicant@wlan0 from first boot)
systemctl --root="$R" disable -q wpa_supplicant.service 2>/dev/null || true
: > "$R/etc/machine-id"
rm -f "$R"/etc/ssh/ssh_host_*
