"""Camera motion detection for triggers: frame differencing at low resolution in a worker process,
never in the daemon (the daemon only reads one small line per detection).

Interface shared by the triggers capability (the consumer) and the motion worker (the producer,
motion_worker.py). The watcher here starts the worker (with the backend's streaming capture under it)
through edgeclaw.platform.procgroup, applies the cooldown, and fails loudly — a coded MotionError — when
the worker dies or goes silent, so the supervisor above it restarts and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.base import InvokeError

log = logging.getLogger("edgeclaw.camera.motion")

WORKER = Path(__file__).resolve().parent / "motion_worker.py"
MAX_LINE = 4096  # a longer stdout line is not the worker's: dropped and counted
STDERR_LOG_LINES = 20  # worker/capture stderr lines logged per run; the rest only counted
STDERR_TAIL = 1000  # characters of stderr kept for the error message when the worker dies
STARTUP_GRACE_S = 15.0  # first frames: a USB camera or libcamera may take seconds to start streaming
KILL_GRACE_S = 0.5


@dataclass
class MotionSettings:
    """What the `camera_motion` trigger source configures (validated with the triggers config)."""

    device: str | None = None  # camera device id; None = the camera section's default device
    width: int = 160  # analysis size: small on purpose (CPU on a Pi Zero 2 W)
    height: int = 120
    fps: float = 2.0  # frames analysed per second
    sensitivity: float = 0.1  # 0..1 change of a pixel's luma (after blur) that counts as changed
    min_area: float = 0.02  # 0..1 fraction of the frame that must change to call it motion
    cooldown_s: float = 10.0  # no second detection within this many seconds
    heartbeat_s: float = 5.0  # worker heartbeat; silent for 3 heartbeats (or 3 frames) = hung
    background_s: float = 4.0  # how fast the background absorbs a change that stays (time constant)

    def validate(self, key: str) -> None:
        """Raise edgeclaw.typedconfig.ConfigError (with `key`) for out-of-range values."""
        from edgeclaw.typedconfig import ConfigError

        def bad(field: str, message: str) -> ConfigError:
            return ConfigError(message, key=f"{key}.{field}" if key else field)

        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise bad("device", "must be a camera device id (see camera.list) or left out")
        for field, lo_n, hi_n in (("width", 16, 640), ("height", 16, 480)):
            n = getattr(self, field)
            if not isinstance(n, int) or isinstance(n, bool) or not lo_n <= n <= hi_n or n % 2:
                raise bad(field, f"must be an even whole number between {lo_n} and {hi_n}")
        checks: tuple[tuple[str, float, float, bool], ...] = (
            ("fps", 0.1, 15.0, True),
            ("sensitivity", 0.0, 1.0, False),  # 0 itself would call sensor noise motion
            ("min_area", 0.0, 1.0, False),
            ("cooldown_s", 0.0, 86400.0, True),
            ("heartbeat_s", 0.5, 60.0, True),
            ("background_s", 1.0, 600.0, True),
        )
        for field, lo, hi, lo_included in checks:
            x = getattr(self, field)
            ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            if not ok or not (lo <= x if lo_included else lo < x) or x > hi:
                interval = f"{'[' if lo_included else '('}{lo:g}, {hi:g}]"
                raise bad(field, f"must be a number in {interval}")


@dataclass(frozen=True)
class MotionEvent:
    ts: float  # wall clock of the frame that crossed the threshold
    area: float  # fraction of the frame that changed, 0..1
    frames: int  # frames analysed so far by this worker


class MotionError(InvokeError):
    """Motion stopped: CAMERA_MOTION_WORKER_DIED, CAMERA_MOTION_SILENT, CAMERA_MOTION_UNSUPPORTED,
    CAMERA_UNAVAILABLE, CAMERA_DISABLED. Raised out of run() for the supervisor to restart and count."""


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class MotionWatcher:
    """Runs the worker process for one device and calls `on_motion` (on the event loop) per detection.

    `run()` is a supervised child: it returns only by cancellation (and then the worker process and its
    children are gone) or raises when the worker dies, so the supervisor restarts and counts it.
    `worker`: the command that runs motion_worker.py (tests substitute a misbehaving one).
    """

    def __init__(
        self,
        settings: MotionSettings,
        camera_config: Any,
        on_motion: Callable[[MotionEvent], None],
        *,
        simulated: bool,
        runtime_dir: str,
        worker: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.camera_config = camera_config
        self.on_motion = on_motion
        self.simulated = simulated
        self.runtime_dir = runtime_dir
        self.worker = list(worker) if worker is not None else [sys.executable, "-I", str(WORKER)]
        self.frames = 0  # analysed by the current worker (from its heartbeats and detections)
        self.frames_total = 0  # over all runs
        self.detections = 0  # delivered to on_motion
        self.suppressed = 0  # detections inside the cooldown
        self.bad_lines = 0
        self.runs = 0
        self.last_heartbeat: float | None = None  # wall clock
        self.last_error: str | None = None
        self.worker_cpu_s: float | None = None
        self.device_id: str | None = None
        self._pid: int | None = None
        self._capture_pid: int | None = None
        self._child: Any = None
        self._last_fire = -math.inf  # monotonic; kept across restarts: a restart is no reason to fire
        self._frames_base = 0
        self._last_line = 0.0
        self._out = bytearray()
        self._err = bytearray()
        self._err_tail: deque[str] = deque(maxlen=20)
        self._err_logged = 0
        self._err_dropped = 0
        self._error_line: str | None = None

    # the supervised child -----------------------------------------------------------------------------
    async def run(self) -> None:
        from edgeclaw.platform import procgroup

        try:
            self.settings.validate("camera_motion")
            argv = await self._command()
        except Exception as exc:
            self.last_error = str(exc)
            raise
        self.runs += 1
        self._reset_run()
        try:
            child, out_fd, err_fd = await procgroup.start(argv)
        except OSError as exc:
            raise MotionError("CAMERA_MOTION_WORKER_DIED", f"cannot start the motion worker: {exc}") from None
        self._child, self._pid = child, child.pid
        loop = asyncio.get_running_loop()
        self._last_line = loop.time()
        pumps = []
        if out_fd is not None:
            pumps.append(asyncio.ensure_future(procgroup.read_fd(out_fd, self._feed_out)))
        if err_fd is not None:
            pumps.append(asyncio.ensure_future(procgroup.read_fd(err_fd, self._feed_err)))
        exited = asyncio.ensure_future(child.wait())
        try:
            while True:
                # until frames flow (the first heartbeat or detection), a camera gets STARTUP_GRACE_S more
                # (heartbeats go out between frames: at a low fps no more often than frames come)
                beat = max(self.settings.heartbeat_s, 1.0 / self.settings.fps)
                bound = 3 * beat + (STARTUP_GRACE_S if self.frames == 0 else 0.0)
                remaining = self._last_line + bound - loop.time()
                if remaining <= 0:
                    raise self._fail(
                        "CAMERA_MOTION_SILENT",
                        f"the motion worker (pid {child.pid}) said nothing for {bound:.0f} s; killed",
                    )
                await asyncio.wait({exited}, timeout=min(remaining, 0.5))  # re-check: frames start
                if exited.done():
                    with contextlib.suppress(TimeoutError):  # its last words (the error line) first
                        await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), 1.0)
                    self._flush_out()
                    raise self._fail(
                        "CAMERA_MOTION_WORKER_DIED",
                        f"the motion worker (pid {child.pid}) exited with status {child.returncode}"
                        f"{': ' + self._error_line if self._error_line else ''}",
                    )
        finally:
            exited.cancel()
            if child.alive():
                await procgroup.kill_tree(child, KILL_GRACE_S)
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            procgroup.finish(child)
            self._child = None
            self._pid = self._capture_pid = None

    async def _command(self) -> list[str]:
        """The worker's argv around the backend's streaming capture; coded errors when there is none."""
        from edgeclaw.capabilities.camera import Config
        from edgeclaw.capabilities.camera.capability import build_backend

        cfg = self.camera_config if self.camera_config is not None else Config(enabled=True)
        if not cfg.capture:
            raise MotionError(
                "CAMERA_DISABLED", "the camera is turned off in this node's config (camera.capture)"
            )
        candidates, reason = build_backend(cfg, self.simulated, self.runtime_dir)
        chosen = None
        for backend in candidates:
            devices = await backend.list_devices()
            if devices:
                chosen = (backend, devices)
                break
        if chosen is None:
            why = reason or ", ".join(f"{b.name}: no cameras" for b in candidates) or "no camera backend"
            raise MotionError("CAMERA_UNAVAILABLE", f"no camera for motion detection ({why})")
        backend, devices = chosen
        want = self.settings.device
        device = next((d for d in devices if d.id == want), None) if want else devices[0]
        if device is None:
            known = ", ".join(d.id for d in devices)
            raise MotionError("CAMERA_UNAVAILABLE", f"no camera {want!r} for motion (cameras: {known})")
        self.device_id = device.id
        s = self.settings
        try:
            job = await backend.motion_job(device, s.width, s.height, s.fps)
        except InvokeError as exc:
            raise MotionError(exc.code, exc.message) from None
        opts = [
            f"--width={s.width}",
            f"--height={s.height}",
            f"--fps={s.fps:g}",
            f"--sensitivity={s.sensitivity:g}",
            f"--min-area={s.min_area:g}",
            f"--frame-format={job.frame_format}",
            f"--heartbeat={s.heartbeat_s:g}",
            f"--background-s={s.background_s:g}",
        ]
        log.info(
            "camera motion: %s on %s (%s), %dx%d at %g fps",
            backend.name,
            device.id,
            job.argv[0],
            s.width,
            s.height,
            s.fps,
        )
        return [*self.worker, *opts, "--", *job.argv]

    # the worker's output ------------------------------------------------------------------------------
    def _reset_run(self) -> None:
        self._frames_base = self.frames_total
        self.frames = 0
        self._out.clear()
        self._err.clear()
        self._err_tail.clear()
        self._err_logged = self._err_dropped = 0
        self._error_line = None

    def _feed_out(self, chunk: bytes) -> None:
        self._out += chunk
        while (nl := self._out.find(b"\n")) >= 0:
            line = bytes(self._out[:nl])
            del self._out[: nl + 1]
            self._line(line)
        if len(self._out) > MAX_LINE:  # no newline in sight: not a line of ours
            self._out.clear()
            self.bad_lines += 1

    def _flush_out(self) -> None:
        if self._out:
            line = bytes(self._out)
            self._out.clear()
            self._line(line)

    def _line(self, raw: bytes) -> None:
        """One line from the worker; anything malformed is counted and dropped, never raised."""
        try:
            if len(raw) > MAX_LINE:
                raise ValueError("too long")
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
            kind = msg.get("type")
            if kind == "motion":
                event = MotionEvent(
                    ts=_num(msg["ts"]), area=_num(msg["area"]), frames=int(_num(msg["frames"]))
                )
                self._count_frames(event.frames)
                self._last_line = asyncio.get_running_loop().time()
                self._motion(event)
            elif kind == "heartbeat":
                self._count_frames(int(_num(msg["frames"])))
                self.last_heartbeat = _num(msg.get("ts", time.time()))
                if "cpu_s" in msg:
                    self.worker_cpu_s = _num(msg["cpu_s"])
                self._last_line = asyncio.get_running_loop().time()
            elif kind == "start":
                cp = msg.get("capture_pid")
                self._capture_pid = cp if isinstance(cp, int) and not isinstance(cp, bool) else None
                self._last_line = asyncio.get_running_loop().time()
            elif kind == "error":
                self._error_line = f"{str(msg.get('code'))[:60]}: {str(msg.get('message'))[:500]}"
            else:
                raise ValueError(f"unknown type {kind!r}")
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            self.bad_lines += 1
            if self.bad_lines <= 5:
                log.warning("camera motion: ignored a malformed worker line (%s): %r", exc, raw[:120])

    def _count_frames(self, frames: int) -> None:
        if frames >= self.frames:
            self.frames = frames
            self.frames_total = self._frames_base + frames

    def _motion(self, event: MotionEvent) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_fire < self.settings.cooldown_s:
            self.suppressed += 1
            log.debug("camera motion: area %.3f inside the cooldown; suppressed", event.area)
            return
        self._last_fire = now
        self.detections += 1
        log.info("camera motion: %.1f%% of %s changed", event.area * 100, self.device_id)
        try:
            self.on_motion(event)
        except Exception:
            log.exception("camera motion: the motion handler failed")

    def _feed_err(self, chunk: bytes) -> None:
        """The worker's and the capture's stderr: to the log, bounded per run; a tail kept for errors."""
        self._err += chunk
        lines = self._err.split(b"\n")
        self._err = bytearray(lines.pop()[-MAX_LINE:])
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            self._err_tail.append(text[:300])
            if self._err_logged < STDERR_LOG_LINES:
                self._err_logged += 1
                log.warning("camera motion worker: %s", text[:300])
            else:
                self._err_dropped += 1

    def _fail(self, code: str, message: str) -> MotionError:
        tail = " | ".join(self._err_tail)[-STDERR_TAIL:]
        err = MotionError(code, message + (f" (stderr: {tail})" if tail else ""))
        self.last_error = str(err)
        if self._err_dropped:
            log.warning("camera motion: %d more worker stderr lines were not logged", self._err_dropped)
        return err

    def stats(self) -> dict[str, Any]:
        """frames analysed, detections, worker pid, worker RSS in bytes, restarts: for status/telemetry."""
        child = self._child
        capture_rss = None
        if child is not None:
            with contextlib.suppress(Exception):
                others = [rss_bytes(p) for p in child.tree() if p != child.pid]
                capture_rss = sum(r for r in others if r is not None)
        return {
            "device": self.device_id,
            "frames": self.frames_total,
            "detections": self.detections,
            "suppressed": self.suppressed,
            "worker_pid": self._pid,
            "worker_rss_bytes": rss_bytes(self._pid),
            "capture_pid": self._capture_pid,
            "capture_rss_bytes": capture_rss,
            "worker_cpu_s": self.worker_cpu_s,
            "last_heartbeat": self.last_heartbeat,
            "restarts": max(0, self.runs - 1),
            "bad_lines": self.bad_lines,
            "last_error": self.last_error,
        }


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"not a number: {v!r}")
    return float(v)
