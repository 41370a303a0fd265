"""Raspberry Pi camera modules through the rpicam-still / rpicam-vid programs (Raspberry Pi OS).

Both write to a file in the capture's work directory; rpicam-vid muxes H.264 into MP4 itself through
its libav output, with audio from ALSA when a microphone is present.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from edgeclaw.capabilities.camera import proc
from edgeclaw.capabilities.camera.backends import (
    Backend,
    Device,
    Job,
    MotionJob,
    even,
    find_alsa_capture,
    fit_width,
)
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest

_CAMERA_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S+)\s*\[(\d+)x(\d+)[^\]]*\]\s*(\(([^)]*)\))?")


def parse_list_cameras(text: str) -> list[Device]:
    """`rpicam-still --list-cameras` → one Device per camera line (mode lines are indented details)."""
    devices = []
    for line in text.splitlines():
        m = _CAMERA_LINE.match(line)
        if not m:
            continue
        index, sensor, w, h = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        devices.append(
            Device(
                id=f"csi{index}",
                name=f"{sensor} ({w}x{h})",
                position="unknown",
                device_type="csi",
                width=w,
                height=h,
                extra=(("index", index), ("path", m.group(6) or "")),
            )
        )
    return devices


def camera_index(device: Device) -> str:
    return dict(device.extra).get("index", device.id.removeprefix("csi"))


def rpicam_motion_argv(vid: str, device: Device, width: int, height: int, fps: float) -> list[str]:
    """rpicam-vid streaming raw I420 frames of the analysis size to stdout until killed (the ISP does the
    downscaling; the motion worker reads the luma plane of each frame)."""
    return [
        vid,
        "--nopreview",
        "--camera",
        camera_index(device),
        "--timeout",
        "0",
        "--width",
        str(width),
        "--height",
        str(height),
        "--framerate",
        f"{fps:g}",
        "--codec",
        "yuv420",
        "--flush",
        "--output",
        "-",
    ]


class RpicamBackend(Backend):
    name = "rpicam"

    def __init__(
        self,
        *,
        still: str = "rpicam-still",
        vid: str = "rpicam-vid",
        clip_max_width: int = 1280,
        framerate: int = 30,
        audio_device: str = "auto",
    ) -> None:
        self.still = still
        self.vid = vid
        self.clip_max_width = clip_max_width
        self.framerate = framerate
        self.audio_device = audio_device

    async def list_devices(self) -> list[Device]:
        with contextlib.suppress(proc.CaptureTimeout):
            done = await proc.run([self.still, "--list-cameras"], timeout=10.0)
            return parse_list_cameras(done.stdout.decode("utf-8", "replace") + "\n" + done.stderr)
        return []

    def build_snap(self, device: Device, req: SnapRequest, out: Path) -> list[str]:
        w, h = fit_width(req.max_width, device.width, device.height)
        argv = [self.still, "--nopreview", "--camera", camera_index(device), "--width", str(w)]
        if h:
            argv += ["--height", str(h)]
        argv += [
            "--quality",
            str(max(1, min(100, round(req.quality * 100)))),
            "--encoding",
            "jpg",
            "--thumb",
            "none",
        ]
        argv += ["--immediate"] if req.delay_ms <= 0 else ["--timeout", str(req.delay_ms)]
        return [*argv, "--output", str(out)]

    def build_clip(self, device: Device, req: ClipRequest, out: Path, mic: str | None) -> list[str]:
        w, h = fit_width(self.clip_max_width, device.width or self.clip_max_width, device.height or 720)
        argv = [
            self.vid,
            "--nopreview",
            "--camera",
            camera_index(device),
            "--timeout",
            str(req.duration_ms),
            "--width",
            str(even(w)),
            "--height",
            str(even(h)),
            "--framerate",
            str(self.framerate),
            "--codec",
            "libav",
            "--libav-format",
            "mp4",
        ]
        if mic:
            argv += ["--libav-audio", "--audio-source", "alsa", "--audio-device", mic]
        return [*argv, "--output", str(out)]

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        out = workdir / "snap.jpg"
        return Job(argv=self.build_snap(device, req, out), output=out)

    async def motion_job(self, device: Device, width: int, height: int, fps: float) -> MotionJob:
        return MotionJob(argv=rpicam_motion_argv(self.vid, device, width, height, fps), frame_format="yuv420")

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        mic = find_alsa_capture(self.audio_device) if req.include_audio else None
        out = workdir / "clip.mp4"
        return Job(argv=self.build_clip(device, req, out, mic), output=out, has_audio=mic is not None)
