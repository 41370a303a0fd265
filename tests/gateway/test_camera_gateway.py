"""The camera through the real gateway and its operator CLI, on a simulated board whose camera really
encodes (its still scene through ffmpeg → JPEG, H.264/MP4). Files the CLI writes are decoded with ffprobe."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway, Operator, invoke_payload
from tests.support.node import NodeProcess

pytestmark = [pytest.mark.gateway]

CAMERA = {"camera": {"enabled": True, "default_delay_ms": 300}}


@pytest.fixture
def cam_node(gateway: Gateway, node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_factory(gateway, name="cam-node", extra=CAMERA)


def ffprobe(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", path],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(out.stdout))


def cli_json(gateway: Gateway, *args: str) -> Any:
    proc = gateway.cli(*args, "--json", timeout=90)
    text = proc.stdout.strip()
    return json.loads(text[min(i for i in (text.find("{"), text.find("[")) if i >= 0) :])


def cli_error(gateway: Gateway, *args: str) -> str:
    proc = gateway.cli(*args, "--json", timeout=90, check=False)
    assert proc.returncode != 0, f"expected a failure: {proc.stdout}"
    return proc.stdout + proc.stderr


def children_of(pid: int) -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return found


def test_cli_list_snap_and_clip_produce_real_files(gateway: Gateway, cam_node: NodeProcess) -> None:
    node = cam_node.node_id
    listed = cli_json(gateway, "nodes", "camera", "list", "--node", node)
    devices = listed.get("devices") if isinstance(listed, dict) else listed
    assert any(d["id"] == "sim0" and d["deviceType"] == "simulated" for d in devices), listed

    snap = cli_json(
        gateway, "nodes", "camera", "snap", "--node", node, "--max-width", "640", "--quality", "0.7"
    )
    (shot,) = snap["files"]
    assert shot["path"].startswith("/tmp/openclaw/")
    stream = ffprobe(shot["path"])["streams"][0]
    assert stream["codec_name"] == "mjpeg"
    assert stream["width"] == 640 == shot["width"] and stream["height"] == shot["height"] == 360

    default = cli_json(gateway, "nodes", "camera", "snap", "--node", node)
    assert ffprobe(default["files"][0]["path"])["streams"][0]["width"] == 1600  # the node's default maxWidth

    clip = cli_json(gateway, "nodes", "camera", "clip", "--node", node, "--duration", "2000")
    info = ffprobe(clip["file"]["path"])
    assert abs(float(info["format"]["duration"]) - 2.0) <= 0.2
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"} and clip["file"]["hasAudio"] is True

    silent = cli_json(gateway, "nodes", "camera", "clip", "--node", node, "--duration", "1s", "--no-audio")
    info = ffprobe(silent["file"]["path"])
    assert [s["codec_type"] for s in info["streams"]] == ["video"] and silent["file"]["hasAudio"] is False
    assert abs(float(info["format"]["duration"]) - 1.0) <= 0.1


async def test_errors_busy_and_deadline_through_the_gateway(gateway: Gateway, cam_node: NodeProcess) -> None:
    node = cam_node.node_id
    # the CLI shows the node's message (it drops the code, and checks --quality itself) ...
    out = cli_error(gateway, "nodes", "camera", "snap", "--node", node, "--device-id", "/dev/video9")
    assert "unknown deviceId '/dev/video9' (cameras: sim0)" in out
    # ... so the codes are checked over node.invoke
    async with Operator(gateway) as op:
        for params in ({"deviceId": "/dev/video9"}, {"quality": 5}, {"maxWidth": 0}, {"format": "png"}):
            frame = await op.invoke(node, "camera.snap", params, timeout_ms=15000)
            assert frame["error"]["details"]["nodeError"]["code"] == "INVALID_REQUEST", (params, frame)

        # two snaps at once on the one camera: both succeed (queued) or one is CAMERA_BUSY
        frames = await asyncio.gather(
            *(
                op.invoke(node, "camera.snap", {"maxWidth": 320, "delayMs": 800}, timeout_ms=20000)
                for _ in range(2)
            )
        )
        for frame in frames:
            if frame.get("ok"):
                assert invoke_payload(frame)["width"] == 320
            else:
                assert frame["error"]["details"]["nodeError"]["code"] == "CAMERA_BUSY", frame
        assert any(f.get("ok") for f in frames)

        # a snap cut short by its invoke deadline: ffmpeg was running and is gone afterwards
        invoke = asyncio.create_task(op.invoke(node, "camera.snap", {"delayMs": 8000}, timeout_ms=2000))
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline and not invoke.done():
            seen = {p: c for p, c in children_of(cam_node.pid).items() if c == "ffmpeg"}
            await asyncio.sleep(0.05)
        assert seen, "the snap never started ffmpeg"
        frame = await asyncio.wait_for(invoke, 30)
        assert not frame.get("ok") and "TIMEOUT" in json.dumps(frame["error"]), frame
        await asyncio.sleep(0.5)
        left = [p for p in seen if Path(f"/proc/{p}").exists()]
        assert not left, f"ffmpeg {left} outlived the invoke"

        # the camera is free again and the node kept running
        frame = await op.invoke(node, "camera.snap", {"maxWidth": 160, "delayMs": 0}, timeout_ms=15000)
        assert invoke_payload(frame)["width"] == 160
    assert cam_node.proc is not None and cam_node.proc.poll() is None
