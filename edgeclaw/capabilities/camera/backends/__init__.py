"""Camera backends: each lists its devices and turns a request into a subprocess that captures.

A backend builds argv lists (tested without hardware) and maps a failed run to a coded error; the
capability around it owns queuing, deadlines, payload budgets and the result shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest
from edgeclaw.capabilities.camera.proc import Finished


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    position: str = "unknown"  # front | back | external | unknown
    device_type: str = "unknown"
    width: int = 0  # native size when known (sensor or largest mode)
    height: int = 0
    extra: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "position": self.position, "deviceType": self.device_type}


@dataclass
class Job:
    """One capture: the argv to run; the result is read from `output` (a file) or from stdout."""

    argv: list[str]
    output: Path | None = None
    has_audio: bool = False
    env: dict[str, str] | None = None  # None: inherit the daemon's environment


@dataclass(frozen=True)
class MotionJob:
    """A capture that streams raw frames of the analysis size to stdout until killed, for the motion
    worker: `gray` is W*H bytes of luma per frame, `yuv420` is planar I420 (the luma plane first)."""

    argv: list[str]
    frame_format: str = "gray"  # gray | yuv420
    env: dict[str, str] | None = None


class Backend:
    name = "base"

    async def list_devices(self) -> list[Device]:
        raise NotImplementedError

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        raise NotImplementedError

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        raise NotImplementedError

    async def motion_job(self, device: Device, width: int, height: int, fps: float) -> MotionJob:
        """The streaming capture motion detection reads; CAMERA_MOTION_UNSUPPORTED where there is none."""
        raise InvokeError(
            "CAMERA_MOTION_UNSUPPORTED", f"the {self.name} camera backend cannot stream frames for motion"
        )

    def failure(self, finished: Finished, what: str) -> InvokeError:
        return map_failure(finished, what, self.name)


_BUSY = re.compile(r"device or resource busy|pipeline handler in use|camera in use|failed to acquire", re.I)
_GONE = re.compile(r"no such (file|device)|no cameras available|camera .* not found|failed to open", re.I)
_PERM = re.compile(r"permission denied|operation not permitted", re.I)


def map_failure(finished: Finished, what: str, backend: str) -> InvokeError:
    """A failed capture process → the code the operator sees, with the backend's own last words."""
    lines = [ln.strip() for ln in finished.stderr.strip().splitlines() if ln.strip()]
    tail = lines[-1][:300] if lines else f"exit status {finished.returncode}"
    if _BUSY.search(finished.stderr):
        return InvokeError("CAMERA_BUSY", f"the camera is in use by another program ({backend}: {tail})")
    if _PERM.search(finished.stderr):
        return InvokeError(
            "CAMERA_UNAVAILABLE",
            f"no permission to open the camera; add the node's user to the 'video' group ({backend}: {tail})",
        )
    if _GONE.search(finished.stderr):
        return InvokeError("CAMERA_UNAVAILABLE", f"the camera is not available ({backend}: {tail})")
    return InvokeError("CAMERA_UNAVAILABLE", f"{what} failed ({backend}: {tail})")


def even(n: float) -> int:
    """H.264 in yuv420p needs even dimensions."""
    return max(2, int(n) // 2 * 2)


def fit_width(max_width: int, native_w: int, native_h: int) -> tuple[int, int]:
    """The largest size no wider than max_width with the native aspect (never upscaled)."""
    if native_w <= 0 or native_h <= 0:
        return max_width, 0
    w = min(max_width, native_w)
    return w, max(1, round(native_h * w / native_w))


def find_alsa_capture(setting: str, proc_pcm: Path = Path("/proc/asound/pcm")) -> str | None:
    """The ALSA capture device to record from: the configured one, the first one found, or None."""
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    try:
        text = proc_pcm.read_text()
    except OSError:
        return None
    return parse_alsa_pcm(text)


def parse_alsa_pcm(text: str) -> str | None:
    # lines like "01-00: USB Audio : USB Audio : capture 1"
    for line in text.splitlines():
        m = re.match(r"(\d+)-(\d+):.*\bcapture\b", line)
        if m:
            return f"hw:{int(m.group(1))},{int(m.group(2))}"
    return None
