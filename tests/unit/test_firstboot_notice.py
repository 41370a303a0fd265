"""What an unprovisioned card says (`edgeclaw firstboot --notice`, edgeclaw-notice.service), and
Raspberry Pi Imager's OS customisation found on the card: reported without its secrets, its
systemd.run= taken out of cmdline.txt, one reboot out of a boot that was started into it."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclaw.cli import main
from edgeclaw.firstboot_notice import notice

ROOT_DIR = Path(__file__).resolve().parents[2]
CMDLINE = "console=tty0 console=ttyS1,115200 root=LABEL=rootfs rw fsck.repair=yes net.ifnames=0 rootwait"
IMAGER_WORDS = (
    "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
)
SSH_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd3BTA0tGRBNdDU0GJ8vHzwzYVbMp1ZRDHgp3hxLfyi me@laptop"
PSK_HEX = "7f3c" * 16
PW_HASH = "$5$abcdefgh$Zq0QvOZ7u5u3rM3yQK9s5D0yH2Jrj2d7b2Bv5c6nK4C"
# the shape Raspberry Pi Imager 1.8 writes (trimmed), with its secrets
FIRSTRUN = f"""#!/bin/bash
set +e
CURRENT_HOSTNAME=`cat /etc/hostname | tr -d " \\t\\n\\r"`
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname shedpi
else
   echo shedpi >/etc/hostname
fi
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k '{SSH_PUB}'
fi
if [ -f /usr/lib/userconf-pi/userconf ]; then
   /usr/lib/userconf-pi/userconf 'pi' '{PW_HASH}'
fi
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan -h 'Home Net' '{PSK_HEX}' 'DE'
fi
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_keymap 'de'
   /usr/lib/raspberrypi-sys-mods/imager_custom set_timezone 'Europe/Berlin'
fi
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
"""
USER_DATA = f"""#cloud-config
hostname: barnpi
manage_etc_hosts: true
timezone: Europe/Paris
users:
- name: pi
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: false
  passwd: {PW_HASH}
  ssh_authorized_keys:
    - {SSH_PUB}
enable_ssh: true
"""
NETWORK_CONFIG = f"""network:
  version: 2
  wifis:
    renderer: networkd
    wlan0:
      dhcp4: true
      regulatory-domain: "FR"
      access-points:
        "Barn WiFi":
          password: "{PSK_HEX}"
      optional: true
"""


@pytest.fixture
def card(tmp_path: Path) -> tuple[Path, Path]:
    fat, root = tmp_path / "firmware", tmp_path / "root"
    fat.mkdir()
    (root / "etc").mkdir(parents=True)
    (fat / "cmdline.txt").write_text(CMDLINE + "\n")
    return fat, root


def say(fat: Path, root: Path, proc_cmdline: str | None = None) -> tuple[str, bool, list[int]]:
    reboots: list[int] = []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _, rebooting = notice(
            fat / "edgeclaw.yaml", root, proc_cmdline=proc_cmdline, reboot=lambda: reboots.append(1)
        )
    return out.getvalue(), rebooting, reboots


def test_unprovisioned_card_says_what_it_waits_for_on_console_and_login_prompt(
    card: tuple[Path, Path],
) -> None:
    fat, root = card
    out, rebooting, _ = say(fat, root)
    assert "EdgeClaw: waiting for " + str(fat / "edgeclaw.yaml") in out
    assert "edgeclaw.yaml.example" in out and "gateway.url" in out and "image/README.md" in out
    issue = (root / "run/issue.d/50-edgeclaw.issue").read_text()
    assert "waiting for" in issue and not rebooting
    # once configured: nothing to say, and the login prompt note is gone
    (root / "etc/edgeclaw").mkdir()
    (root / "etc/edgeclaw/config.yaml").write_text("gateway: {}\n")
    out, _, _ = say(fat, root)
    assert out == "" and not (root / "run/issue.d/50-edgeclaw.issue").exists()


def test_a_rejected_file_is_named_with_the_reason(card: tuple[Path, Path]) -> None:
    """The real first boot rejects a file; the notice after it repeats why, from its report."""
    fat, root = card
    (fat / "edgeclaw.yaml").write_text("gateway:\n  url: http://gw:18789\n  token: sekrit-token\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["firstboot", "--root", str(root), str(fat / "edgeclaw.yaml")]) == 78
    out, _, _ = say(fat, root)
    assert "first boot rejected" in out
    assert "edgeclaw.yaml:2: gateway.url: must be a ws:// or wss:// URL" in out
    assert "sekrit-token" not in out


def test_imager_firstrun_is_reported_removed_from_cmdline_and_rebooted_out_of_once(
    card: tuple[Path, Path],
) -> None:
    fat, root = card
    (fat / "firstrun.sh").write_text(FIRSTRUN)
    (fat / "cmdline.txt").write_text(f"{CMDLINE} {IMAGER_WORDS}\n")
    out, rebooting, reboots = say(fat, root, proc_cmdline=f"{CMDLINE} {IMAGER_WORDS}")
    assert "Raspberry Pi Imager's OS customisation is on this card (firstrun.sh:" in out
    assert "does not run it" in out
    for what in ("hostname: shedpi", "timezone: Europe/Berlin", 'ssid: "Home Net"', "country: DE",
                 "1 SSH key(s)", "no password login"):  # fmt: skip
        assert what in out, what
    assert PSK_HEX not in out and PW_HASH not in out
    assert (fat / "cmdline.txt").read_text() == CMDLINE + "\n"  # exactly the rest, kept
    assert "Removed from cmdline.txt" in out and rebooting and reboots == [1]
    assert "waiting for" in out  # and still unprovisioned
    # next boot: a normal one; the files are still reported, but no second reboot
    out, rebooting, reboots = say(fat, root, proc_cmdline=CMDLINE)
    assert "Imager" in out and "Removed from" not in out and not rebooting and reboots == []


def test_unwritable_cmdline_never_loops_reboots(
    card: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fat, root = card
    (fat / "firstrun.sh").write_text(FIRSTRUN)
    (fat / "cmdline.txt").write_text(f"{CMDLINE} {IMAGER_WORDS}\n")
    monkeypatch.setattr("edgeclaw.firstboot_notice.clean_cmdline", lambda fat: [])
    out, rebooting, reboots = say(fat, root, proc_cmdline=f"{CMDLINE} {IMAGER_WORDS}")
    assert "Imager" in out and not rebooting and reboots == []


def test_imager_cloud_init_is_reported_without_secrets(card: tuple[Path, Path]) -> None:
    fat, root = card
    (fat / "user-data").write_text(USER_DATA)
    (fat / "network-config").write_text(NETWORK_CONFIG)
    (fat / "meta-data").write_text("instance_id: rpios-image\n")
    out, rebooting, _ = say(fat, root, proc_cmdline=CMDLINE)
    assert "(user-data and network-config:" in out
    for what in ("hostname: barnpi", "timezone: Europe/Paris", 'ssid: "Barn WiFi"', "country: FR",
                 "1 SSH key(s)", "no password login"):  # fmt: skip
        assert what in out, what
    assert PSK_HEX not in out and PW_HASH not in out and not rebooting
    assert (fat / "cmdline.txt").read_text() == CMDLINE + "\n"


def test_hostile_imager_files_do_not_reach_the_console_or_issue(card: tuple[Path, Path]) -> None:
    """Values are shown only when plain; agetty escapes (backslashes) never come from FAT."""
    fat, root = card
    (fat / "user-data").write_text("hostname: 'a\\e[2Jpwned'\ntimezone: 'Europe/x\\4{eth0}'\n")
    out, _, _ = say(fat, root)
    assert "Imager" in out and "pwned" not in out and "eth0" not in out
    assert "\\" not in (root / "run/issue.d/50-edgeclaw.issue").read_text()


def test_the_cli_notice_always_exits_0(card: tuple[Path, Path]) -> None:
    fat, root = card
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "firstboot", "--notice", "--root", str(root), str(fat / "edgeclaw.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT_DIR), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0 and "waiting for" in proc.stdout, proc.stderr


def test_unit_files_skip_instead_of_failing() -> None:
    unit = (ROOT_DIR / "systemd/edgeclaw.service").read_text()
    assert "\nConditionPathExists=/etc/edgeclaw/config.yaml\n" in unit
    notice_unit = (ROOT_DIR / "image/rootfs/etc/systemd/system/edgeclaw-notice.service").read_text()
    assert "firstboot --notice" in notice_unit and "journal+console" in notice_unit
    assert "Before=sysinit.target kernel-command-line.service" in notice_unit
