"""The motion detector's decisions (synthetic frames: exact control of what changed) and the worker process's
behaviour when its capture misbehaves; settings validation with the config key in the error."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from edgeclaw.capabilities.camera.motion import WORKER, MotionSettings
from edgeclaw.capabilities.camera.motion_worker import Detector
from edgeclaw.typedconfig import ConfigError

W, H = 160, 120


def frame(
    level: int = 100, noise: int = 12, box: tuple[int, int, int, int] | None = None, box_level: int = 230
) -> bytes:
    """A flat picture with per-pixel sensor noise and optionally a box of another brightness."""
    table = bytes(min(255, max(0, level + b % (2 * noise + 1) - noise)) for b in range(256))
    px = bytearray(random.randbytes(W * H).translate(table))
    if box is not None:
        x, y, w, h = box
        for row in range(y, y + h):
            px[row * W + x : row * W + x + w] = bytes([box_level]) * w
    return bytes(px)


def run_frames(det: Detector, frames: list[bytes]) -> list[float]:
    return [a for f in frames if (a := det.feed(f)) is not None]


def detector(**kw: float) -> Detector:
    args: dict[str, float] = {"sensitivity": 0.1, "min_area": 0.02, "fps": 2.0, "background_s": 4.0}
    args.update(kw)
    return Detector(W, H, **args)


def test_a_still_noisy_scene_is_never_motion() -> None:
    assert run_frames(detector(), [frame() for _ in range(60)]) == []


def test_an_object_that_appears_and_stays_is_one_detection() -> None:
    det = detector()
    still = [frame() for _ in range(10)]
    with_box = [frame(box=(40, 30, 40, 40)) for _ in range(60)]  # ~8% of the picture, stays 30 s
    hits = run_frames(det, still + with_box)
    assert len(hits) == 1
    assert 0.07 < hits[0] < 0.1
    # absorbed into the background: gone again, it is a new change (one more detection)
    assert len(run_frames(det, [frame() for _ in range(10)])) == 1


def test_min_area_is_respected() -> None:
    small = (10, 10, 12, 12)  # 144 px = 0.75 % of the picture
    assert run_frames(detector(min_area=0.02), [frame() for _ in range(6)] + [frame(box=small)] * 4) == []
    hits = run_frames(detector(min_area=0.005), [frame() for _ in range(6)] + [frame(box=small)] * 4)
    assert len(hits) == 1


def test_sensitivity_is_respected() -> None:
    # a box 40 luma levels brighter than the wall: more than 0.1 of full scale (25.5), less than 0.2 (51)
    frames = [frame() for _ in range(6)] + [frame(box=(40, 30, 60, 40), box_level=140)] * 4
    assert len(run_frames(detector(sensitivity=0.1), frames)) == 1
    assert run_frames(detector(sensitivity=0.2), frames) == []


def test_the_whole_picture_getting_brighter_is_not_motion() -> None:
    # auto exposure or a cloud: everything moves together, nothing moved
    frames = [frame(100) for _ in range(6)] + [frame(140) for _ in range(6)]
    assert run_frames(detector(), frames) == []


def test_warmup_follows_the_camera_settling() -> None:
    # the first 2 s (exposure settling on a real camera) only build the background
    det = detector()
    assert run_frames(det, [frame(40), frame(90), frame(120), frame(100)]) == []
    assert run_frames(det, [frame() for _ in range(5)]) == []


def worker(capture: list[str], timeout: float = 10.0) -> tuple[int, list[dict[str, object]]]:
    argv = [sys.executable, "-I", str(WORKER), "--width=160", "--height=120", "--fps=2"]
    argv += ["--sensitivity=0.1", "--min-area=0.02", "--", *capture]
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    return done.returncode, [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_a_capture_that_sends_garbage_and_ends_is_a_coded_error() -> None:
    # 2.5 frames of random bytes, then the capture exits: frames analysed, then a clear error line
    code, lines = worker(["sh", "-c", "head -c 48000 /dev/urandom"])
    assert code == 1
    assert lines[0]["type"] == "start"
    assert lines[-1]["type"] == "error"
    assert lines[-1]["code"] == "CAMERA_MOTION_CAPTURE_ENDED"
    assert "after 2 frames" in str(lines[-1]["message"])


def test_a_capture_that_cannot_start_is_camera_unavailable() -> None:
    code, lines = worker(["/nonexistent/ffmpeg"])
    assert code == 1 and lines[-1]["code"] == "CAMERA_UNAVAILABLE"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 15),
        ("width", 161),
        ("width", 1280),
        ("height", 0),
        ("fps", 0),
        ("fps", 30),
        ("sensitivity", 0),
        ("sensitivity", 1.5),
        ("min_area", 0),
        ("min_area", float("nan")),
        ("cooldown_s", -1),
        ("heartbeat_s", 0.1),
        ("background_s", "4"),
        ("device", ""),
    ],
)
def test_bad_settings_name_the_key(field: str, value: object) -> None:
    settings = MotionSettings(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        settings.validate("triggers.porch.camera_motion")
    assert info.value.key == f"triggers.porch.camera_motion.{field}"


def test_default_settings_are_valid() -> None:
    MotionSettings().validate("triggers.porch.camera_motion")
    MotionSettings(device="sim0", width=320, height=240, fps=5, sensitivity=1, min_area=1).validate("k")


def test_moving_again_after_a_still_moment_is_a_new_detection() -> None:
    # the background is slow (60 s): the first place never gets absorbed, yet a second move is news
    det = detector(background_s=60.0)
    first = [frame(box=(20, 20, 40, 40)) for _ in range(6)]  # 3 s still after arriving
    second = [frame(box=(100, 60, 40, 40)) for _ in range(6)]
    hits = run_frames(det, [frame() for _ in range(6)] + first + second)
    assert len(hits) == 2
