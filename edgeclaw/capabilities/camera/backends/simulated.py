"""A simulated camera: a still scene (simscene.py: a room that changes only when a test changes it)
with a timestamp overlay, really encoded as JPEG and H.264/MP4, so everything above the backend runs the
same code path as on a board with a camera; motion detection streams the same scene without the overlay.

Sources are read in real time (`-re`), so settling delays and clip durations take as long as on real
hardware, and a capture can be cancelled while it runs. The scene picture is re-read for every frame, so
a change shows up in a running capture within a frame (`-fflags nobuffer`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from edgeclaw.capabilities.camera import simscene
from edgeclaw.capabilities.camera.backends import Backend, Device, Job, MotionJob, even, fit_width
from edgeclaw.capabilities.camera.backends.ffmpeg_common import (
    BASE,
    find_font,
    gray_stream_output,
    h264_output,
    jpeg_output,
    timestamp_overlay,
)
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest

# sensor noise, changing every frame as a real sensor's does: a still scene is still not bit-identical
# frame to frame (what motion detection must tolerate), and a clip is not unrealistically small
SENSOR_NOISE = "noise=alls=12:allf=t"  # last in each chain: at the size delivered, as a sensor would
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
        scene_dir: Path | None = None,
    ) -> None:
        self.ffmpeg = ffmpeg
        # <runtime_dir>/camera-sim in a daemon; where nobody said (unit tests), one shared temp dir per
        # user and size, so repeated captures do not each leave a picture behind
        self.scene_dir = (
            scene_dir or Path(tempfile.gettempdir()) / f"edgeclaw-simcam-{os.getuid()}-{width}x{height}"
        )
        self.width, self.height = width, height
        self.audio = audio
        self.encoder = encoder
        self.clip_max_width = clip_max_width
        self.framerate = framerate
        self.font = find_font()
        self.devices = [
            Device(
                id=f"sim{i}",
                name=f"Simulated camera {i} (still scene)",
                position=_POSITIONS[i % 2] if count > 1 else "back",
                device_type="simulated",
                width=width,
                height=height,
            )
            for i in range(count)
        ]

    async def list_devices(self) -> list[Device]:
        return list(self.devices)

    def scene(self, device: Device) -> Path:
        """The device's scene picture (rendered empty on first use)."""
        return simscene.ensure(self.scene_dir, device.id, self.width, self.height)

    def _source(self, picture: Path, rate: float) -> list[str]:
        return [
            "-fflags",
            "nobuffer",
            "-analyzeduration",
            "0",
            "-probesize",
            "32",
            "-re",
            "-framerate",
            f"{rate:g}",
            "-loop",
            "1",
            "-i",
            str(picture),
        ]

    def _filters(self, device: Device, *extra: str) -> list[str]:
        overlay = timestamp_overlay(self.font, device.name.split(" (")[0])
        chain = [f for f in (overlay, *extra, SENSOR_NOISE) if f]
        return ["-vf", ",".join(chain)] if chain else []

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        picture = await asyncio.to_thread(self.scene, device)  # rendered once, off the loop
        argv = [self.ffmpeg, *BASE, *self._source(picture, 10)]
        argv += self._filters(device, f"scale=w='min(iw,{req.max_width})':h=-1")
        if req.delay_ms > 0:
            argv += ["-ss", f"{req.delay_ms / 1000:.3f}"]  # frames before this are generated and dropped
        return Job(argv=argv + jpeg_output(req.quality))

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        w, h = fit_width(self.clip_max_width, self.width, self.height)
        out = workdir / "clip.mp4"
        audio = req.include_audio and self.audio
        picture = await asyncio.to_thread(self.scene, device)
        argv = [self.ffmpeg, *BASE, *self._source(picture, self.framerate)]
        if audio:
            argv += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        argv += self._filters(device, f"scale={even(w)}:{even(h)}")
        argv += h264_output(self.encoder, out, audio=audio, duration_s=req.duration_ms / 1000)
        return Job(argv=argv, output=out, has_audio=audio)

    async def motion_job(self, device: Device, width: int, height: int, fps: float) -> MotionJob:
        picture = await asyncio.to_thread(self.scene, device)
        argv = [self.ffmpeg, *BASE, *self._source(picture, fps)]
        return MotionJob(argv=argv + gray_stream_output(width, height, fps, post=SENSOR_NOISE))
