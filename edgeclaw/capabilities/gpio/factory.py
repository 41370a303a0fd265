"""Which gpiozero pin factory drives the pins, and why; the one decision `edgeclaw doctor` repeats.

Two answers only. A simulated board (node.hardware: simulated) gets MockFactory. Anything else gets
LGPIOFactory, which drives the kernel's GPIO character devices (/dev/gpiochip*, the only GPIO
devices the hardened unit allows, DeviceAllow=char-gpiochip). gpiozero's own fallback chain is never
used: it would end at NativeFactory, which needs /dev/gpiomem (absent on Debian's kernel, not in
DeviceAllow=) or /dev/mem (root), and fails later and less clearly; so when lgpio or a gpiochip is
missing the node says so with a code and the fix, and keeps running without the pins.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LGPIO_FIX = (
    "install lgpio into the node's Python: pip install lgpio (in the node's venv; from source it needs "
    "swig, gcc and python3-dev). On Raspberry Pi OS: sudo apt install python3-lgpio and a venv made "
    "with --system-site-packages (the Ansible role does this)"
)
CHIP_FIX = (
    "on a board, load its GPIO controller driver (ls /dev/gpiochip* must list it); on a PC or in a "
    "container set node.hardware: simulated"
)


class PinFactoryError(Exception):
    """No pin driver for this machine: `code` for the invoke error and logs, `fix` for doctor."""

    def __init__(self, code: str, message: str, fix: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class Choice:
    name: str  # gpiozero's class: LGPIOFactory or MockFactory
    reason: str


def gpiochips(dev: Path = Path("/dev")) -> list[str]:
    return sorted(str(p) for p in dev.glob("gpiochip*"))


def lgpio_importable() -> bool:
    return importlib.util.find_spec("lgpio") is not None


def choose(
    simulated: bool,
    *,
    chips: Callable[[], list[str]] | None = None,
    has_lgpio: Callable[[], bool] | None = None,
) -> Choice:
    """The factory for this machine, or PinFactoryError saying what is missing. `chips`/`has_lgpio`
    look at another machine (doctor's host root); default: this one."""
    if simulated:
        return Choice("MockFactory", "node.hardware: simulated (no pins are driven)")
    found = (chips or gpiochips)()
    if not found:
        raise PinFactoryError(
            "GPIO_NO_CHIP", "no /dev/gpiochip* here: the kernel has no GPIO controller driver", CHIP_FIX
        )
    if not (has_lgpio or lgpio_importable)():
        raise PinFactoryError(
            "GPIO_NO_LGPIO",
            f"{', '.join(found)} present but the lgpio module is missing, so there is no pin driver "
            "(gpiozero's NativeFactory would need /dev/gpiomem or /dev/mem, which the service may not open)",
            LGPIO_FIX,
        )
    return Choice("LGPIOFactory", f"real board: {', '.join(found)} and lgpio importable")


# upstream device trees' first `compatible` -> a revision code of that model (gpiozero needs one for
# the header layout; memory size and PCB revision do not change the pins)
REVISION_BY_COMPATIBLE = {
    "raspberrypi,3-model-b": 0xA02082,
    "raspberrypi,3-model-b-plus": 0xA020D3,
    "raspberrypi,3-model-a-plus": 0x9020E0,
    "raspberrypi,3-compute-module": 0xA020A0,
    "raspberrypi,model-zero-2-w": 0x902120,
    "raspberrypi,4-model-b": 0xC03111,
    "raspberrypi,400": 0xC03130,
    "raspberrypi,4-compute-module": 0xB03140,
    "raspberrypi,5-model-b": 0xC04170,
}


def board_revision(proc: Path = Path("/proc")) -> int | None:
    """The Pi's revision code: the firmware's /system/linux,revision, else cpuinfo's Revision, else the
    device tree's model. The last one matters where no Pi firmware filled the first two in (U-Boot, an
    emulator), where gpiozero itself gives up with PinUnknownPi."""
    with contextlib.suppress(OSError):
        raw = (proc / "device-tree/system/linux,revision").read_bytes()
        if len(raw) >= 4:
            return int.from_bytes(raw[:4], "big")
    with contextlib.suppress(OSError, ValueError):
        for line in (proc / "cpuinfo").read_text().splitlines():
            if line.startswith("Revision"):
                return int(line.split(":", 1)[1].strip()[-6:], 16)
    with contextlib.suppress(OSError):
        for compatible in (proc / "device-tree/compatible").read_bytes().split(b"\0"):
            code = REVISION_BY_COMPATIBLE.get(compatible.decode(errors="replace"))
            if code is not None:
                return code
    return None


def make_factory(simulated: bool) -> Any:
    """The gpiozero factory `choose` picked; PinFactoryError when it cannot be made."""
    choice = choose(simulated)
    if choice.name == "MockFactory":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    revision = board_revision()
    if revision is None:
        raise PinFactoryError(
            "GPIO_BOARD_UNKNOWN",
            "not a Raspberry Pi that gpiozero knows (no revision in /proc/device-tree/system/linux,revision "
            "or /proc/cpuinfo, and an unknown /proc/device-tree/compatible)",
            "EdgeClaw's GPIO uses the Raspberry Pi 40-pin header layout; on other boards set "
            "node.hardware: simulated or leave gpio disabled",
        )
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        known: int = revision

        class BoardLGPIOFactory(LGPIOFactory):
            """LGPIOFactory with the revision found by board_revision()."""

            def _get_revision(self) -> int:
                return known

        return BoardLGPIOFactory()
    except Exception as exc:  # e.g. lgpio.error: 'can not open gpiochip' (permissions, busy)
        raise PinFactoryError(
            "GPIO_CHIP_UNAVAILABLE",
            f"lgpio could not open the GPIO chip: {type(exc).__name__}: {exc}",
            "the service user must be in the gpio group and the unit must allow char-gpiochip; "
            "run edgeclaw doctor",
        ) from exc
