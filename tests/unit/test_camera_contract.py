"""The camera contract, run against every backend whose hardware or software is present here.

Everything above the backend is the real code path; results are decoded with ffprobe, not trusted.
The simulated backend (a still scene through ffmpeg, real JPEG/H.264 encoding) runs wherever ffmpeg is installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import types
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.camera import Config, create
from edgeclaw.capabilities.camera.capability import CameraCapability, build_backend
from edgeclaw.platform.supervisor import Supervisor

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _backend_present(kind: str) -> str | None:
    """None when `kind` has hardware/software here, else the reason to skip."""
    if not HAVE_FFMPEG:
        return "ffmpeg/ffprobe not installed (scripts/install-test-deps.sh installs them)"
    if kind == "simulated":
        return None
    backends, reason = build_backend(Config(enabled=True, backend=kind), simulated=False)  # type: ignore[arg-type]
    if not backends:
        return reason or f"{kind} not installed"
    if kind == "picamera2":
        probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('picamera2') else 1)"
        if subprocess.run([Config().picamera2_python, "-I", "-c", probe], timeout=30).returncode != 0:
            return "picamera2 is not installed for the system python3 (Raspberry Pi OS: python3-picamera2)"
    devices = asyncio.run(backends[0].list_devices())
    return None if devices else f"{kind}: no camera attached to this machine"


BACKENDS = [
    pytest.param(kind, marks=pytest.mark.skipif(bool(r := _backend_present(kind)), reason=r or ""), id=kind)
    for kind in ("simulated", "v4l2", "rpicam", "picamera2")
]


def ffprobe(data: bytes, tmp: Path, suffix: str) -> dict[str, Any]:
    path = tmp / f"probe{suffix}"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(out.stdout))


def context(
    command: str, params: dict[str, Any], *, timeout: float = 20.0, max_payload: int | None = None
) -> InvokeContext:
    ctx = InvokeContext(
        invoke_id=f"t-{time.monotonic_ns()}",
        command=command,
        params=params,
        deadline=asyncio.get_running_loop().time() + timeout,
        timeout_ms=int(timeout * 1000),
    )
    if max_payload is not None:
        ctx.max_payload_bytes = max_payload
    return ctx


def children() -> dict[int, str]:
    """This process's live children: pid → command name."""
    me = os.getpid()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found[int(entry)] = comm
    return found


async def wait_child(before: dict[int, str], timeout: float = 10.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        new = set(children()) - set(before)
        if new:
            return new.pop()
        await asyncio.sleep(0.02)
    raise AssertionError("the capture process never started")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(params=BACKENDS)
async def camera(request: pytest.FixtureRequest) -> AsyncIterator[CameraCapability]:
    cap = make_camera(Config(enabled=True, backend=request.param, default_delay_ms=0))
    await cap.start()
    yield cap
    await cap.stop()


def make_camera(config: Config, simulated: bool = False) -> CameraCapability:
    services = types.SimpleNamespace(simulated=simulated, supervisor=Supervisor("test"))
    cap = create(config, services)  # type: ignore[arg-type]
    assert isinstance(cap, CameraCapability)
    return cap


async def call(cap: CameraCapability, command: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return await cap.handlers()[command](context(command, params, **kw))


async def coded(cap: CameraCapability, command: str, params: dict[str, Any], **kw: Any) -> InvokeError:
    with pytest.raises(InvokeError) as info:
        await call(cap, command, params, **kw)
    return info.value


# --- the contract ------------------------------------------------------------------------------------
async def test_list_shape(camera: CameraCapability) -> None:
    devices = (await call(camera, "camera.list", {}))["devices"]
    assert devices, "a present backend lists at least one camera"
    for d in devices:
        assert set(d) == {"id", "name", "position", "deviceType"}
        assert all(isinstance(d[k], str) and d[k] for k in d)


@pytest.mark.parametrize("max_width", [320, 1000])
async def test_snap_is_a_jpeg_no_wider_than_max_width(
    camera: CameraCapability, tmp_path: Path, max_width: int
) -> None:
    result = await call(camera, "camera.snap", {"maxWidth": max_width, "delayMs": 0})
    assert result["format"] == "jpg"
    probe = ffprobe(base64.b64decode(result["base64"], validate=True), tmp_path, ".jpg")
    stream = probe["streams"][0]
    assert stream["codec_name"] == "mjpeg"
    assert stream["width"] <= max_width
    assert (stream["width"], stream["height"]) == (result["width"], result["height"])


async def test_snap_default_width_is_at_most_1600(camera: CameraCapability, tmp_path: Path) -> None:
    result = await call(camera, "camera.snap", {})
    assert result["width"] <= 1600
    assert (
        ffprobe(base64.b64decode(result["base64"]), tmp_path, ".jpg")["streams"][0]["width"]
        == result["width"]
    )


async def test_lower_quality_gives_a_smaller_file(camera: CameraCapability) -> None:
    hi = await call(camera, "camera.snap", {"maxWidth": 640, "quality": 1.0, "delayMs": 0})
    lo = await call(camera, "camera.snap", {"maxWidth": 640, "quality": 0.1, "delayMs": 0})
    assert len(lo["base64"]) < len(hi["base64"])


async def test_clip_is_h264_mp4_of_the_requested_duration(camera: CameraCapability, tmp_path: Path) -> None:
    result = await call(camera, "camera.clip", {"durationMs": 1500, "includeAudio": False})
    assert result["format"] == "mp4" and result["durationMs"] == 1500 and result["hasAudio"] is False
    probe = ffprobe(base64.b64decode(result["base64"]), tmp_path, ".mp4")
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]
    assert probe["streams"][0]["codec_name"] == "h264"
    assert abs(float(probe["format"]["duration"]) - 1.5) <= 0.15


async def test_unknown_device_and_bad_params_are_invalid_requests(camera: CameraCapability) -> None:
    assert (await coded(camera, "camera.snap", {"deviceId": "no-such-camera"})).code == "INVALID_REQUEST"
    assert (await coded(camera, "camera.clip", {"deviceId": "no-such-camera"})).code == "INVALID_REQUEST"
    assert (await coded(camera, "camera.snap", {"quality": 1.5})).code == "INVALID_REQUEST"
    assert (await coded(camera, "camera.snap", {"maxWidth": -5})).code == "INVALID_REQUEST"
    assert (await coded(camera, "camera.clip", {"format": "webm"})).code == "INVALID_REQUEST"


async def test_a_named_device_is_used(camera: CameraCapability, tmp_path: Path) -> None:
    device = (await call(camera, "camera.list", {}))["devices"][-1]["id"]
    result = await call(camera, "camera.snap", {"deviceId": device, "maxWidth": 320, "delayMs": 0})
    assert ffprobe(base64.b64decode(result["base64"]), tmp_path, ".jpg")["streams"][0]["width"] <= 320


async def test_cancel_kills_the_capture_process(camera: CameraCapability) -> None:
    before = children()
    task = asyncio.create_task(call(camera, "camera.snap", {"delayMs": 8000}))
    pid = await wait_child(before)
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not alive(pid), "the capture process outlived its cancelled invoke"


async def test_deadline_kills_a_hung_capture(camera: CameraCapability) -> None:
    before = children()
    started = time.monotonic()
    task = asyncio.create_task(call(camera, "camera.snap", {"delayMs": 8000}, timeout=1.5))
    pid = await wait_child(before)
    with pytest.raises(InvokeError) as info:
        await asyncio.wait_for(task, 10)
    assert info.value.code == "TIMEOUT"
    assert time.monotonic() - started < 1.5, "the error must leave before the gateway stops waiting"
    assert not alive(pid)


async def test_a_clip_longer_than_the_deadline_is_refused_up_front(camera: CameraCapability) -> None:
    before = children()
    err = await coded(camera, "camera.clip", {"durationMs": 5000}, timeout=3)
    assert err.code == "INVALID_REQUEST" and "timeout" in err.message
    assert set(children()) <= set(before)


async def test_busy_device_queues_then_refuses(camera: CameraCapability) -> None:
    camera.config = replace(camera.config, queue_limit=1)
    params = {"maxWidth": 320, "delayMs": 1500}
    tasks = [asyncio.create_task(call(camera, "camera.snap", params)) for _ in range(3)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [r for r in results if isinstance(r, dict)]
    busy = [r for r in results if isinstance(r, InvokeError) and r.code == "CAMERA_BUSY"]
    assert len(ok) == 2 and len(busy) == 1, results


async def test_oversized_snap_is_re_encoded_to_fit(camera: CameraCapability, tmp_path: Path) -> None:
    full = await call(camera, "camera.snap", {"maxWidth": 1600, "quality": 1.0, "delayMs": 0})
    budget = len(full["base64"]) // 3
    small = await call(
        camera,
        "camera.snap",
        {"maxWidth": 1600, "quality": 1.0, "delayMs": 0},
        max_payload=budget + 512,
    )
    assert len(small["base64"]) <= budget
    assert "re-encoded" in small["note"]
    stream = ffprobe(base64.b64decode(small["base64"]), tmp_path, ".jpg")["streams"][0]
    assert (stream["width"], stream["height"]) == (small["width"], small["height"])


async def test_oversized_clip_is_refused_with_a_hint(camera: CameraCapability) -> None:
    err = await coded(camera, "camera.clip", {"durationMs": 1000}, max_payload=64 * 1024)
    assert err.code == "PAYLOAD_TOO_LARGE"
    assert "shorter durationMs" in err.message


async def test_capture_switched_off_is_camera_disabled(camera: CameraCapability) -> None:
    camera.config = replace(camera.config, capture=False)
    assert (await coded(camera, "camera.snap", {})).code == "CAMERA_DISABLED"
    assert (await coded(camera, "camera.clip", {})).code == "CAMERA_DISABLED"
    assert (await call(camera, "camera.list", {}))["devices"], "listing still works with capture off"


# --- simulated-only behaviour (the board model itself) -------------------------------------------------
pytestmark_sim = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe not installed")


@pytestmark_sim
async def test_simulated_clip_has_audio_unless_asked_not_to(tmp_path: Path) -> None:
    cap = make_camera(Config(enabled=True), simulated=True)
    result = await call(cap, "camera.clip", {"durationMs": 1000})
    assert result["hasAudio"] is True
    types_ = sorted(
        s["codec_type"] for s in ffprobe(base64.b64decode(result["base64"]), tmp_path, ".mp4")["streams"]
    )
    assert types_ == ["audio", "video"]


@pytestmark_sim
async def test_clip_duration_is_clamped_to_its_range(tmp_path: Path) -> None:
    cap = make_camera(Config(enabled=True, simulated_audio=False), simulated=True)
    result = await call(cap, "camera.clip", {"durationMs": 10})
    assert result["durationMs"] == 250
    assert (
        abs(float(ffprobe(base64.b64decode(result["base64"]), tmp_path, ".mp4")["format"]["duration"]) - 0.25)
        < 0.05
    )


@pytestmark_sim
async def test_two_simulated_devices_capture_in_parallel() -> None:
    cap = make_camera(Config(enabled=True, simulated_devices=2, queue_limit=0), simulated=True)
    ids = [d["id"] for d in (await call(cap, "camera.list", {}))["devices"]]
    assert ids == ["sim0", "sim1"]
    results = await asyncio.gather(
        *(call(cap, "camera.snap", {"deviceId": i, "delayMs": 800, "maxWidth": 320}) for i in ids)
    )
    assert all(r["width"] == 320 for r in results)


@pytestmark_sim
async def test_facing_picks_the_matching_camera() -> None:
    cap = make_camera(Config(enabled=True, simulated_devices=2), simulated=True)
    positions = {d["position"]: d["id"] for d in (await call(cap, "camera.list", {}))["devices"]}
    assert positions == {"back": "sim0", "front": "sim1"}
    gate = cap._gates  # a capture on sim1 leaves a gate for sim1 only
    await call(cap, "camera.snap", {"facing": "front", "delayMs": 0, "maxWidth": 160})
    assert list(gate) == ["sim1"]


async def test_reload_applies_the_privacy_switch_without_re_detecting() -> None:
    cap = make_camera(Config(enabled=True), simulated=True)
    await call(cap, "camera.list", {})
    backend = cap._backend
    await cap.reload(replace(cap.config, capture=False))
    assert cap._backend is backend
    assert (await coded(cap, "camera.snap", {})).code == "CAMERA_DISABLED"
    await cap.reload(replace(cap.config, capture=True, simulated_devices=2))
    assert [d["id"] for d in (await call(cap, "camera.list", {}))["devices"]] == ["sim0", "sim1"]


async def test_no_backend_is_camera_unavailable() -> None:
    cap = make_camera(Config(enabled=True, ffmpeg="/nonexistent/ffmpeg"), simulated=True)
    assert (await call(cap, "camera.list", {}))["devices"] == []
    err = await coded(cap, "camera.snap", {})
    assert err.code == "CAMERA_UNAVAILABLE" and "ffmpeg" in err.message


async def test_disabled_capability_declares_nothing() -> None:
    assert make_camera(Config(enabled=False)).handlers() == {}
