"""camera.snap / camera.clip parameters → typed requests, with coded errors for bad input.

Nonsense (wrong types, negative numbers, quality outside 0.05–1, unknown formats) is refused with
INVALID_REQUEST; durationMs and delayMs are clamped into their ranges the way the reference Linux node
does, because the openclaw CLI passes the user's value through unclamped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgeclaw.capabilities.base import InvokeError

MIN_WIDTH, MAX_WIDTH = 16, 8192
MIN_CLIP_MS, MAX_CLIP_MS, DEFAULT_CLIP_MS = 250, 60_000, 3000
MAX_DELAY_MS = 10_000
FACINGS = ("front", "back")


@dataclass(frozen=True)
class SnapRequest:
    max_width: int = 1600
    quality: float = 0.9
    delay_ms: int = 2000
    device_id: str | None = None
    facing: str | None = None


@dataclass(frozen=True)
class ClipRequest:
    duration_ms: int = DEFAULT_CLIP_MS
    include_audio: bool = True
    device_id: str | None = None
    facing: str | None = None


def _bad(message: str) -> InvokeError:
    return InvokeError("INVALID_REQUEST", message)


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{name} must be a number")
    return float(value)


def _common(params: dict[str, Any], fmt_ok: tuple[str, ...]) -> tuple[str | None, str | None]:
    fmt = params.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in fmt_ok):
        raise _bad(f"format must be {fmt_ok[0]!r}")
    facing = params.get("facing")
    if facing is not None and (not isinstance(facing, str) or facing not in FACINGS):
        raise _bad("facing must be 'front' or 'back'")
    device_id = params.get("deviceId")
    if device_id is not None and (not isinstance(device_id, str) or not device_id.strip()):
        raise _bad("deviceId must be a non-empty string (see camera.list)")
    return facing, device_id


def parse_snap(params: dict[str, Any], default_delay_ms: int) -> SnapRequest:
    facing, device_id = _common(params, ("jpg", "jpeg"))
    width = _number(params, "maxWidth")
    if width is not None and (width != int(width) or not MIN_WIDTH <= width <= MAX_WIDTH):
        raise _bad(f"maxWidth must be a whole number of pixels between {MIN_WIDTH} and {MAX_WIDTH}")
    quality = _number(params, "quality")
    if quality is not None and not 0.05 <= quality <= 1.0:
        raise _bad("quality must be between 0.05 and 1")
    delay = _number(params, "delayMs")
    if delay is not None and delay < 0:
        raise _bad("delayMs must not be negative")
    return SnapRequest(
        max_width=int(width) if width is not None else 1600,
        quality=quality if quality is not None else 0.9,
        delay_ms=int(min(delay, MAX_DELAY_MS)) if delay is not None else default_delay_ms,
        device_id=device_id,
        facing=facing,
    )


def parse_clip(params: dict[str, Any]) -> ClipRequest:
    facing, device_id = _common(params, ("mp4",))
    duration = _number(params, "durationMs")
    if duration is not None and duration <= 0:
        raise _bad("durationMs must be positive")
    audio = params.get("includeAudio")
    if audio is not None and not isinstance(audio, bool):
        raise _bad("includeAudio must be true or false")
    return ClipRequest(
        duration_ms=int(min(max(duration, MIN_CLIP_MS), MAX_CLIP_MS))
        if duration is not None
        else DEFAULT_CLIP_MS,
        include_audio=audio if audio is not None else True,
        device_id=device_id,
        facing=facing,
    )


def jpeg_qscale(quality: float) -> int:
    """quality 0.05–1 → ffmpeg's MJPEG -q:v (2 best … 31 worst)."""
    return max(2, min(31, round(2 + (1.0 - quality) * 29)))
