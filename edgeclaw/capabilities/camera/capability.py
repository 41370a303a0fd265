"""The camera capability: picks a backend, resolves devices, runs one capture at a time per device
(others wait in a bounded line), and shapes results to fit the gateway's payload limit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import Capability, Handler, InvokeContext, InvokeError, NodeServices
from edgeclaw.capabilities.camera import MANIFEST, proc
from edgeclaw.capabilities.camera.backends import Backend, Device, Job
from edgeclaw.capabilities.camera.media import base64_len, jpeg_size, max_raw_bytes
from edgeclaw.capabilities.camera.params import SnapRequest, parse_clip, parse_snap

if TYPE_CHECKING:
    from edgeclaw.capabilities.camera import Config

log = logging.getLogger("edgeclaw.camera")

RESULT_OVERHEAD = 512  # the JSON keys and numbers around the base64 string
DEADLINE_MARGIN_S = 0.3  # stop a capture this long before the deadline so the error still gets there
DEVICE_CACHE_S = 30.0  # rpicam/picamera2 listing costs a second or more; re-list at most this often
REDETECT_S = 30.0
REENCODE_ATTEMPTS = 4


class _Gate:
    """One capture at a time on a device; `users` (the capture plus those in line) bounds the line."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def build_backend(
    config: Config, simulated: bool, runtime_dir: Path | str | None = None
) -> tuple[list[Backend], str]:
    """Backends to try in order for this config, or an empty list and the reason. `runtime_dir`: where
    the simulated camera keeps its scene (shared by snaps and motion detection)."""
    kind = config.backend
    if kind == "auto" and simulated:
        kind = "simulated"
    cw, fr = config.clip_max_width, config.clip_framerate
    out: list[Backend] = []
    reasons: list[str] = []
    ffmpeg_ok = shutil.which(config.ffmpeg) is not None
    if kind == "simulated":
        if not ffmpeg_ok:
            return [], f"the simulated camera needs ffmpeg ({config.ffmpeg} not found)"
        from edgeclaw.capabilities.camera import simscene
        from edgeclaw.capabilities.camera.backends.simulated import SimulatedBackend

        return [
            SimulatedBackend(
                ffmpeg=config.ffmpeg,
                count=config.simulated_devices,
                width=config.simulated_width,
                height=config.simulated_height,
                audio=config.simulated_audio,
                encoder=config.h264_encoder,
                clip_max_width=cw,
                framerate=fr,
                scene_dir=simscene.scene_dir(runtime_dir) if runtime_dir else None,
            )
        ], ""
    if kind in ("auto", "picamera2"):
        if Path(config.picamera2_python).exists():
            from edgeclaw.capabilities.camera.backends.picamera2 import Picamera2Backend

            out.append(
                Picamera2Backend(
                    python=config.picamera2_python,
                    audio_device=config.audio_device,
                    clip_max_width=cw,
                    framerate=fr,
                    rpicam_vid=config.rpicam_vid,
                )
            )
        else:
            reasons.append(f"picamera2: {config.picamera2_python} not found")
    if kind in ("auto", "rpicam"):
        if shutil.which(config.rpicam_still) and shutil.which(config.rpicam_vid):
            from edgeclaw.capabilities.camera.backends.rpicam import RpicamBackend

            out.append(
                RpicamBackend(
                    still=config.rpicam_still,
                    vid=config.rpicam_vid,
                    audio_device=config.audio_device,
                    clip_max_width=cw,
                    framerate=fr,
                )
            )
        else:
            reasons.append("rpicam: rpicam-still/rpicam-vid not installed")
    if kind in ("auto", "v4l2"):
        if ffmpeg_ok:
            from edgeclaw.capabilities.camera.backends.v4l2 import V4L2Backend

            out.append(
                V4L2Backend(
                    ffmpeg=config.ffmpeg,
                    encoder=config.h264_encoder,
                    audio_device=config.audio_device,
                    passthrough=config.mjpeg_passthrough,
                    clip_max_width=cw,
                    framerate=fr,
                )
            )
        else:
            reasons.append("v4l2: ffmpeg not installed")
    return out, "; ".join(reasons)


class CameraCapability(Capability):
    manifest = MANIFEST
    busy_code = "CAMERA_BUSY"
    max_concurrency = 4  # across devices; each device still captures one at a time
    queue_limit = 8

    def __init__(self, config: Config, services: NodeServices) -> None:
        super().__init__(config, services)
        self.config: Config = config
        self._backend: Backend | None = None
        self._devices: list[Device] = []
        self._listed_at = -math.inf
        self._detected_at = -math.inf
        self._unavailable = "no camera backend checked yet"
        self._detect_lock = asyncio.Lock()
        self._gates: dict[str, _Gate] = {}

    # capability seam ---------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Handler]:
        if not self.config.enabled:
            return {}
        return {
            "camera.list": self.handle_list,
            "camera.snap": self.handle_snap,
            "camera.clip": self.handle_clip,
        }

    async def start(self) -> None:
        # detect in the background: picamera2/rpicam listing can take seconds on a Pi
        # (a one-shot job, not a loop: the supervisor keeps it referenced and logs a crash)
        self._detect_task = self.services.supervisor.spawn(self._detect(), "camera:detect")

    async def stop(self) -> None:
        task = getattr(self, "_detect_task", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def reload(self, new_config: Any) -> None:
        """Settings read per capture apply at once; anything that shapes a backend re-detects it."""
        old = self.config
        self.config = new_config
        per_capture = {"capture", "default_delay_ms", "queue_limit", "max_base64_chars", "tmp_dir"}
        if {k: v for k, v in vars(old).items() if k not in per_capture} != {
            k: v for k, v in vars(new_config).items() if k not in per_capture
        }:
            self._backend = None
            self._detected_at = -math.inf
            self._listed_at = -math.inf

    # backend and devices -----------------------------------------------------------------------------
    async def _detect(self) -> Backend | None:
        async with self._detect_lock:
            loop = asyncio.get_running_loop()
            if self._backend is not None or loop.time() - self._detected_at < REDETECT_S:
                return self._backend
            self._detected_at = loop.time()
            runtime_dir = getattr(getattr(self.services, "config", None), "runtime_dir", None)
            candidates, reason = build_backend(self.config, self.services.simulated, runtime_dir)
            tried = [reason] if reason else []
            for backend in candidates:
                devices = await backend.list_devices()
                if devices or len(candidates) == 1:
                    self._backend, self._devices, self._listed_at = backend, devices, loop.time()
                    log.info(
                        "camera: %s backend, %d device(s): %s",
                        backend.name,
                        len(devices),
                        ", ".join(d.id for d in devices) or "none",
                    )
                    return backend
                tried.append(f"{backend.name}: no cameras")
            self._unavailable = "; ".join(tried) or "no camera backend"
            log.warning("camera: no usable camera (%s)", self._unavailable)
            return None

    async def devices(self, *, refresh: bool = False) -> list[Device]:
        backend = await self._detect()
        if backend is None:
            return []
        loop = asyncio.get_running_loop()
        if refresh or loop.time() - self._listed_at > DEVICE_CACHE_S:
            self._devices = await backend.list_devices()
            self._listed_at = loop.time()
        return list(self._devices)

    async def _resolve(self, device_id: str | None, facing: str | None) -> tuple[Backend, Device]:
        devices = await self.devices()
        backend = self._backend
        if device_id is not None and devices and not any(d.id == device_id for d in devices):
            devices = await self.devices(refresh=True)  # a camera plugged in since the last listing
        if backend is None:
            raise InvokeError("CAMERA_UNAVAILABLE", f"no camera backend on this node ({self._unavailable})")
        if not devices:
            raise InvokeError("CAMERA_UNAVAILABLE", f"the {backend.name} backend found no camera")
        if device_id is not None:
            for d in devices:
                if d.id == device_id:
                    return backend, d
            known = ", ".join(d.id for d in devices)
            raise InvokeError("INVALID_REQUEST", f"unknown deviceId {device_id!r} (cameras: {known})")
        if facing is not None:
            for d in devices:
                if d.position == facing:
                    return backend, d
        return backend, devices[0]

    def _check_capture(self) -> None:
        if not self.config.capture:
            raise InvokeError(
                "CAMERA_DISABLED", "the camera is turned off in this node's config (camera.capture)"
            )

    def _budget(self, ctx: InvokeContext) -> int:
        return max(0, min(ctx.max_payload_bytes - RESULT_OVERHEAD, self.config.max_base64_chars))

    @contextlib.asynccontextmanager
    async def _hold(self, device: Device, ctx: InvokeContext) -> AsyncIterator[None]:
        gate = self._gates.setdefault(device.id, _Gate())
        if gate.users > self.config.queue_limit:
            raise InvokeError(
                "CAMERA_BUSY", f"camera {device.id} is capturing and its queue is full; try again"
            )
        gate.users += 1  # counted before the first await, so simultaneous callers see each other
        try:
            try:
                await asyncio.wait_for(gate.lock.acquire(), max(0.01, ctx.remaining() - DEADLINE_MARGIN_S))
            except TimeoutError:
                raise InvokeError(
                    "CAMERA_BUSY", f"camera {device.id} stayed busy until the invoke deadline"
                ) from None
            try:
                yield
            finally:
                gate.lock.release()
        finally:
            gate.users -= 1

    async def _run(self, backend: Backend, job: Job, ctx: InvokeContext, what: str) -> bytes:
        """Run the backend's job until the deadline; the bytes it produced (stdout or its output file)."""
        try:
            done = await proc.run(job.argv, timeout=ctx.remaining() - DEADLINE_MARGIN_S, env=job.env)
        except proc.CaptureTimeout:
            raise InvokeError(
                "TIMEOUT",
                f"the {backend.name} {what} did not finish before the invoke deadline and was stopped",
            ) from None
        if done.returncode != 0:
            self._listed_at = -math.inf  # the camera may be gone: list again next time
            raise backend.failure(done, what)
        if job.output is None:
            return done.stdout
        try:
            return job.output.read_bytes()
        except OSError:
            raise InvokeError("CAMERA_UNAVAILABLE", f"the {backend.name} {what} produced no file") from None

    @contextlib.contextmanager
    def _workdir(self) -> Any:
        base = self.config.tmp_dir or None
        with tempfile.TemporaryDirectory(prefix="edgeclaw-camera-", dir=base) as tmp:
            yield Path(tmp)

    # commands --------------------------------------------------------------------------------------
    async def handle_list(self, ctx: InvokeContext) -> dict[str, Any]:
        return {"devices": [d.to_json() for d in await self.devices(refresh=True)]}

    async def handle_snap(self, ctx: InvokeContext) -> dict[str, Any]:
        req = parse_snap(ctx.params, self.config.default_delay_ms)
        self._check_capture()
        backend, device = await self._resolve(req.device_id, req.facing)
        budget = self._budget(ctx)
        with self._workdir() as work:
            async with self._hold(device, ctx):
                job = await backend.snap_job(device, req, work)
                data = await self._run(backend, job, ctx, "snap")
            note = None
            if base64_len(len(data)) > budget:
                data, note = await self._shrink(data, budget, req, ctx, work)
        size = jpeg_size(data)
        if size is None:
            raise InvokeError(
                "CAMERA_UNAVAILABLE", f"the {backend.name} backend did not deliver a JPEG image"
            )
        result: dict[str, Any] = {
            "format": "jpg",
            "base64": base64.b64encode(data).decode("ascii"),
            "width": size[0],
            "height": size[1],
        }
        if note:
            result["note"] = note
        return result

    async def _shrink(
        self,
        data: bytes,
        budget: int,
        req: SnapRequest,
        ctx: InvokeContext,
        work: Path,
    ) -> tuple[bytes, str]:
        """Re-encode a snap that would not fit the gateway's frame limit: lower quality, then fewer pixels."""
        from edgeclaw.capabilities.camera.backends.ffmpeg_common import reencode_jpeg

        original = jpeg_size(data) or (req.max_width, 0)
        src = work / "original.jpg"
        src.write_bytes(data)
        limit = max_raw_bytes(budget)
        quality = min(req.quality, 0.75)
        width = original[0]
        for _ in range(REENCODE_ATTEMPTS):
            width = max(16, int(width * min(0.95, math.sqrt(limit / max(1, len(data))) * 0.9)))
            job = Job(argv=reencode_jpeg(self.config.ffmpeg, src, width, quality))
            try:
                done = await proc.run(job.argv, timeout=ctx.remaining() - DEADLINE_MARGIN_S)
            except proc.CaptureTimeout:
                raise InvokeError(
                    "TIMEOUT", "re-encoding the snap to fit the payload limit ran out of time"
                ) from None
            if done.returncode != 0 or not done.stdout:
                break
            data = done.stdout
            if len(data) <= limit:
                new = jpeg_size(data) or (width, 0)
                note = (
                    f"re-encoded from {original[0]}x{original[1]} to {new[0]}x{new[1]} to fit the payload "
                    f"limit of {budget} base64 characters"
                )
                log.warning("camera: snap %s", note)
                return data, note
            quality = max(0.3, quality - 0.15)
        raise InvokeError(
            "PAYLOAD_TOO_LARGE",
            f"the snap does not fit in {budget} base64 characters even re-encoded; ask for a smaller maxWidth",
        )

    async def handle_clip(self, ctx: InvokeContext) -> dict[str, Any]:
        req = parse_clip(ctx.params)
        self._check_capture()
        backend, device = await self._resolve(req.device_id, req.facing)
        if ctx.remaining() - DEADLINE_MARGIN_S < req.duration_ms / 1000:
            raise InvokeError(
                "INVALID_REQUEST",
                f"a {req.duration_ms} ms clip cannot finish within the invoke timeout of {ctx.timeout_ms} ms; "
                "give a shorter durationMs or a longer timeout",
            )
        budget = self._budget(ctx)
        with self._workdir() as work:
            async with self._hold(device, ctx):
                job = await backend.clip_job(device, req, work)
                if job.output is None:
                    raise InvokeError("INTERNAL_ERROR", f"{backend.name} clip job has no output file")
                await self._run_to_file(backend, job, ctx)
            size = job.output.stat().st_size
            if base64_len(size) > budget:
                fits = int(req.duration_ms * max_raw_bytes(budget) / size * 0.9)
                raise InvokeError(
                    "PAYLOAD_TOO_LARGE",
                    f"the {req.duration_ms} ms clip is {size} bytes, {base64_len(size)} base64 characters; "
                    f"at most {budget} fit: ask for a shorter durationMs (about {max(0, fits)} ms would fit)",
                )
            data = job.output.read_bytes()
        if data[4:8] != b"ftyp":
            raise InvokeError("CAMERA_UNAVAILABLE", f"the {backend.name} backend did not deliver an MP4 file")
        return {
            "format": "mp4",
            "base64": base64.b64encode(data).decode("ascii"),
            "durationMs": req.duration_ms,
            "hasAudio": job.has_audio,
        }

    async def _run_to_file(self, backend: Backend, job: Job, ctx: InvokeContext) -> None:
        """Like _run for clips, without reading the file yet (its size decides whether it is sent)."""
        try:
            done = await proc.run(job.argv, timeout=ctx.remaining() - DEADLINE_MARGIN_S, env=job.env)
        except proc.CaptureTimeout:
            raise InvokeError(
                "TIMEOUT",
                f"the {backend.name} clip did not finish before the invoke deadline and was stopped",
            ) from None
        if done.returncode != 0:
            self._listed_at = -math.inf
            raise backend.failure(done, "clip")
        assert job.output is not None
        if not os.path.exists(job.output):
            raise InvokeError("CAMERA_UNAVAILABLE", f"the {backend.name} clip produced no file")
