"""The picamera2 worker process end to end, through the real capability, with a stand-in `picamera2`
package on the worker's path (real picamera2 needs libcamera and a CSI camera). The stand-in encodes
real JPEG/MP4 with ffmpeg, so the worker's arguments, sizes, exit codes and messages are all exercised."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.camera import Config
from edgeclaw.capabilities.camera.backends.picamera2 import Picamera2Backend
from edgeclaw.capabilities.camera.capability import CameraCapability
from edgeclaw.capabilities.camera.media import jpeg_size

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

FAKE = """
import os, subprocess, time

def _ffmpeg(args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)

class Picamera2:
    @staticmethod
    def global_camera_info():
        n = int(os.environ.get("FAKE_CAMERAS", "1"))
        return [{"Model": "imx708", "Location": 1, "Id": f"/base/imx708@{i}", "Num": i} for i in range(n)]

    def __init__(self, num=0):
        if os.environ.get("FAKE_BUSY"):
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.sensor_resolution = (4608, 2592)
        self.options = {}
        self.size = None
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write(f"open {num}\\n")

    def create_still_configuration(self, main):
        return {"main": main}

    def create_video_configuration(self, main, controls):
        return {"main": main, "controls": controls}

    def configure(self, cfg):
        self.size = cfg["main"]["size"]

    def start(self): pass
    def stop(self): pass
    def close(self): pass

    def capture_file(self, path, format):
        w, h = self.size
        q = max(2, min(31, round(2 + (100 - self.options["quality"]) * 0.29)))
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=1", "-frames:v", "1", "-q:v", str(q), "-f", "mjpeg", path])

    def start_recording(self, encoder, output):
        self.rec = (time.monotonic(), output)

    def stop_recording(self):
        t0, output = self.rec
        w, h = self.size
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=30", "-t", f"{time.monotonic() - t0:.3f}",
                 "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", output.filename])
"""

ENCODERS = "class H264Encoder:\n    def __init__(self, bitrate=None): self.bitrate = bitrate\n"
OUTPUTS = (
    "class FfmpegOutput:\n"
    "    def __init__(self, filename, audio=False, audio_device=None):\n"
    "        self.filename, self.audio = filename, audio\n"
)


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    pkg = tmp_path / "site" / "picamera2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE))
    (pkg / "encoders.py").write_text(ENCODERS)
    (pkg / "outputs.py").write_text(OUTPUTS)
    return {
        "PYTHONPATH": str(tmp_path / "site"),
        "PATH": os.environ["PATH"],
        "FAKE_LOG": str(tmp_path / "log"),
    }


def camera(env: dict[str, str]) -> CameraCapability:
    cap = CameraCapability(
        Config(enabled=True, backend="picamera2", default_delay_ms=0), types.SimpleNamespace(simulated=False)
    )  # type: ignore[arg-type]
    cap._backend = Picamera2Backend(python=sys.executable, env=env)  # the stand-in instead of detection
    return cap


async def call(
    cap: CameraCapability, command: str, params: dict[str, Any], timeout: float = 30
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ctx = InvokeContext("w", command, params, loop.time() + timeout, int(timeout * 1000))
    return await cap.handlers()[command](ctx)


async def test_worker_lists_cameras(fake_env: dict[str, str]) -> None:
    cap = camera({**fake_env, "FAKE_CAMERAS": "2"})
    devices = (await call(cap, "camera.list", {}))["devices"]
    assert devices == [
        {"id": "csi0", "name": "imx708", "position": "back", "deviceType": "csi"},
        {"id": "csi1", "name": "imx708", "position": "back", "deviceType": "csi"},
    ]


async def test_worker_snap_keeps_sensor_aspect_and_max_width(fake_env: dict[str, str]) -> None:
    cap = camera({**fake_env, "FAKE_CAMERAS": "2"})
    result = await call(cap, "camera.snap", {"maxWidth": 1000, "deviceId": "csi1"})
    data = base64.b64decode(result["base64"])
    assert jpeg_size(data) == (1000, 562) == (result["width"], result["height"])
    assert Path(fake_env["FAKE_LOG"]).read_text().splitlines()[-1] == "open 1"


async def test_worker_clip_lasts_the_requested_time(fake_env: dict[str, str]) -> None:
    cap = camera(fake_env)
    started = time.monotonic()
    result = await call(cap, "camera.clip", {"durationMs": 800, "includeAudio": False})
    assert time.monotonic() - started >= 0.8
    assert base64.b64decode(result["base64"])[4:8] == b"ftyp" and result["hasAudio"] is False


async def test_worker_busy_camera_is_camera_busy(fake_env: dict[str, str]) -> None:
    cap = camera({**fake_env, "FAKE_BUSY": "1"})
    with pytest.raises(InvokeError) as info:
        await call(cap, "camera.snap", {})
    assert info.value.code == "CAMERA_BUSY"


async def test_worker_without_picamera2_is_camera_unavailable(tmp_path: Path) -> None:
    cap = camera({"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)})
    assert (await call(cap, "camera.list", {}))["devices"] == []
    with pytest.raises(InvokeError) as info:
        await call(cap, "camera.snap", {})
    assert info.value.code == "CAMERA_UNAVAILABLE"
