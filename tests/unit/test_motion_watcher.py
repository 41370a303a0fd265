"""MotionWatcher with real ffmpeg frames from the simulated camera's still scene: no motion while nothing
changes, one detection for a change (cooldown), thresholds; the worker's death, silence and garbage; no
process left behind (checked by PID); camera.snap shows the same scene the detector watches."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.camera import Config, create, simscene
from edgeclaw.capabilities.camera.backends import Device
from edgeclaw.capabilities.camera.backends.picamera2 import Picamera2Backend
from edgeclaw.capabilities.camera.backends.v4l2 import Formats, V4L2Backend
from edgeclaw.capabilities.camera.motion import MotionError, MotionEvent, MotionSettings, MotionWatcher
from edgeclaw.platform.supervisor import Supervisor

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

CAMERA = Config(enabled=True, simulated_width=320, simulated_height=240)
FAST = {"fps": 4.0, "heartbeat_s": 0.5, "background_s": 1.0}


def alive(pid: int) -> bool:
    """Running (a zombie has finished: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] != b"Z"


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class Running:
    def __init__(self, watcher: MotionWatcher) -> None:
        self.watcher = watcher
        self.task = asyncio.ensure_future(watcher.run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, MotionError):
            await asyncio.wait_for(self.task, 10)


@contextlib.asynccontextmanager
async def watching(
    runtime_dir: Path, events: list[MotionEvent], worker: list[str] | None = None, **settings: Any
) -> AsyncIterator[Running]:
    s = MotionSettings(**{**FAST, **settings})
    w = MotionWatcher(s, CAMERA, events.append, simulated=True, runtime_dir=str(runtime_dir), worker=worker)
    running = Running(w)
    try:
        yield running
    finally:
        await running.stop()


def scene(tmp_path: Path) -> Path:
    return simscene.scene_dir(tmp_path)


async def frames_flowing(r: Running) -> None:
    await until(lambda: r.watcher.stats()["frames"] >= 8 or r.task.done(), 20, "the first frames")
    assert not r.task.done(), r.task.exception()


async def test_static_scene_small_object_and_a_change_with_cooldown(tmp_path: Path) -> None:
    events: list[MotionEvent] = []
    async with watching(tmp_path, events, cooldown_s=60.0, min_area=0.02) as r:
        await frames_flowing(r)
        await asyncio.sleep(3)  # a still scene with sensor noise, 12 more frames
        assert events == [] and r.watcher.stats()["detections"] == 0
        # an object of 0.5 % of the picture is below min_area (2 %)
        await asyncio.to_thread(simscene.place, scene(tmp_path), "sim0", "fly", 0.1, 0.1, 0.05, 0.1)
        await asyncio.sleep(2)
        assert events == []
        # someone steps in: 12 % of the picture
        await asyncio.to_thread(simscene.place, scene(tmp_path), "sim0", "person", 0.5, 0.3, 0.3, 0.4)
        await until(lambda: len(events) == 1, 6, "a detection")
        assert 0.1 < events[0].area < 0.16
        # after the background took the person in, they leave: a change again, inside the cooldown
        await asyncio.sleep(3)
        await asyncio.to_thread(simscene.remove, scene(tmp_path), "sim0", "person")
        await until(lambda: r.watcher.suppressed == 1, 6, "a suppressed detection")
        stats = r.watcher.stats()
        assert len(events) == 1 and stats["detections"] == 1
        assert stats["frames"] > 30 and stats["device"] == "sim0"
        assert stats["worker_rss_bytes"] > 1_000_000 and stats["capture_rss_bytes"] > 1_000_000
        assert stats["last_heartbeat"] is not None and stats["restarts"] == 0


async def test_a_killed_worker_makes_run_raise_and_leaves_nothing(tmp_path: Path) -> None:
    async with watching(tmp_path, []) as r:
        await frames_flowing(r)
        stats = r.watcher.stats()
        worker, capture = stats["worker_pid"], stats["capture_pid"]
        assert alive(worker) and alive(capture)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(MotionError) as info:
            await asyncio.wait_for(r.task, 10)
        assert info.value.code == "CAMERA_MOTION_WORKER_DIED"
        assert "exited with status -9" in info.value.message
        await until(lambda: not alive(capture), 5, "the capture to be gone")
        assert r.watcher.stats()["worker_pid"] is None


async def test_cancel_leaves_no_process_behind(tmp_path: Path) -> None:
    async with watching(tmp_path, []) as r:
        await frames_flowing(r)
        pids = [r.watcher.stats()["worker_pid"], r.watcher.stats()["capture_pid"]]
        assert all(alive(p) for p in pids)
        await r.stop()
        assert r.task.cancelled()
        assert [p for p in pids if alive(p)] == []  # gone when run() returns, not some time later


async def test_a_silent_worker_is_killed_and_reported(tmp_path: Path) -> None:
    async with watching(tmp_path, []) as r:
        await frames_flowing(r)
        worker, capture = r.watcher.stats()["worker_pid"], r.watcher.stats()["capture_pid"]
        os.kill(worker, signal.SIGSTOP)  # hung: alive, silent
        with pytest.raises(MotionError) as info:
            await asyncio.wait_for(r.task, 10)
        assert info.value.code == "CAMERA_MOTION_SILENT"
        assert not alive(worker) and not alive(capture)


GARBAGE = r"""
import json, sys, time
out = sys.stdout
out.write('{"type":"start","pid":1}\n')
out.write("not json at all\n[1, 2, 3]\n{}\n")
out.write('{"type":"motion","ts":"yesterday","area":0.5,"frames":3}\n')
out.write('{"type":"motion","ts":1e999,"area":0.5,"frames":3}\n')
out.write('{"type":"hello"}\n')
out.write("x" * 10000 + "\n")
out.write("\xff\xfe garbage\n")
out.write('{"type":"motion","ts":%f,"area":0.25,"frames":7}\n' % time.time())
out.flush()
sys.stderr.write("worker noise\n" * 100)
sys.stderr.flush()
while True:
    out.write('{"type":"heartbeat","ts":%f,"frames":9,"detections":1}\n' % time.time())
    out.flush()
    time.sleep(0.2)
"""


async def test_garbage_from_the_worker_does_not_crash_the_watcher(tmp_path: Path) -> None:
    events: list[MotionEvent] = []
    async with watching(tmp_path, events, worker=[sys.executable, "-c", GARBAGE]) as r:
        await until(lambda: r.watcher.stats()["frames"] == 9 or r.task.done(), 10, "the heartbeat")
        await asyncio.sleep(1.0)  # 5 heartbeats more: still running
        assert not r.task.done(), r.task.exception()
        assert [e.area for e in events] == [0.25]
        assert r.watcher.bad_lines >= 8


async def test_snap_shows_the_scene_motion_watches(tmp_path: Path) -> None:
    services = types.SimpleNamespace(
        simulated=True, supervisor=Supervisor("test"), config=types.SimpleNamespace(runtime_dir=tmp_path)
    )
    cap = create(CAMERA, services)  # type: ignore[arg-type]

    async def luma_of_left_half() -> float:
        ctx = InvokeContext(
            invoke_id="t",
            command="camera.snap",
            params={"delayMs": 0, "maxWidth": 64},
            deadline=asyncio.get_running_loop().time() + 10,
            timeout_ms=10000,
        )
        result = await cap.handlers()["camera.snap"](ctx)
        gray = subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-i",
                "-",
                "-vf",
                "scale=64:48",
                "-pix_fmt",
                "gray",
                "-f",
                "rawvideo",
                "-",
            ],
            input=base64.b64decode(result["base64"]),
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
        rows = [gray[y * 64 : y * 64 + 32] for y in range(12, 36)]  # the left half, mid-height
        return sum(sum(r) for r in rows) / (24 * 32)

    before = await luma_of_left_half()
    simscene.place(scene(tmp_path), "sim0", "board", 0.0, 0.0, 0.5, 1.0, color=(255, 255, 255))
    after = await luma_of_left_half()
    assert after - before > 60, (before, after)


async def test_picamera2_without_rpicam_vid_is_a_coded_error() -> None:
    backend = Picamera2Backend(rpicam_vid="/nonexistent/rpicam-vid")
    with pytest.raises(InvokeError) as info:
        await backend.motion_job(Device(id="csi0", name="imx708"), 160, 120, 2)
    assert info.value.code == "CAMERA_MOTION_UNSUPPORTED"


def test_v4l2_motion_streams_the_smallest_mode_that_covers_the_analysis_size() -> None:
    fmts = Formats(mjpeg=((640, 480), (1920, 1080)), raw=((160, 90), (320, 240), (1280, 720)))
    argv = V4L2Backend().build_motion(Device(id="/dev/video0", name="cam"), 160, 120, 2, fmts)
    assert argv[argv.index("-video_size") + 1] == "320x240"
    assert "-input_format" not in argv  # raw: nothing to decode
    assert argv[-7:] == ["-vf", "fps=2,scale=160:120:flags=area", "-pix_fmt", "gray", "-f", "rawvideo", "-"]


async def test_capture_switched_off_refuses_motion(tmp_path: Path) -> None:
    from dataclasses import replace

    w = MotionWatcher(
        MotionSettings(),
        replace(CAMERA, capture=False),
        lambda e: None,
        simulated=True,
        runtime_dir=str(tmp_path),
    )
    with pytest.raises(MotionError) as info:
        await w.run()
    assert info.value.code == "CAMERA_DISABLED"


async def test_under_the_supervisor_a_dead_worker_is_restarted_and_counted(tmp_path: Path) -> None:
    sup = Supervisor("test", backoff_initial_s=0.1)
    w = MotionWatcher(
        MotionSettings(**FAST), CAMERA, lambda e: None, simulated=True, runtime_dir=str(tmp_path)
    )
    sup.start_child("camera_motion:porch", w.run)
    try:
        await until(lambda: w.stats()["frames"] >= 4, 20, "the first frames")
        first = w.stats()["worker_pid"]
        os.kill(first, signal.SIGKILL)
        await until(lambda: w.stats()["worker_pid"] not in (None, first), 10, "a new worker")
        snap = sup.snapshot()["test/camera_motion:porch"]
        assert snap["restarts"] == 1 and "CAMERA_MOTION_WORKER_DIED" in snap["last_error"]
        assert w.stats()["restarts"] == 1
        await until(lambda: w.stats()["frames"] > 0 and w.frames > 0, 20, "frames from the new worker")
    finally:
        last = w.stats()["worker_pid"]
        await sup.stop()
    assert last is None or not alive(last)
