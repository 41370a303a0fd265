"""USB/UVC webcams through V4L2 and ffmpeg.

Devices are found in /sys/class/video4linux and kept only when VIDIOC_QUERYCAP says they capture video
(a UVC camera also exposes a metadata node; a Pi exposes codec/ISP mem2mem nodes and the CSI receiver,
which only libcamera can drive). Its formats and sizes come from the driver (v4l2_enum.py), ffmpeg's
own listing only when the driver will not say. When the camera offers MJPEG at a size that fits `maxWidth`, a snap
hands out the camera's own JPEG without re-encoding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from edgeclaw.capabilities.camera import proc
from edgeclaw.capabilities.camera.backends import (
    Backend,
    Device,
    Job,
    MotionJob,
    even,
    find_alsa_capture,
    fit_width,
)
from edgeclaw.capabilities.camera.backends.ffmpeg_common import (
    BASE,
    gray_stream_output,
    h264_output,
    jpeg_output,
)
from edgeclaw.capabilities.camera.backends.v4l2_enum import enum_formats
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest, jpeg_qscale

log = logging.getLogger("edgeclaw.camera")

VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_VIDEO_M2M = 0x00008000
CAP_VIDEO_M2M_MPLANE = 0x00004000
CAP_DEVICE_CAPS = 0x80000000
# CSI receivers and Pi ISP/codec blocks: V4L2 nodes that only libcamera can drive
LIBCAMERA_ONLY_DRIVERS = {"unicam", "rp1-cfe", "bcm2835-isp", "bcm2835-codec", "pispbe", "rpivid"}
LIST_FORMATS_TIMEOUT_S = 20.0  # ffmpeg took over 5 s just to start on an emulated arm64 board
PASSTHROUGH_MIN_QUALITY = 0.8  # below this the caller wants a smaller file than the camera's own JPEG


@dataclass(frozen=True)
class QueryCap:
    driver: str
    card: str
    bus_info: str
    caps: int

    @property
    def captures_video(self) -> bool:
        if self.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE):
            return False
        return bool(self.caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE))


def decode_querycap(buf: bytes) -> QueryCap:
    driver, card, bus, _version, caps, device_caps = struct.unpack_from("16s32s32sIII", buf)

    def s(b: bytes) -> str:
        return b.split(b"\0", 1)[0].decode("utf-8", "replace")

    return QueryCap(s(driver), s(card), s(bus), device_caps if caps & CAP_DEVICE_CAPS else caps)


def querycap(path: str) -> QueryCap | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(104)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
        return decode_querycap(bytes(buf))
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Formats:
    mjpeg: tuple[tuple[int, int], ...] = ()
    raw: tuple[tuple[int, int], ...] = ()


_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")


def parse_list_formats(stderr: str) -> Formats:
    """`ffmpeg -f v4l2 -list_formats all -i DEV` → the discrete sizes offered as MJPEG and as raw."""
    mjpeg: set[tuple[int, int]] = set()
    raw: set[tuple[int, int]] = set()
    for line in stderr.splitlines():
        m = re.search(r"(Compressed|Raw)\s*:\s*(\S+)\s*:[^:]*:(.*)$", line)
        if not m:
            continue
        sizes = {(int(w), int(h)) for w, h in _SIZE.findall(m.group(3))}
        if m.group(1) == "Compressed" and m.group(2) == "mjpeg":
            mjpeg |= sizes
        elif m.group(1) == "Raw":
            raw |= sizes
    return Formats(tuple(sorted(mjpeg)), tuple(sorted(raw)))


def choose_snap_mode(
    fmts: Formats, max_width: int, quality: float, passthrough: bool
) -> tuple[str, tuple[int, int] | None]:
    """('copy', size) to hand out the camera's own JPEG, or ('encode', size or None) to re-encode."""
    if passthrough and quality >= PASSTHROUGH_MIN_QUALITY:
        fitting = [s for s in fmts.mjpeg if s[0] <= max_width]
        best_any = max(fmts.mjpeg + fmts.raw, default=None)
        # only when the fitting MJPEG mode is as large as we would get anyway after scaling
        if fitting and (best_any is None or max(fitting)[0] >= min(max_width, best_any[0])):
            return "copy", max(fitting)
    return "encode", capture_size(fmts.mjpeg or fmts.raw, max_width)


def capture_size(sizes: tuple[tuple[int, int], ...], max_width: int) -> tuple[int, int] | None:
    """The mode to capture a picture that is scaled to `max_width`: the narrowest at least that wide
    (the tallest of those: a webcam's 4:3 mode is its whole sensor), else the widest. Capturing the
    largest mode and scaling it down costs the same picture many times the bus bandwidth and decoding
    (vivid's 3840x2160 is 16 MB a frame)."""
    if not sizes:
        return None
    wide_enough = [s for s in sizes if s[0] >= max_width]
    if wide_enough:
        narrowest = min(s[0] for s in wide_enough)
        return max(s for s in wide_enough if s[0] == narrowest)
    return max(sizes)


class V4L2Backend(Backend):
    name = "v4l2"

    def __init__(
        self,
        *,
        ffmpeg: str = "ffmpeg",
        encoder: str = "libx264",
        clip_max_width: int = 1280,
        framerate: int = 30,
        audio_device: str = "auto",
        passthrough: bool = True,
        sysfs: Path = Path("/sys/class/video4linux"),
    ) -> None:
        self.ffmpeg = ffmpeg
        self.encoder = encoder
        self.clip_max_width = clip_max_width
        self.framerate = framerate
        self.audio_device = audio_device
        self.passthrough = passthrough
        self.sysfs = sysfs
        self._formats: dict[tuple[str, int, float], Formats] = {}

    async def list_devices(self) -> list[Device]:
        devices = []
        try:
            entries = sorted(self.sysfs.glob("video*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
        except OSError:
            return []
        for entry in entries:
            path = f"/dev/{entry.name}"
            cap = querycap(path)
            if cap is None or not cap.captures_video or cap.driver in LIBCAMERA_ONLY_DRIVERS:
                continue
            position = "external" if cap.bus_info.startswith("usb-") else "unknown"
            devices.append(
                Device(id=path, name=cap.card or entry.name, position=position, device_type="v4l2")
            )
        return devices

    async def formats(self, device: Device) -> Formats:
        try:
            st = os.stat(device.id)
            key = (device.id, st.st_rdev, st.st_ctime)
        except OSError:
            return Formats()
        if key not in self._formats:
            found = enum_formats(device.id)
            if found is not None:
                self._formats[key] = Formats(*found)
                return self._formats[key]
        if key not in self._formats:  # the driver would not say: ask ffmpeg (slow to start on a small board)
            argv = [
                self.ffmpeg,
                "-hide_banner",
                "-nostdin",
                "-f",
                "v4l2",
                "-list_formats",
                "all",
                "-i",
                device.id,
            ]
            with contextlib.suppress(proc.CaptureTimeout):
                done = await proc.run(argv, timeout=LIST_FORMATS_TIMEOUT_S)
                self._formats[key] = parse_list_formats(done.stderr if done.stderr else "")
        return self._formats.get(key, Formats())

    def _input(
        self, device: Device, fmt: str | None, size: tuple[int, int] | None, rate: int | None
    ) -> list[str]:
        args = ["-f", "v4l2", "-thread_queue_size", "64"]
        if fmt:
            args += ["-input_format", fmt]
        if size:
            args += ["-video_size", f"{size[0]}x{size[1]}"]
        if rate:
            args += ["-framerate", str(rate)]
        return [*args, "-i", device.id]

    def build_snap(self, device: Device, req: SnapRequest, fmts: Formats) -> list[str]:
        mode, size = choose_snap_mode(fmts, req.max_width, req.quality, self.passthrough)
        skip = ["-ss", f"{req.delay_ms / 1000:.3f}"] if req.delay_ms > 0 else []
        if mode == "copy":
            return [
                self.ffmpeg,
                *BASE,
                *self._input(device, "mjpeg", size, None),
                *skip,
                "-frames:v",
                "1",
                "-c:v",
                "copy",
                "-bsf:v",
                "mjpeg2jpeg",
                "-f",
                "mjpeg",
                "-",
            ]
        fmt = "mjpeg" if size and size in fmts.mjpeg else None
        return [
            self.ffmpeg,
            *BASE,
            *self._input(device, fmt, size, None),
            *skip,
            "-vf",
            f"scale=w='min(iw,{req.max_width})':h=-1",
            *jpeg_output(req.quality),
        ]

    def build_clip(
        self, device: Device, req: ClipRequest, fmts: Formats, out: Path, mic: str | None
    ) -> list[str]:
        sizes = fmts.mjpeg or fmts.raw
        fitting = [s for s in sizes if s[0] <= self.clip_max_width]
        size = max(fitting) if fitting else (min(sizes) if sizes else None)
        fmt = "mjpeg" if size and size in fmts.mjpeg else None
        argv = [self.ffmpeg, *BASE, *self._input(device, fmt, size, self.framerate)]
        if mic:
            argv += ["-f", "alsa", "-thread_queue_size", "1024", "-i", mic]
        w, h = fit_width(self.clip_max_width, *(size or (self.clip_max_width, 0)))
        scale = f"scale={even(w)}:{even(h)}" if h else f"scale=w='min(iw,{self.clip_max_width})':h=-2"
        argv += ["-vf", scale]
        return argv + h264_output(self.encoder, out, audio=mic is not None, duration_s=req.duration_ms / 1000)

    def build_motion(self, device: Device, width: int, height: int, fps: float, fmts: Formats) -> list[str]:
        """Stream the smallest mode at least as large as the analysis size (less to decode: the Pi Zero
        cost is mostly MJPEG decoding), raw before MJPEG at that size; scaled to the analysis size."""
        modes = [(s, None) for s in fmts.raw] + [(s, "mjpeg") for s in fmts.mjpeg]
        big_enough = [m for m in modes if m[0][0] >= width and m[0][1] >= height]
        size, fmt = (
            min(big_enough, key=lambda m: (m[0][0] * m[0][1], m[1] is not None))
            if big_enough
            else (None, None)
        )
        return [
            self.ffmpeg,
            *BASE,
            "-fflags",
            "nobuffer",
            *self._input(device, fmt, size, None),
            *gray_stream_output(width, height, fps),
        ]

    async def motion_job(self, device: Device, width: int, height: int, fps: float) -> MotionJob:
        return MotionJob(argv=self.build_motion(device, width, height, fps, await self.formats(device)))

    async def snap_job(self, device: Device, req: SnapRequest, workdir: Path) -> Job:
        return Job(argv=self.build_snap(device, req, await self.formats(device)))

    async def clip_job(self, device: Device, req: ClipRequest, workdir: Path) -> Job:
        mic = find_alsa_capture(self.audio_device) if req.include_audio else None
        out = workdir / "clip.mp4"
        return Job(
            argv=self.build_clip(device, req, await self.formats(device), out, mic),
            output=out,
            has_audio=mic is not None,
        )


__all__ = ["V4L2Backend", "decode_querycap", "jpeg_qscale", "parse_list_formats"]
