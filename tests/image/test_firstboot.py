"""`edgeclaw firstboot` as the image's first-boot unit runs it, against a scratch root directory:
a good edgeclaw.yaml becomes a configured node and leaves no secret on the FAT partition; a bad
one changes nothing and says where the problem is."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeclaw.cli import main
from edgeclaw.config import parse_config
from edgeclaw.platform.state import StateDir

ROOT_DIR = Path(__file__).resolve().parents[2]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd3BTA0tGRBNdDU0GJ8vHzwzYVbMp1ZRDHgp3hxLfyi me@laptop"
TOKEN = "gw-secret-token-4b1d"
PASSPHRASE = "correct horse battery"


def setup_code(url: str = "ws://192.168.1.20:18789", token: str = "boot-strap-7e57") -> str:
    body = json.dumps({"url": url, "bootstrapToken": token}).encode()
    return "oc-pair://" + base64.urlsafe_b64encode(body).decode().rstrip("=")


def run_cli(source: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process (as the unit runs it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "edgeclaw", "firstboot", "--root", str(root), *extra, str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def run(source: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The same command line through edgeclaw.cli.main in this process (fast)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["firstboot", "--root", str(root), *extra, str(source)])
    return subprocess.CompletedProcess([], code, out.getvalue(), err.getvalue())


@pytest.fixture
def card(tmp_path: Path) -> tuple[Path, Path]:
    """(FAT partition dir, target root) with the bits of a Debian root the command touches."""
    fat = tmp_path / "firmware"
    root = tmp_path / "root"
    fat.mkdir()
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tedgeclaw\n")
    (root / "etc/hostname").write_text("edgeclaw\n")
    return fat, root


def files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_good_file_configures_the_node_and_leaves_no_secret_on_fat(card: tuple[Path, Path]) -> None:
    fat, root = card
    doc = {
        "gateway": {"url": "wss://gw.example.net:18789", "token": TOKEN},
        "node": {"display_name": "Garage Pi #2"},
        "wifi": {"ssid": "Home Net", "psk": PASSPHRASE, "country": "gb"},
        "ssh": {"authorized_keys": [SSH_KEY]},
        "log": {"level": "debug"},
        "gpio": {"enabled": True, "pins": {"relay": {"pin": "GPIO17", "kind": "output", "safe_state": 0}}},
    }
    source = fat / "edgeclaw.yaml"
    source.write_text(yaml.safe_dump(doc))
    proc = run_cli(source, root)
    assert proc.returncode == 0, proc.stderr
    # the FAT partition: file gone, a report that names what happened and holds no secret
    assert not source.exists()
    report = (fat / "edgeclaw-firstboot.txt").read_text()
    assert "Applied" in report and "garage-pi-2" in report
    assert TOKEN not in report and PASSPHRASE not in report and TOKEN not in proc.stderr
    # secrets are 0600 files on the root
    token_file = root / "etc/edgeclaw/gateway.token"
    assert token_file.read_text().strip() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    wpa = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert stat.S_IMODE(wpa.stat().st_mode) == 0o600
    assert "country=GB" in wpa.read_text() and PASSPHRASE not in files_text(root)
    assert f"ssid={b'Home Net'.hex()}" in wpa.read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service").is_symlink()
    # identity, hostname, SSH key
    identity = StateDir(root / "var/lib/edgeclaw").load_identity()
    assert f"device id {identity.device_id}" in report
    assert stat.S_IMODE((root / "var/lib/edgeclaw").stat().st_mode) == 0o700
    assert (root / "etc/hostname").read_text() == "garage-pi-2\n"
    assert "127.0.1.1\tgarage-pi-2" in (root / "etc/hosts").read_text()
    assert (root / "root/.ssh/authorized_keys").read_text().strip() == SSH_KEY
    # the written config is one the daemon accepts, and points at the token file, not the token
    text = (root / "etc/edgeclaw/config.yaml").read_text()
    assert TOKEN not in text
    config = parse_config(text, env={"EDGECLAW_GATEWAY_TOKEN": TOKEN})
    assert config.gateway.url == "wss://gw.example.net:18789"
    assert config.gateway.token_file == "/etc/edgeclaw/gateway.token"
    assert config.node.display_name == "Garage Pi #2"
    assert config.core.log.level == "debug"
    assert "relay" in config.capabilities["gpio"].pins


def test_setup_code_carries_the_url_and_is_stored_0600(card: tuple[Path, Path]) -> None:
    fat, root = card
    code = setup_code()
    source = fat / "edgeclaw.yaml"
    source.write_text(f'gateway:\n  setup_code: "{code}"\nhostname: shed\n')
    proc = run(source, root)
    assert proc.returncode == 0, proc.stderr
    stored = root / "var/lib/edgeclaw/setup-code"
    assert stored.read_text().strip() == code
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    config = yaml.safe_load((root / "etc/edgeclaw/config.yaml").read_text())
    assert config["gateway"] == {
        "url": "ws://192.168.1.20:18789",
        "setup_code_file": "/var/lib/edgeclaw/setup-code",
    }
    assert (root / "etc/hostname").read_text() == "shed\n"
    assert code not in (fat / "edgeclaw-firstboot.txt").read_text()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("gateway:\n  url: http://gw:18789\n  token: x\n", ":2: gateway.url: must be a ws:// or wss:// URL"),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: a\n  setup_code: b\n",
            "gateway: give either token or setup_code",
        ),
        ("gateway:\n  url: ws://10.0.0.2:1\n", "gateway: needs token or setup_code"),
        ('gateway:\n  setup_code: "oc-pair://bm9wZQ"\n', ":2: gateway.setup_code: not a setup code"),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: t\nwifi:\n  ssid: x\n  psk: short\n  country: DE\n",
            ":6: wifi.psk: a WPA passphrase is 8 to 63",
        ),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: t\nwifi:\n  ssid: x\n  psk: longenough\n",
            ":4: wifi.country: is required",
        ),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: t\nssh:\n  authorized_keys:\n    - not a key\n",
            ":6: ssh.authorized_keys[0]: not an OpenSSH public key",
        ),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: t\ncamra:\n  enabled: true\n",
            ":4: camra: unknown section",
        ),
        (
            "gateway:\n  url: ws://10.0.0.2:1\n  token: t\ngpio:\n  enabled: true\n  pins:\n    r:\n      pin: BOARD2\n",
            "gpio.pins",
        ),
        ("gateway:\n  url: ws://10.0.0.2:1\n  token: t\nhostname: -bad-\n", ":4: hostname: letters, digits"),
        ("gateway: [oops\n", "not valid YAML"),
        ("", "the file is empty"),
    ],
)
def test_bad_file_changes_nothing_and_says_where(card: tuple[Path, Path], body: str, where: str) -> None:
    fat, root = card
    source = fat / "edgeclaw.yaml"
    source.write_text(body)
    before = sorted(str(p) for p in root.rglob("*"))
    proc = run(source, root)
    assert proc.returncode == 78, proc.stderr
    assert where in proc.stderr
    assert "the EdgeClaw node will not start" in proc.stderr
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written
    # left for the user to fix, but without its secrets (the FAT partition has no permissions)
    left = source.read_text()
    kept = [ln for ln in body.splitlines() if not ln.strip().startswith(("token:", "setup_code:", "psk:"))]
    assert all(line in left for line in kept)
    assert "token: x" not in left and "token: t\n" not in left and "psk: short" not in left
    assert where in (fat / "edgeclaw-firstboot.txt").read_text()


def test_check_validates_without_changing_anything(card: tuple[Path, Path]) -> None:
    fat, root = card
    source = fat / "edgeclaw.yaml"
    source.write_text(
        f"gateway:\n  url: ws://10.0.0.2:18789\n  token: {TOKEN}\nnode:\n  display_name: Barn\n"
    )
    proc = run(source, root, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "gateway: ws://10.0.0.2:18789 (token)" in proc.stdout and "hostname: barn" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    assert (
        source.exists()
        and not (root / "etc/edgeclaw").exists()
        and not (fat / "edgeclaw-firstboot.txt").exists()
    )


def test_example_in_the_image_is_valid_once_filled_in(card: tuple[Path, Path]) -> None:
    """The shipped example, with only its placeholder secret replaced, passes as it is."""
    fat, root = card
    example = (ROOT_DIR / "image/edgeclaw.yaml.example").read_text()
    source = fat / "edgeclaw.yaml"
    source.write_text(example)
    proc = run(source, root, "--check")
    assert proc.returncode == 78 and "gateway.setup_code" in proc.stderr  # the placeholder is not a code
    source.write_text(example.replace("oc-pair://PASTE-THE-SETUP-CODE-HERE", setup_code()))
    proc = run(source, root, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "display name: Garage Pi" in proc.stdout and "hostname: garage-pi" in proc.stdout


def test_under_the_read_only_root_system_files_are_written_through_to_the_card(
    card: tuple[Path, Path], tmp_path: Path
) -> None:
    """With / a RAM overlay, first boot's system files also land on the real root (the overlay's
    lower layer, /run/edgeclaw-volatile/lower on the device); /etc/edgeclaw and /var/lib/edgeclaw
    are bind mounts of the card's own directories there, so they are not copied."""
    fat, root = card
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/hostname").write_text("edgeclaw\n")
    source = fat / "edgeclaw.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "gateway": {"url": "ws://10.0.0.2:18789", "token": TOKEN},
                "node": {"display_name": "Barn"},
                "wifi": {"ssid": "Farm", "psk": PASSPHRASE, "country": "DE"},
                "ssh": {"authorized_keys": [SSH_KEY]},
            }
        )
    )
    (root / "root/.ssh").mkdir(parents=True, mode=0o700)
    proc = run(source, root, "--persist-to", str(lower))
    assert proc.returncode == 0, proc.stderr
    assert "written through to the card" in (fat / "edgeclaw-firstboot.txt").read_text()
    for rel in ("etc/hostname", "etc/hosts", "etc/wpa_supplicant/wpa_supplicant-wlan0.conf",
                "root/.ssh/authorized_keys"):  # fmt: skip
        assert (lower / rel).read_bytes() == (root / rel).read_bytes(), rel
        assert (lower / rel).stat().st_mode == (root / rel).stat().st_mode, rel
    assert (lower / "etc/hostname").read_text() == "barn\n"
    assert stat.S_IMODE((lower / "root/.ssh").stat().st_mode) == 0o700
    wants = lower / "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service"
    assert os.readlink(wants) == "/lib/systemd/system/wpa_supplicant@.service"
    assert not (lower / "etc/edgeclaw").exists() and not (lower / "var/lib/edgeclaw").exists()
    assert not list(lower.rglob("*.edgeclaw-new"))
    # on the device the lower root is found only when / is the overlay (its mount point exists)
    from edgeclaw.firstboot import volatile_lower

    assert volatile_lower(root) is None


# board settings: timezone, dtoverlay/dtparam ---------------------------------------------------------
BOARD_BASE = f"gateway:\n  url: ws://10.0.0.2:18789\n  token: {TOKEN}\n"
# what Debian's raspi-firmware (etc/kernel/postinst.d/z50-raspi-firmware) writes on a kernel upgrade:
# its own lines, then /etc/default/raspi-firmware-custom appended under this comment
REGENERATED = (
    "# Do not modify this file!\n#\n# It is automatically generated upon install or update of either the\n"
    "# firmware or the Linux kernel.\n\narm_64bit=1\n\nenable_uart=1\nupstream_kernel=1\n\n"
    "kernel=vmlinuz-6.12.48+deb13-arm64\n"
)


def with_zoneinfo(root: Path, *zones: str) -> None:
    """The target root's tz database (the image ships tzdata), copied from the host's."""
    for zone in zones:
        dest = root / "usr/share/zoneinfo" / zone
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((Path("/usr/share/zoneinfo") / zone).read_bytes())
    (root / "usr/share/zoneinfo/zone.tab").write_text("# not a zone\n")


def firmware_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(("dtoverlay=", "dtparam="))]


def test_timezone_and_hat_overlays_are_applied_and_survive_a_kernel_upgrade(card: tuple[Path, Path]) -> None:
    fat, root = card
    with_zoneinfo(root, "Europe/Berlin", "UTC")
    (fat / "config.txt").write_text(REGENERATED + "[pi4]\narm_boost=1\n")
    source = fat / "edgeclaw.yaml"
    source.write_text(
        BOARD_BASE + "timezone: Europe/Berlin\n"
        "dtoverlay:\n  - w1-gpio,gpiopin=4\n  - i2c-rtc,ds3231\ndtparam:\n  - i2c_arm=on\n  - spi=on\n"
    )
    proc = run(source, root, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "timezone: Europe/Berlin" in proc.stdout
    assert "config.txt: dtoverlay=w1-gpio,gpiopin=4, dtoverlay=i2c-rtc,ds3231" in proc.stdout
    assert not (root / "etc/localtime").exists()  # --check changes nothing
    proc = run(source, root)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert (root / "etc/timezone").read_text() == "Europe/Berlin\n"
    want = ["dtoverlay=w1-gpio,gpiopin=4", "dtoverlay=i2c-rtc,ds3231", "dtparam=i2c_arm=on", "dtparam=spi=on"]
    config_txt = (fat / "config.txt").read_text()
    assert firmware_lines(config_txt) == want
    # after the [pi4] filter the lines need [all] again, or only a Pi 4 would load them
    assert config_txt.index("[pi4]") < config_txt.rindex("[all]") < config_txt.index("dtoverlay=")
    assert config_txt.startswith(REGENERATED + "[pi4]\narm_boost=1\n")  # the firmware's own lines kept
    custom = (root / "etc/default/raspi-firmware-custom").read_text()
    assert firmware_lines(custom) == want
    assert "REBOOT NEEDED" in proc.stderr and "REBOOT NEEDED" in (fat / "edgeclaw-firstboot.txt").read_text()
    assert "time zone Europe/Berlin" in proc.stderr
    # a kernel upgrade rewrites config.txt from scratch and appends raspi-firmware-custom: still there
    (fat / "config.txt").write_text(
        REGENERATED + "\n# Inserted by /etc/default/raspi-firmware-custom\n" + custom
    )
    assert firmware_lines((fat / "config.txt").read_text()) == want
    # a later first boot replaces the block (in both files) instead of adding a second one
    source.write_text(BOARD_BASE + "dtparam: [audio=off]\ntimezone: UTC\n")
    proc = run(source, root)
    assert proc.returncode == 0, proc.stderr
    assert firmware_lines((fat / "config.txt").read_text()) == ["dtparam=audio=off"]
    assert firmware_lines((root / "etc/default/raspi-firmware-custom").read_text()) == ["dtparam=audio=off"]
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"


def test_board_files_are_written_through_under_the_read_only_root(
    card: tuple[Path, Path], tmp_path: Path
) -> None:
    fat, root = card
    with_zoneinfo(root, "America/New_York")
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    source = fat / "edgeclaw.yaml"
    source.write_text(BOARD_BASE + "timezone: America/New_York\ndtoverlay: [gpio-fan]\n")
    proc = run(source, root, "--persist-to", str(lower))
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(lower / "etc/localtime") == "/usr/share/zoneinfo/America/New_York"
    assert (lower / "etc/timezone").read_text() == "America/New_York\n"
    assert firmware_lines((lower / "etc/default/raspi-firmware-custom").read_text()) == ["dtoverlay=gpio-fan"]


def test_check_on_a_pc_without_a_tz_database_checks_the_zone_name_only(card: tuple[Path, Path]) -> None:
    fat, root = card  # root has no usr/share/zoneinfo
    source = fat / "edgeclaw.yaml"
    source.write_text(BOARD_BASE + "timezone: Europe/Berlin\n")
    proc = run(source, root, "--check")
    assert proc.returncode == 0 and "timezone: Europe/Berlin" in proc.stdout, proc.stderr
    source.write_text(BOARD_BASE + "timezone: ../etc/passwd\n")
    assert run(source, root, "--check").returncode == 78
    # applied to a root without that zone: refused and rolled back, never a dangling /etc/localtime
    source.write_text(BOARD_BASE + "timezone: Europe/Berlin\n")
    proc = run(source, root)
    assert proc.returncode == 1 and "install tzdata" in proc.stderr, proc.stderr
    assert not (root / "etc/localtime").is_symlink() and not (root / "etc/edgeclaw/config.yaml").exists()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("timezone: Mars/Olympus\n", ":4: timezone: unknown time zone 'Mars/Olympus'"),
        ("timezone: ../../../etc/passwd\n", ":4: timezone: unknown time zone"),
        ("timezone: zone.tab\n", ":4: timezone: unknown time zone"),  # in zoneinfo, but not a zone
        ('dtoverlay:\n  - w1-gpio\n  - "x\\ndtoverlay=evil"\n', ":6: dtoverlay[1]: overlay name"),
        ('dtoverlay:\n  - "w1-gpio,gpiopin=4 #"\n', ":5: dtoverlay[0]: overlay parameter"),
        ('dtoverlay:\n  - "w1-gpio,=4"\n', ":5: dtoverlay[0]: overlay parameter"),
        ('dtoverlay: ["i2c-rtc,ds3231\\nkernel=evil.img"]\n', "dtoverlay[0]: overlay parameter"),
        ("dtparam:\n  - i2c_arm\n", ":5: dtparam[0]: dtparam 'i2c_arm' is not name=value"),
        ("dtparam:\n  - spi=on\n  - 'audio=on\r\ninitramfs evil'\n", ":6: dtparam[1]"),
        ("dtparam: {i2c_arm: on}\n", ":4: dtparam: must be a list"),
        ("dtparam: [on]\n", "dtparam[0]: must be text, got bool"),
    ],
)
def test_bad_board_settings_change_nothing(card: tuple[Path, Path], body: str, where: str) -> None:
    fat, root = card
    with_zoneinfo(root, "UTC")
    (fat / "config.txt").write_text(REGENERATED)
    source = fat / "edgeclaw.yaml"
    source.write_text(BOARD_BASE + body)
    before = sorted(str(p) for p in root.rglob("*"))
    proc = run(source, root)
    assert proc.returncode == 78, proc.stderr
    assert where in proc.stderr, proc.stderr
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert (fat / "config.txt").read_text() == REGENERATED


# an unprovisioned card under a real systemd ---------------------------------------------------------
IMAGER_CMDLINE = (
    "console=tty0 root=LABEL=rootfs rw rootwait systemd.run=/boot/firstrun.sh "
    "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
)


def test_unprovisioned_card_boots_with_no_failed_unit_and_says_what_it_waits_for(tmp_path: Path) -> None:
    """The repo's units (edgeclaw.service, and the image's first-boot and notice units, enabled as the
    image enables them) in systemd-nspawn on the cached Debian rootfs, EdgeClaw installed from this
    tree; no edgeclaw.yaml, but Raspberry Pi Imager's firstrun.sh and its cmdline.txt words."""
    from tests.support import nspawn

    reason = nspawn.available()
    if reason:
        pytest.fail(f"needs systemd-nspawn: {reason}")
    base = nspawn.rootfs()
    layer = nspawn.install_layer(base, tmp_path / "install")
    extra = tmp_path / "card"
    units = extra / "etc/systemd/system"
    (units / "sysinit.target.wants").mkdir(parents=True)
    (units / "multi-user.target.wants").mkdir(parents=True)
    for unit in ("edgeclaw-notice.service", "edgeclaw-firstboot.service"):
        (units / unit).write_text((ROOT_DIR / "image/rootfs/etc/systemd/system" / unit).read_text())
        (units / "sysinit.target.wants" / unit).symlink_to(f"../{unit}")
    (units / "multi-user.target.wants/edgeclaw.service").symlink_to("../edgeclaw.service")
    fat = extra / "boot/firmware"
    fat.mkdir(parents=True)
    (fat / "cmdline.txt").write_text(IMAGER_CMDLINE)
    (fat / "firstrun.sh").write_text(
        "#!/bin/bash\n/usr/lib/raspberrypi-sys-mods/imager_custom set_hostname shedpi\n"
    )
    ct = nspawn.Container([extra, layer, base], workdir=tmp_path / "ct")
    try:
        ct.boot(timeout=90)
        failed = ct.sh("systemctl --failed --no-legend --plain", check=False).stdout
        assert failed.strip() == "", failed
        node = ct.show("edgeclaw.service", "ActiveState", "ConditionResult", "Result")
        assert node == {"ActiveState": "inactive", "ConditionResult": "no", "Result": "success"}, node
        journal = ct.journal("edgeclaw-notice.service")
        assert "EdgeClaw: waiting for /boot/firmware/edgeclaw.yaml" in journal, journal
        assert (
            "Raspberry Pi Imager's OS customisation is on this card (firstrun.sh: hostname shedpi)" in journal
        )
        assert "hostname: shedpi" in journal
        issue = ct.sh("cat /run/issue.d/50-edgeclaw.issue", check=False).stdout
        assert "waiting for /boot/firmware/edgeclaw.yaml" in issue
        cmdline = ct.sh("cat /boot/firmware/cmdline.txt", check=False).stdout
        assert cmdline == "console=tty0 root=LABEL=rootfs rw rootwait\n"
    finally:
        ct.stop()
