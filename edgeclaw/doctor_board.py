"""`edgeclaw doctor`'s board checks: which pin factory drives GPIO and why, and whether a CSI camera
can work on this OS at all.

The pin factory answer is the daemon's own decision (edgeclaw.capabilities.gpio.factory.choose),
asked about the doctor's host root, so the two cannot disagree. The camera answer is about the OS,
not the camera: a CSI camera module needs libcamera's Raspberry Pi pipeline and the Raspberry Pi
kernel's ISP driver (bcm2835-isp / the Pi 5's PiSP), which only Raspberry Pi OS ships; Debian (and so
EdgeClaw's SD image) has neither, so picamera2 and rpicam-apps cannot drive a CSI camera there, while
a USB (UVC) camera works through the v4l2 backend anywhere.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeclaw.doctor import Check, Host

PI_OS_HINTS = ("archive.raspberrypi.com", "archive.raspberrypi.org")
CSI_BACKENDS = ("picamera2", "rpicam")


def is_raspberry_pi_os(root: Path) -> bool:
    """/etc/rpi-issue (written by Raspberry Pi OS's image builder), or its archive in apt's sources."""
    if (root / "etc/rpi-issue").exists():
        return True
    sources = [root / "etc/apt/sources.list", *sorted((root / "etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if any(hint in path.read_text() for hint in PI_OS_HINTS):
                return True
    return False


def check_pin_factory(host: Host, simulated: bool) -> Check:
    from edgeclaw.capabilities.gpio.factory import PinFactoryError, board_revision, choose, gpiochips
    from edgeclaw.doctor import Check

    try:
        choice = choose(
            simulated,
            chips=lambda: gpiochips(host.root / "dev"),
            has_lgpio=lambda: host.has_module("lgpio"),
        )
    except PinFactoryError as exc:
        return Check("gpio.factory", "gpio pin factory", "fail", f"none ({exc})", exc.fix)
    if not host.has_module("gpiozero"):
        return Check(
            "gpio.factory",
            "gpio pin factory",
            "fail",
            f"{choice.name} would be used ({choice.reason}), but gpiozero is not importable by the node",
            "pip install 'edgeclaw[gpio]' in the node's venv",
        )
    if choice.name == "LGPIOFactory" and board_revision(host.root / "proc") is None:
        return Check(
            "gpio.factory",
            "gpio pin factory",
            "fail",
            "LGPIOFactory cannot start: not a Raspberry Pi model gpiozero knows (GPIO_BOARD_UNKNOWN)",
            "EdgeClaw's GPIO uses the Raspberry Pi header layout; elsewhere set node.hardware: simulated",
        )
    return Check("gpio.factory", "gpio pin factory", "pass", f"{choice.name}: {choice.reason}")


def check_camera_os(camera: Any, host: Host) -> list[Check]:
    """For a camera configured with a CSI-only backend (picamera2, rpicam): can this OS drive it?"""
    from edgeclaw.doctor import Check

    backend = getattr(camera, "backend", "auto")
    if backend not in CSI_BACKENDS:
        return []
    title = "CSI camera support"
    if not is_raspberry_pi_os(host.root):
        return [
            Check(
                "camera.csi",
                title,
                "fail",
                f"camera.backend is {backend}, for a CSI camera module; this is not Raspberry Pi OS, so "
                "there is no libcamera Raspberry Pi pipeline and no Raspberry Pi ISP kernel driver "
                "(Debian and the EdgeClaw SD image have neither): picamera2 and rpicam-apps cannot work here",
                "for a CSI camera use Raspberry Pi OS (Ansible role or pip install, see ansible/README.md); "
                "or plug in a USB (UVC) camera and set camera.backend: v4l2",
            )
        ]
    if backend == "picamera2":
        python = Path(getattr(camera, "picamera2_python", "/usr/bin/python3"))
        dist = host.root / "usr/lib/python3/dist-packages/picamera2"
        if not (host.root / str(python).lstrip("/")).exists() or not dist.is_dir():
            return [
                Check(
                    "camera.csi",
                    title,
                    "fail",
                    f"Raspberry Pi OS, but picamera2 is not installed for {python}",
                    "sudo apt install python3-picamera2",
                )
            ]
        return [Check("camera.csi", title, "pass", f"Raspberry Pi OS with picamera2 for {python}")]
    missing = [t for t in ("rpicam-still", "rpicam-vid") if host.which(t) is None]
    if missing:
        return [
            Check(
                "camera.csi",
                title,
                "fail",
                f"Raspberry Pi OS, but {' and '.join(missing)} not found",
                "sudo apt install rpicam-apps",
            )
        ]
    return [Check("camera.csi", title, "pass", "Raspberry Pi OS with rpicam-apps")]
