"""Raspberry Pi Imager's "OS customisation" found on this card, which this image does not run.

Imager writes it onto the FAT partition in one of two forms: `firstrun.sh` plus
`systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target`
in cmdline.txt (Raspberry Pi OS bookworm and older), or cloud-init's `user-data` / `network-config`
(trixie-based Raspberry Pi OS). Neither fits this image: firstrun.sh calls Raspberry Pi OS tools and
assumes its layout (on Debian it fails, and `systemd.run=` makes every boot run it and then power off or
reboot), and there is no cloud-init here. So first boot says what it found, what to put into
edgeclaw.yaml instead, and takes the `systemd.run=` words out of cmdline.txt. Secrets in those files
(Wi-Fi key, password hash) are never printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FIRSTRUN = "firstrun.sh"
USER_DATA = "user-data"
NETWORK_CONFIG = "network-config"
# the words Imager adds to cmdline.txt for firstrun.sh (and nothing else starts with them)
_RUN_WORDS = re.compile(r"^(systemd\.run=|systemd\.run_success_action=|systemd\.run_failure_action=)")
_KCL_TARGET = "systemd.unit=kernel-command-line.target"
_SAFE = re.compile(r"^[A-Za-z0-9_./+ -]{1,64}$")


@dataclass
class Found:
    """What Imager's customisation asked for (only values safe to show on a console)."""

    files: list[str] = field(default_factory=list)
    hostname: str | None = None
    timezone: str | None = None
    wifi_ssid: str | None = None
    wifi_country: str | None = None
    ssh_keys: list[str] = field(default_factory=list)
    user: bool = False
    in_cmdline: bool = False

    def asked_for(self) -> list[str]:
        items = [
            f"hostname {self.hostname}" if self.hostname else "",
            f"Wi-Fi {self.wifi_ssid!r}" if self.wifi_ssid else "",
            f"{len(self.ssh_keys)} SSH key(s)" if self.ssh_keys else "",
            "a user and password" if self.user else "",
            f"time zone {self.timezone}" if self.timezone else "",
        ]
        return [i for i in items if i]


def _safe(value: Any) -> str | None:
    text = str(value).strip().strip("'\"") if value is not None else ""
    return text if _SAFE.match(text) else None


def _from_firstrun(text: str, found: Found) -> None:
    if m := re.search(r"imager_custom set_hostname\s+'?([^'\s]+)", text):
        found.hostname = _safe(m.group(1))
    if m := re.search(r"imager_custom set_timezone\s+'?([^'\s]+)", text):
        found.timezone = _safe(m.group(1))
    if m := re.search(r"imager_custom set_wlan\s+(?:-h\s+)?'([^']*)'(?:\s+'[^']*')?\s+'([A-Z]{2})'", text):
        found.wifi_ssid, found.wifi_country = _safe(m.group(1)), m.group(2)
    elif "wpa_supplicant" in text and (m := re.search(r'ssid="([^"\n]*)"', text)):
        found.wifi_ssid = _safe(m.group(1))
    found.ssh_keys = sorted(
        set(re.findall(r"\b((?:ssh-(?:ed25519|rsa)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+)", text))
    )
    found.user = "userconf" in text


def _from_cloud_init(user_data: str | None, network: str | None, found: Found) -> None:
    def load(text: str | None) -> dict[str, Any]:
        try:
            data = yaml.safe_load(text or "")
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    ud = load(user_data)
    found.hostname = _safe(ud.get("hostname"))
    found.timezone = _safe(ud.get("timezone"))
    keys = list(ud.get("ssh_authorized_keys") or [])
    for user in ud.get("users") or []:
        if isinstance(user, dict):
            keys += list(user.get("ssh_authorized_keys") or [])
            found.user = found.user or bool(user.get("passwd") or user.get("hashed_passwd"))
    found.ssh_keys = [k for k in keys if isinstance(k, str)]
    wifis = (load(network).get("network") or {}).get("wifis") or {}
    for iface in wifis.values() if isinstance(wifis, dict) else []:
        if isinstance(iface, dict) and isinstance(iface.get("access-points"), dict):
            found.wifi_ssid = _safe(next(iter(iface["access-points"]), None))
            found.wifi_country = _safe(iface.get("regulatory-domain"))
            break


def detect(fat: Path) -> Found | None:
    """Imager's customisation on the FAT partition `fat`, or None when there is none."""
    found = Found()
    cmdline = fat / "cmdline.txt"
    words = cmdline.read_text(errors="replace").split() if cmdline.exists() else []
    found.in_cmdline = any(_RUN_WORDS.match(w) for w in words)
    firstrun = fat / FIRSTRUN
    if firstrun.is_file():
        found.files.append(FIRSTRUN)
        _from_firstrun(firstrun.read_text(errors="replace"), found)
    texts = {}
    for name in (USER_DATA, NETWORK_CONFIG):
        if (fat / name).is_file():
            found.files.append(name)
            texts[name] = (fat / name).read_text(errors="replace")
    if texts:
        _from_cloud_init(texts.get(USER_DATA), texts.get(NETWORK_CONFIG), found)
    return found if found.files or found.in_cmdline else None


def clean_cmdline(fat: Path) -> list[str]:
    """Take Imager's systemd.run words out of cmdline.txt (one line, the rest kept as it is);
    returns the words removed."""
    cmdline = fat / "cmdline.txt"
    if not cmdline.exists():
        return []
    text = cmdline.read_text(errors="replace")
    words = text.split()
    removed = [w for w in words if _RUN_WORDS.match(w) or (w == _KCL_TARGET)]
    if not any(_RUN_WORDS.match(w) for w in removed):
        return []
    data = (" ".join(w for w in words if w not in removed) + "\n").encode()
    with open(cmdline, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return removed


def message(found: Found, removed: list[str]) -> list[str]:
    """What the console says: found, not run, what to write instead."""
    what = ", ".join(found.asked_for()) or "settings"
    files = " and ".join(found.files) or "cmdline.txt"
    lines = [
        f"Raspberry Pi Imager's OS customisation is on this card ({files}: {what}).",
        "This EdgeClaw image does not run it (it is made for Raspberry Pi OS). Put the settings into "
        "edgeclaw.yaml on the boot partition instead (see edgeclaw.yaml.example there):",
    ]
    if found.hostname:
        lines.append(f"  hostname: {found.hostname}")
    if found.timezone:
        lines.append(f"  timezone: {found.timezone}")
    ssid = f'"{found.wifi_ssid}"' if found.wifi_ssid else "YOUR-NETWORK"
    lines.append(f"  wifi: {{ssid: {ssid}, psk: YOUR-PASSPHRASE, country: {found.wifi_country or 'GB'}}}")
    lines.append("  ssh: {authorized_keys: [the line from your id_ed25519.pub]}")
    if found.user:
        lines.append("There is no password login on this image (no user is created): log in with an SSH key.")
    if removed:
        lines.append(f"Removed from cmdline.txt so it is not run on every boot: {' '.join(removed)}")
    if FIRSTRUN in found.files or USER_DATA in found.files:
        holds = "they hold" if len(found.files) > 1 else "it holds"
        lines.append(
            f"Delete {files} from the boot partition: {holds} your Wi-Fi key and password hash "
            "(this message repeats until then)."
        )
    return lines
