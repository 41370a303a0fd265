#!/usr/bin/env python3
"""Motion detection worker: runs a capture command that streams raw frames of the analysis size to its
stdout, compares each frame with a slowly updated background, and prints one JSON line per detection and
a heartbeat with counters. The daemon (camera/motion.py) runs this as a separate process, so the per-pixel
work never runs on the node's event loop, and a stuck camera stack is killed with its tree.

    motion_worker.py --width 160 --height 120 --fps 2 --sensitivity 0.1 --min-area 0.02 \
                     [--frame-format gray|yuv420] [--heartbeat 5] [--background-s 4] -- CAPTURE ARGV...

Output lines (stdout, one JSON object each):
    {"type": "start", "pid": ..., "capture_pid": ...}
    {"type": "motion", "ts": <wall clock>, "area": 0..1, "frames": N}
    {"type": "heartbeat", "ts": ..., "frames": N, "detections": D, "area": last, "max_area": since last,
     "cpu_s": this process's CPU seconds}
    {"type": "error", "code": "...", "message": "..."}   (then exit 1)

Standard library only, and no EdgeClaw imports: it is started with `python -I` by file path.

The analysis, per frame (cheap on purpose: ~1 ms of Python for 160x120 on a desktop core):
- 2x2 block sums of the luma (a box blur and a downsample in one pass: 4800 cells for 160x120);
- the mean difference to the background is taken out first, so auto-exposure drifting or a cloud does
  not count as motion, only change in part of the picture does;
- a cell has changed when it differs from the background by more than `sensitivity` of full scale;
- motion is when at least `min_area` of the cells differ from the background and at least half of that
  also changed since the previous frame (the picture is changing now). One detection per episode; an
  episode ends when the changed area falls below half of `min_area` (hysteresis) or the picture has been
  still for SETTLE_S. So an object that appears and stays is one detection (then the background absorbs
  it, time constant `background_s`), and a person moving again later is a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
WARMUP_S = 2.0  # a camera's exposure settles: the background follows the frames exactly until then
SETTLE_S = 1.0  # an episode ends once the picture has not changed for this long (or the change is gone)
SCALE = 16  # the background is kept in fixed point (cell sums x16) for a smooth update without floats


class Detector:
    """Frame differencing against a running background, on 2x2 cells of a WxH luma frame."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        sensitivity: float,
        min_area: float,
        fps: float,
        background_s: float = 4.0,
    ) -> None:
        self.width, self.height = width - width % 2, height - height % 2
        self.stride = width
        self.cells = (self.width // 2) * (self.height // 2)
        self.threshold = sensitivity * 4 * 255 * SCALE
        self.min_area = min_area
        # background update: b += (c - b) >> shift, alpha = 2^-shift ~ 1 / (fps * background_s)
        self.shift = min(10, max(1, round(math.log2(max(2.0, fps * background_s)))))
        self.warmup_frames = max(1, math.ceil(fps * WARMUP_S))
        self.background: list[int] = []
        self.previous: list[int] = []
        self.settle_frames = max(1, math.ceil(fps * SETTLE_S))
        self.still = 0  # frames in a row without change to the previous frame, in an episode
        self.frames = 0
        self.moving = False
        self.last_area = 0.0

    def cells_of(self, frame: bytes | memoryview) -> list[int]:
        """2x2 block sums, x SCALE (0..16320): one list comprehension per pair of rows."""
        w, stride = self.width, self.stride
        out: list[int] = []
        for y in range(0, self.height, 2):
            r0 = frame[y * stride : y * stride + w]
            r1 = frame[(y + 1) * stride : (y + 1) * stride + w]
            out += [
                (a + b + c + d) << 4
                for a, b, c, d in zip(r0[0::2], r0[1::2], r1[0::2], r1[1::2], strict=True)
            ]
        return out

    def feed(self, frame: bytes | memoryview) -> float | None:
        """Analyse one frame; the changed area when this frame starts a motion episode, else None."""
        cells = self.cells_of(frame)
        self.frames += 1
        if self.frames <= self.warmup_frames or len(self.background) != len(cells):
            self.background = self.previous = cells
            self.last_area = 0.0
            return None
        bg, prev = self.background, self.previous
        self.previous = cells
        n = self.cells
        t = self.threshold
        total = sum(cells)
        off_bg, off_prev = (total - sum(bg)) / n, (total - sum(prev)) / n  # brightness shifts: not motion
        lo, hi, plo, phi = off_bg - t, off_bg + t, off_prev - t, off_prev + t
        changed = moved = 0
        for c, b, p in zip(cells, bg, prev, strict=True):
            d = c - b
            if d > hi or d < lo:
                changed += 1
                e = c - p  # only a cell that differs from the background can have moved
                if e > phi or e < plo:
                    moved += 1
        shift = self.shift
        self.background = [b + ((c - b) >> shift) for c, b in zip(cells, bg, strict=True)]
        area, delta = changed / n, moved / n
        self.last_area = area
        if self.moving:
            self.still = self.still + 1 if delta < self.min_area / 2 else 0
            if area < self.min_area / 2 or self.still >= self.settle_frames:
                self.moving = False
            return None
        # a new episode needs the picture to change now, not only to differ from the background (an
        # object that arrived and stays is one episode, however long the background takes to absorb it)
        if area >= self.min_area and delta >= self.min_area / 2:
            self.moving = True
            self.still = 0
            return area
        return None


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _fail(code: str, message: str) -> int:
    _emit({"type": "error", "code": code, "message": message[:500]})
    return 1


def _die_with_parent() -> None:
    """In the capture child: SIGKILL when this worker dies, however it dies (before exec)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_exact(stream: Any, buf: bytearray) -> bool:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


def run(args: argparse.Namespace) -> int:
    w, h = args.width, args.height
    frame_bytes = w * h if args.frame_format == "gray" else w * h * 3 // 2
    try:
        capture = subprocess.Popen(
            args.capture,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        return _fail("CAMERA_UNAVAILABLE", f"cannot start {args.capture[0]}: {exc}")

    def stop(signum: int, _frame: Any) -> None:
        capture.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _emit({"type": "start", "pid": os.getpid(), "capture_pid": capture.pid})
    det = Detector(
        w,
        h,
        sensitivity=args.sensitivity,
        min_area=args.min_area,
        fps=args.fps,
        background_s=args.background_s,
    )
    buf = bytearray(frame_bytes)
    detections = 0
    max_area = 0.0
    next_beat = time.monotonic() + args.heartbeat
    assert capture.stdout is not None
    while True:
        if not _read_exact(capture.stdout, buf):
            code = capture.wait()
            return _fail(
                "CAMERA_MOTION_CAPTURE_ENDED",
                f"{os.path.basename(args.capture[0])} stopped streaming (exit status {code}) after "
                f"{det.frames} frames",
            )
        area = det.feed(memoryview(buf)[: w * h])
        max_area = max(max_area, det.last_area)
        if area is not None:
            detections += 1
            _emit({"type": "motion", "ts": time.time(), "area": round(area, 4), "frames": det.frames})
        now = time.monotonic()
        if now >= next_beat:
            next_beat = now + args.heartbeat
            t = os.times()
            _emit(
                {
                    "type": "heartbeat",
                    "ts": time.time(),
                    "frames": det.frames,
                    "detections": detections,
                    "area": round(det.last_area, 4),
                    "max_area": round(max_area, 4),
                    "cpu_s": round(t.user + t.system, 3),
                }
            )
            max_area = 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="motion_worker")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--fps", type=float, required=True)
    p.add_argument("--sensitivity", type=float, required=True)
    p.add_argument("--min-area", type=float, required=True)
    p.add_argument("--frame-format", choices=("gray", "yuv420"), default="gray")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--background-s", type=float, default=4.0)
    p.add_argument("capture", nargs="+")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except BrokenPipeError:
        return 1  # the daemon went away


if __name__ == "__main__":
    sys.exit(main())
