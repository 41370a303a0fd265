"""The camera through a real V4L2 driver on the card: `vivid` (the kernel's virtual video test driver,
a module of Debian's arm64 kernel) in the arm64 guest under `qemu-system-aarch64 -M virt`.

One boot of the built card (plus Debian's ffmpeg, see camera_card.py), its own root spec from
cmdline.txt, `modules-load=vivid` on the command line, the node under the card's real hardened unit
(DevicePolicy=closed, DeviceAllow=char-video4linux), the camera enabled with the v4l2 backend by the
edgeclaw.yaml on the FAT partition, and a network path only to a real gateway on the host's loopback
(QEMU user networking with restrict=on and one guestfwd), all inside a loopback-only network namespace.
Through the gateway: camera.list shows vivid's capture node, camera.snap is a JPEG of the requested
width that decodes and shows vivid's colour bars, camera.clip an MP4 that ffprobe decodes with the
requested duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.image.camera_card import camera_card
from tests.image.conftest import TIMINGS

try:  # the tier's one build per session: the `built` fixture, in conftest.py once the image branch lands
    from tests.image.conftest import Built  # type: ignore[attr-defined]
except ImportError:
    from tests.image.test_image import Built, built  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SNAP_WIDTH = 640
CLIP_MS = 2000


@pytest.fixture(scope="module")
def vivid_run(built: Built, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("vivid")
    disk = camera_card(built.image, built.rootfs, built.manifest, work)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private",
         sys.executable, "-m", "tests.image.vivid_boot", "camera", str(disk), str(work)],
        capture_output=True, text=True, timeout=1200, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    disk.unlink()
    return result, work


def diag(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1)[-9000:]


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def gray_pixels(path: Path, width: int, height: int) -> bytes:
    """The decoded picture as 8-bit luma (ffmpeg on the host decodes it; a broken JPEG fails here)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-pix_fmt", "gray", "-f", "rawvideo", "-"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(out.stdout) == width * height, (len(out.stdout), width, height)
    return out.stdout


@pytest.mark.timeout(3300)  # includes the build when this module runs alone
def test_vivid_camera_list_snap_clip_through_gateway(vivid_run: tuple[dict[str, Any], Path]) -> None:
    result, work = vivid_run
    assert "error" not in result, diag(result)
    TIMINGS.append(
        f"vivid: boot to paired+connected {result['boot_to_connected_s']} s, snap {result.get('snap_s')} s, "
        f"clip {result.get('clip_s')} s, total {result['total_s']} s",
    )
    # camera.list: vivid's capture node, and only capture nodes (not its output/metadata nodes)
    devices = result["list"]["devices"]
    # (vivid registers video0 capture, video1 output, video2/video3 metadata capture/output)
    assert [(d["name"], d["deviceType"]) for d in devices] == [("vivid", "v4l2")], diag(result)
    assert devices[0]["id"].startswith("/dev/video"), devices
    # camera.snap: a JPEG of the requested width that decodes to vivid's colour bars
    assert "snap_error" not in result, diag(result)
    snap = result["snap"]
    assert snap["format"] == "jpg" and snap["width"] == SNAP_WIDTH, snap
    jpeg = work / "snap.jpg"
    assert jpeg.read_bytes()[:3] == b"\xff\xd8\xff"
    stream = ffprobe(jpeg)["streams"][0]
    assert stream["codec_name"] == "mjpeg" and (stream["width"], stream["height"]) == (
        snap["width"],
        snap["height"],
    ), (stream, snap)
    pixels = gray_pixels(jpeg, snap["width"], snap["height"])
    row = pixels[snap["height"] // 2 * snap["width"] : (snap["height"] // 2 + 1) * snap["width"]]
    # colour bars: across the middle row, the luma steps through several distinct levels, bright and dark
    levels = {v // 32 for v in row}
    assert len(levels) >= 4 and max(row) > 150 and min(row) < 80, sorted(levels)
    # camera.clip: an MP4 (H.264) that decodes with about the requested duration
    assert "clip_error" not in result, diag(result)
    clip = result["clip"]
    assert clip["format"] == "mp4" and clip["durationMs"] == CLIP_MS and clip["hasAudio"] is False, clip
    probe = ffprobe(work / "clip.mp4")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert video["codec_name"] == "h264", video
    duration = float(probe["format"]["duration"])
    assert abs(duration - CLIP_MS / 1000) <= 0.6, probe["format"]
    frames = int(video["nb_read_frames"])
    assert frames >= 5 and video["avg_frame_rate"] != "0/0", video
    # the node ran under the card's hardened unit: no device outside its DeviceAllow list was needed
    assert "Permission denied" not in "\n".join(result["console_camera"]), diag(result)
