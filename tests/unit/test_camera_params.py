"""Parameter checking for camera.snap / camera.clip, the JPEG size reader and the camera config."""

from __future__ import annotations

import math
import struct

import pytest

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.camera import Config
from edgeclaw.capabilities.camera.media import base64_len, jpeg_size, max_raw_bytes
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest, jpeg_qscale, parse_clip, parse_snap
from edgeclaw.typedconfig import ConfigError, build


def test_snap_defaults_are_the_protocols() -> None:
    assert parse_snap({}, 2000) == SnapRequest(max_width=1600, quality=0.9, delay_ms=2000)
    assert parse_snap({"format": "jpg", "delayMs": None}, 500).delay_ms == 500


def test_snap_values_are_taken_and_delay_clamped() -> None:
    req = parse_snap(
        {"maxWidth": 640, "quality": 0.05, "delayMs": 60000, "deviceId": "sim1", "facing": "front"}, 0
    )
    assert req == SnapRequest(max_width=640, quality=0.05, delay_ms=10000, device_id="sim1", facing="front")


@pytest.mark.parametrize(
    "params",
    [
        {"maxWidth": 0},
        {"maxWidth": 10},
        {"maxWidth": 100000},
        {"maxWidth": 640.5},
        {"maxWidth": "640"},
        {"maxWidth": True},
        {"quality": 0.01},
        {"quality": 1.01},
        {"quality": math.nan},
        {"quality": "high"},
        {"delayMs": -1},
        {"format": "png"},
        {"format": 3},
        {"facing": "left"},
        {"deviceId": ""},
        {"deviceId": 7},
    ],
)
def test_bad_snap_params_are_invalid_requests(params: dict[str, object]) -> None:
    with pytest.raises(InvokeError) as info:
        parse_snap(params, 0)
    assert info.value.code == "INVALID_REQUEST"


def test_clip_defaults_and_clamping() -> None:
    assert parse_clip({}) == ClipRequest(duration_ms=3000, include_audio=True)
    assert parse_clip({"durationMs": 100}).duration_ms == 250
    assert parse_clip({"durationMs": 600000}).duration_ms == 60000
    assert parse_clip({"durationMs": 1500.7, "includeAudio": False, "format": "mp4"}) == ClipRequest(
        1500, False
    )


@pytest.mark.parametrize(
    "params",
    [{"durationMs": 0}, {"durationMs": -5}, {"durationMs": "3s"}, {"includeAudio": "yes"}, {"format": "mov"}],
)
def test_bad_clip_params_are_invalid_requests(params: dict[str, object]) -> None:
    with pytest.raises(InvokeError) as info:
        parse_clip(params)
    assert info.value.code == "INVALID_REQUEST"


def test_quality_maps_onto_ffmpeg_qscale() -> None:
    assert jpeg_qscale(1.0) == 2 and jpeg_qscale(0.05) == 30 and jpeg_qscale(0.9) == 5
    assert [jpeg_qscale(q / 10) for q in range(1, 11)] == sorted(
        (jpeg_qscale(q / 10) for q in range(1, 11)), reverse=True
    )


def _jpeg(w: int, h: int, progressive: bool = False) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = (
        b"\xff"
        + (b"\xc2" if progressive else b"\xc0")
        + struct.pack(">HBHHB", 11, 8, h, w, 1)
        + b"\x01\x11\x00"
    )
    return b"\xff\xd8" + app0 + sof + b"\xff\xda\x00\x02" + b"\x00" * 10 + b"\xff\xd9"


def test_jpeg_size_reads_the_frame_header() -> None:
    assert jpeg_size(_jpeg(1600, 900)) == (1600, 900)
    assert jpeg_size(_jpeg(33, 7, progressive=True)) == (33, 7)
    assert jpeg_size(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) is None  # PNG labelled jpg is caught
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00") is None
    assert jpeg_size(b"") is None


def test_base64_budget_arithmetic() -> None:
    for n in (0, 1, 2, 3, 4, 1000, 999_999):
        assert base64_len(n) == len(__import__("base64").b64encode(b"x" * n))
    assert base64_len(max_raw_bytes(12_000_000)) <= 12_000_000


def test_config_defaults_are_opt_in_and_under_the_cli_limit() -> None:
    cfg = build(Config, None, path="camera")
    assert cfg.enabled is False and cfg.capture is True and cfg.backend == "auto"
    assert cfg.max_base64_chars < 13_100_000  # the openclaw CLI fails above ~13.1 M characters


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"default_delay_ms": 20000}, "default_delay_ms"),
        ({"max_base64_chars": 10}, "max_base64_chars"),
        ({"queue_limit": -1}, "queue_limit"),
        ({"clip_max_width": 8}, "clip_max_width"),
        ({"backend": "webcam"}, "backend"),
    ],
)
def test_bad_config_names_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(Config, {"enabled": True, **section}, path="camera")
    assert key in str(info.value)
