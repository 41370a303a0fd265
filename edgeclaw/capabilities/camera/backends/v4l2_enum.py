"""A V4L2 capture node's formats and discrete frame sizes, asked of the driver with two ioctls
(VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES) instead of starting ffmpeg: on a Pi Zero, or an arm64 board
under emulation, ffmpeg needs seconds just to load its libraries, and the answer decides every capture.
"""

from __future__ import annotations

import fcntl
import os
import struct

VIDIOC_ENUM_FMT = 0xC0405602  # _IOWR('V', 2, struct v4l2_fmtdesc), 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A  # _IOWR('V', 74, struct v4l2_frmsizeenum), 44 bytes
BUF_TYPE_VIDEO_CAPTURE = 1
FMT_FLAG_COMPRESSED = 0x0001
FRMSIZE_TYPE_DISCRETE = 1
MJPEG_FOURCCS = {"MJPG", "JPEG"}
MAX_ENTRIES = 256  # a driver that never ends its list must not hang the node


def fourcc(code: int) -> str:
    return struct.pack("<I", code).decode("latin-1")


def decode_fmtdesc(buf: bytes) -> tuple[int, str]:
    """struct v4l2_fmtdesc → (flags, fourcc)."""
    _index, _type, flags, _desc, pixfmt = struct.unpack_from("<III32sI", buf)
    return flags, fourcc(pixfmt)


def decode_frmsize(buf: bytes) -> tuple[int, int] | None:
    """struct v4l2_frmsizeenum → (width, height) of a discrete size; None for stepwise/continuous ranges."""
    _index, _pixfmt, kind, width, height = struct.unpack_from("<IIIII", buf)
    return (width, height) if kind == FRMSIZE_TYPE_DISCRETE else None


def _sizes(fd: int, pixfmt: int) -> set[tuple[int, int]]:
    sizes: set[tuple[int, int]] = set()
    for index in range(MAX_ENTRIES):
        buf = bytearray(struct.pack("<II", index, pixfmt) + bytes(36))
        try:
            fcntl.ioctl(fd, VIDIOC_ENUM_FRAMESIZES, buf)
        except OSError:  # EINVAL: the end of the list
            break
        size = decode_frmsize(bytes(buf))
        if size is None:
            break
        sizes.add(size)
    return sizes


def enum_formats(path: str) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] | None:
    """(MJPEG sizes, raw sizes), each sorted; None when the node cannot be opened or asked."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    mjpeg: set[tuple[int, int]] = set()
    raw: set[tuple[int, int]] = set()
    try:
        for index in range(MAX_ENTRIES):
            buf = bytearray(struct.pack("<II", index, BUF_TYPE_VIDEO_CAPTURE) + bytes(56))
            try:
                fcntl.ioctl(fd, VIDIOC_ENUM_FMT, buf)
            except OSError:
                if index == 0:
                    return None
                break
            flags, code = decode_fmtdesc(bytes(buf))
            pixfmt = struct.unpack_from("<I", buf, 44)[0]
            if code in MJPEG_FOURCCS:
                mjpeg |= _sizes(fd, pixfmt)
            elif not flags & FMT_FLAG_COMPRESSED:
                raw |= _sizes(fd, pixfmt)
    finally:
        os.close(fd)
    return tuple(sorted(mjpeg)), tuple(sorted(raw))
