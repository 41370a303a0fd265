"""A simulated camera: ffmpeg's test patterns with a timestamp overlay, really encoded as JPEG and
H.264/MP4, so everything above the backend runs the same code path as on a board with a camera.

Sources are read in real time (`-re`), so settling delays and clip durations take as long as on real
hardware, and a capture can be cancelled while it runs.
"""

from __future__ import annotations

from pathlib import Path

from edgeclaw.capabilities.camera.backends import Backend, Device, Job, even, fit_width
from edgeclaw.capabilities.camera.backends.ffmpeg_common import (
    BASE,
    find_font,
    h264_output,
    jpeg_output,
    timestamp_overlay,
)
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest

_PATTERNS = ("testsrc2", "testsrc", "smptehdbars", "rgbtestsrc")
_POSITIONS = ("back", "front")


class SimulatedBackend(Backend):
    name = "simulated"

    def __init__(
        self,
        *,
        ffmpeg: str = "ffmpeg",
        count: int = 1,
        width: int = 1920,
        height: int = 1080,
        audio: bool = True,
        encoder: str = "libx264",
        clip_max_width: int = 1280,
        framerate: int = 30,
    ) -> None:
        self.ffmpeg = ffmpeg
        self.width, self.height = width, height
        self.audio = audio
        self.encoder = encoder
        self.clip_max_width = clip_max_width
        self.framerate = framerate
        self.font = find_font()
        self.devices = [
            Device(
                id=f"sim{i}",
                name=f"Simulated camera {i} (ffmpeg {_PATTERNS[i % len(_PATTERNS)]})",
                position=_POSITIONS[i % 2] if count > 1 else "back",
                device_type="simulated",
                width=width,
                height=height,
            )
            for i in range(count)
        ]

    async def list_devices(self) -> list[Device]:
        return list(self.devices)

    def _source(self, device: Device, w: int, h: int, rate: int) -> list[str]:
        pattern = _PATTERNS[self.devices.index(device) % len(_PATTERNS)]
        return ["-re", "-f", "lavfi", "-i", f"{pattern}=size={w}x{h}:rate={rate}"]

    def _filters(self, device: Device, *extra: str) -> list[str]:
        chain = [f for f in (timestamp_overlay(self.font, device.name.split(" (")[0]), *extra) if f]
        return ["-vf", ",".join(chain)] if chain else []

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        argv = [self.ffmpeg, *BASE, *self._source(device, self.width, self.height, 10)]
        argv += self._filters(device, f"scale=w='min(iw,{req.max_width})':h=-1")
        if req.delay_ms > 0:
            argv += ["-ss", f"{req.delay_ms / 1000:.3f}"]  # frames before this are generated and dropped
        return Job(argv=argv + jpeg_output(req.quality))

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        w, h = fit_width(self.clip_max_width, self.width, self.height)
        out = workdir / "clip.mp4"
        audio = req.include_audio and self.audio
        argv = [self.ffmpeg, *BASE, *self._source(device, even(w), even(h), self.framerate)]
        if audio:
            argv += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        argv += self._filters(device)
        argv += h264_output(self.encoder, out, audio=audio, duration_s=req.duration_ms / 1000)
        return Job(argv=argv, output=out, has_audio=audio)
