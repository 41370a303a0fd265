"""The card booted as a Raspberry Pi 3 B boots it: QEMU's `raspi3b` board (BCM2837, its SD host, its
dwc2 USB, pinctrl-bcm2835 GPIO), the kernel, initramfs and DTB from the card's own FAT partition and
its own cmdline.txt. The board's only network is QEMU's user network inside a loopback-only namespace,
forwarding one guest address to a real OpenClaw gateway on 127.0.0.1 (and SSH in, for reading the
kernel's view of the pins). One boot serves every check (tests/image/raspi_qemu.py runs it).

What rests on the emulator: QEMU 7.2's bcm2835_gpio keeps a pin's level register as last written
whatever its function, and ignores the pull registers; so "the level after release" shown here is the
kernel's bookkeeping on a model, and the pull that holds it on a real board is not observable (see the
GPIO safe state section of the README).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.image.conftest import REPO, Built, report  # the image branch moved `built` there

# the first test carries the session's image build (when it has not happened yet) and the boot
# (bounded by itself: 1000 s); the card's build is bounded in conftest
pytestmark = pytest.mark.timeout(3600)
SAFE_LEVEL = "lo"  # the relay's safe_state: 0, active high


@pytest.fixture(scope="module")
def raspi(
    built: Built, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("raspi3b")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private",
         sys.executable, "-m", "tests.image.raspi_qemu", str(built.image), str(work)],
        capture_output=True, text=True, timeout=1000, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    (work / "result.json").write_text(json.dumps(result, indent=1))  # beside console.log, for a look later
    t = result.get("timings", {})
    report(
        request,
        f"raspi3b: /init {t.get('init')} s, multi-user {t.get('multi_user')} s, edgeclaw READY "
        f"{t.get('edgeclaw_ready')} s, connected {t.get('connected')} s (gateway start "
        f"{result.get('gateway_start_s')} s, total {result.get('total_s')} s)",
    )
    yield result
    for name in ("card.img",):  # 2 GiB sparse; keep the console log and the rest
        (work / name).unlink(missing_ok=True)


def diag(result: dict[str, Any]) -> str:
    """What to look at when a check fails: the error, the console's tail, the gateway's."""
    skip = {"console_tail", "gateway_log_tail", "device_info"}
    head = json.dumps({k: v for k, v in result.items() if k not in skip}, indent=1)
    return f"{head[-5000:]}\n--- console tail ---\n{result.get('console_tail', '')}\n--- gateway ---\n" + str(
        result.get("gateway_log_tail", "")
    )


def test_board_boots_the_card_with_its_own_cmdline_and_gets_usb_network(raspi: dict[str, Any]) -> None:
    assert "error" not in raspi, diag(raspi)
    t = raspi["timings"]
    assert t["init"] < t["multi_user"] < t["connected"], t
    # the card's own cmdline.txt: its consoles swapped for the PL011 and the watchdog driver kept off
    # (both explained in raspi_qemu.board_cmdline); nothing else added or dropped
    card = [a for a in raspi["card_cmdline"].split() if not a.startswith("console=")]
    assert raspi["cmdline"].split() == ["console=ttyAMA0,115200", *card, "modprobe.blacklist=bcm2835_wdt"]
    assert any(a.startswith("root=") for a in card) and "rootwait" in card, card
    # cdc_ether over QEMU's dwc2: usb0 configured by the image's 30-usb.network, by DHCP
    assert re.search(r"usb0\s+inet 10\.0\.2\.\d+/24", raspi["usb0"]), raspi["usb0"]


def test_node_pairs_with_the_real_gateway_and_answers_an_invoke(raspi: dict[str, Any]) -> None:
    assert "error" not in raspi, diag(raspi)
    info = raspi["device_info"]
    assert info["architecture"] == "aarch64", info
    assert raspi["node_id"], diag(raspi)


def test_gpio_write_through_the_gateway_drives_the_line_in_the_kernel(raspi: dict[str, Any]) -> None:
    assert "error" not in raspi, diag(raspi)
    # the node runs under the real hardened unit: devices closed but for the GPIO character devices
    assert "DevicePolicy=closed" in raspi["unit_devices"] and "char-gpiochip rw" in raspi["unit_devices"]
    assert "pinctrl-bcm2835" in raspi["gpiochip"] or "bcm2835-gpio" in raspi["gpiochip"], raspi["gpiochip"]
    frame = raspi["gpio_write"]
    assert frame.get("ok"), frame
    pin = raspi["pin_after_write"]
    assert pin["function"] == "gpio_out" and pin["level"] == "hi", pin


def test_killed_node_leaves_the_relay_at_its_safe_state(raspi: dict[str, Any]) -> None:
    """SIGKILL: no shutdown code runs in the daemon; the unit's ExecStopPost (`edgeclaw gpio-safe`)
    requests the line at 0 with a pull-down and exits. Read while the unit waits to restart."""
    assert "error" not in raspi, diag(raspi)
    assert raspi["pin_after_write"]["level"] == "hi", raspi["pin_after_write"]
    assert raspi["substate_after_kill"] == "auto-restart", raspi["kill_output"]
    pin = raspi["pin_after_kill"]
    assert pin["level"] == SAFE_LEVEL, pin
    # mainline pinctrl-bcm2835 (Debian's kernel) turns the released line into an input; the pull
    # requested by gpio-safe is what holds it on a real board (not modelled by QEMU 7.2)
    if raspi["persist_param"] in ("absent", "N"):
        assert pin["function"] == "gpio_in", pin
    journal = raspi["gpio_safe_journal"]
    assert re.search(r"gpio-safe: set relay \(GPIO17\) to 0", journal), journal
    # the same line through gpiolib (libgpiod's gpioget, on cards that ship the gpiod package)
    if raspi["gpioget"] != "no-gpiod":
        assert raspi["gpioget"].endswith("=inactive"), raspi["gpioget"]


def test_runtime_watchdog_is_configured_and_what_qemu_does_with_it(raspi: dict[str, Any]) -> None:
    """systemd's hardware watchdog setting is live on the card (RuntimeWatchdogUSec from the image's
    system.conf.d). The device itself is not exercised here: QEMU 7.2's bcm2835 PM block resets the
    board on the write that arms bcm2835_wdt (no countdown modelled), so the driver is kept off."""
    assert "error" not in raspi, diag(raspi)
    found = re.search(r"RuntimeWatchdogUSec=(\d+)s", raspi["watchdog"])
    assert found and 0 < int(found.group(1)) <= 15, raspi["watchdog"]
