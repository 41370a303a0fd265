"""ffmpeg argv pieces shared by the simulated and V4L2 backends (and the JPEG re-encoder)."""

from __future__ import annotations

from pathlib import Path

from edgeclaw.capabilities.camera.params import jpeg_qscale

BASE = ["-hide_banner", "-nostdin", "-loglevel", "error"]

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


def find_font() -> str | None:
    """A TrueType font for the timestamp overlay; None on a board without fonts (no overlay then)."""
    for path in _FONT_CANDIDATES:
        if Path(path).is_file():
            return path
    return None


def timestamp_overlay(font: str | None, label: str) -> str | None:
    if font is None:
        return None
    text = label.replace("\\", "").replace("'", "").replace(":", " ").replace("%", "")
    return (
        f"drawtext=fontfile='{font}':text='{text} %{{localtime}}':x=16:y=16:fontsize=h/24:"
        "fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=6"
    )


def jpeg_output(quality: float) -> list[str]:
    return ["-frames:v", "1", "-q:v", str(jpeg_qscale(quality)), "-f", "mjpeg", "-"]


def h264_output(encoder: str, out: Path, *, audio: bool, duration_s: float) -> list[str]:
    args = ["-t", f"{duration_s:.3f}", "-c:v", encoder, "-pix_fmt", "yuv420p"]
    if encoder == "libx264":
        args += ["-preset", "veryfast", "-crf", "26"]
    else:
        args += ["-b:v", "2M"]
    args += ["-c:a", "aac", "-b:a", "96k"] if audio else ["-an"]
    return [*args, "-movflags", "+faststart", "-f", "mp4", "-y", str(out)]


def reencode_jpeg(ffmpeg: str, src: Path, max_width: int, quality: float) -> list[str]:
    """Shrink a JPEG that would not fit the payload budget."""
    return [
        ffmpeg,
        *BASE,
        "-i",
        str(src),
        "-vf",
        f"scale=w='min(iw,{max_width})':h=-1",
        *jpeg_output(quality),
    ]


def gray_stream_output(width: int, height: int, fps: float, post: str = "") -> list[str]:
    """Raw 8-bit luma frames of the motion analysis size to stdout, at `fps`, for the motion worker.
    `area` scaling averages whole pixel blocks: the downsampling doubles as a blur against noise."""
    return [
        "-vf",
        f"fps={fps:g},scale={width}:{height}:flags=area{',' + post if post else ''}",
        "-pix_fmt",
        "gray",
        "-f",
        "rawvideo",
        "-",
    ]
