"""Small pure helpers about the bytes a backend hands back: JPEG dimensions and base64 budgets."""

from __future__ import annotations

import struct

# JPEG start-of-frame markers that carry the image size (baseline, progressive, lossless, …)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, or None when `data` is not a JPEG we can read."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if width and height else None
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            return None
        i += 2 + length
    return None


def base64_len(nbytes: int) -> int:
    return 4 * ((nbytes + 2) // 3)


def max_raw_bytes(base64_chars: int) -> int:
    """The largest file whose base64 fits in `base64_chars` characters."""
    return (base64_chars // 4) * 3
