"""CSI camera modules through picamera2, in a short-lived worker process (picam_worker.py) run by an
interpreter that has Raspberry Pi OS's python3-picamera2. The daemon never imports picamera2."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.camera import proc
from edgeclaw.capabilities.camera.backends import Backend, Device, Job, MotionJob, even, find_alsa_capture
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest

WORKER = Path(__file__).resolve().parent.parent / "picam_worker.py"


def parse_worker_list(stdout: str) -> list[Device]:
    try:
        cams = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else []
    except ValueError:
        return []
    devices = []
    for cam in cams if isinstance(cams, list) else []:
        if not isinstance(cam, dict) or not isinstance(cam.get("num"), int):
            continue
        num = cam["num"]
        devices.append(
            Device(
                id=f"csi{num}",
                name=str(cam.get("model") or "camera"),
                position=str(cam.get("location") or "unknown"),
                device_type="csi",
                extra=(("index", str(num)),),
            )
        )
    return devices


class Picamera2Backend(Backend):
    name = "picamera2"

    def __init__(
        self,
        *,
        python: str = "/usr/bin/python3",
        clip_max_width: int = 1280,
        framerate: int = 30,
        audio_device: str = "auto",
        env: dict[str, str] | None = None,
        rpicam_vid: str = "rpicam-vid",
    ) -> None:
        self.python = python
        self.rpicam_vid = rpicam_vid
        self.clip_max_width = clip_max_width
        self.framerate = framerate
        self.audio_device = audio_device
        self.env = env

    def _worker(self, *args: str) -> list[str]:
        return [self.python, "-I" if self.env is None else "-s", str(WORKER), *args]

    async def list_devices(self) -> list[Device]:
        with contextlib.suppress(proc.CaptureTimeout):
            done = await proc.run(self._worker("list"), timeout=20.0, env=self.env)
            if done.returncode == 0:
                return parse_worker_list(done.stdout.decode("utf-8", "replace"))
        return []

    def build_snap(self, device: Device, req: SnapRequest, out: Path) -> list[str]:
        return self._worker(
            "snap",
            "--camera",
            dict(device.extra).get("index", "0"),
            "--max-width",
            str(req.max_width),
            "--quality",
            str(max(1, min(100, round(req.quality * 100)))),
            "--delay-ms",
            str(req.delay_ms),
            "--output",
            str(out),
        )

    def build_clip(self, device: Device, req: ClipRequest, out: Path, mic: str | None) -> list[str]:
        w = even(self.clip_max_width)
        h = even(w * 9 / 16)
        args = [
            "clip",
            "--camera",
            dict(device.extra).get("index", "0"),
            "--width",
            str(w),
            "--height",
            str(h),
            "--framerate",
            str(self.framerate),
            "--duration-ms",
            str(req.duration_ms),
        ]
        if mic:
            args += ["--audio-device", mic]
        return self._worker(*args, "--output", str(out))

    async def motion_job(self, device: Device, width: int, height: int, fps: float) -> MotionJob:
        """A picamera2 worker would hold ~50 MB of libcamera for as long as motion runs; rpicam-vid (same
        camera numbering, installed alongside on Raspberry Pi OS) streams the frames far more cheaply."""
        from edgeclaw.capabilities.camera.backends.rpicam import rpicam_motion_argv

        vid = shutil.which(self.rpicam_vid)
        if vid is None:
            raise InvokeError(
                "CAMERA_MOTION_UNSUPPORTED",
                f"motion on a picamera2 camera streams through {self.rpicam_vid}, which is not installed "
                "(apt install rpicam-apps)",
            )
        return MotionJob(argv=rpicam_motion_argv(vid, device, width, height, fps), frame_format="yuv420")

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        out = workdir / "snap.jpg"
        return Job(argv=self.build_snap(device, req, out), output=out, env=self.env)

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        mic = find_alsa_capture(self.audio_device) if req.include_audio else None
        out = workdir / "clip.mp4"
        return Job(
            argv=self.build_clip(device, req, out, mic), output=out, has_audio=mic is not None, env=self.env
        )
