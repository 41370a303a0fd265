#!/usr/bin/env python3
"""Short-lived picamera2 worker: one capture, then exit, so libcamera and picamera2 (~50 MB) never live
in the daemon. Run with an interpreter that can import picamera2 (Raspberry Pi OS: /usr/bin/python3).

    picam_worker.py list
    picam_worker.py snap --camera N --max-width W --quality 1-100 --delay-ms MS --output FILE
    picam_worker.py clip --camera N --width W --height H --framerate F --duration-ms MS
                         [--audio-device DEV] --output FILE

Standard library only at module level (EdgeClaw's package need not be importable here). Failures go to
stderr in words the daemon maps to codes; exit 3 means no camera, 4 busy, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

LOCATIONS = {0: "front", 1: "back", 2: "external"}


def _fail(code: int, message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def _import() -> Any:
    try:
        import picamera2
    except ImportError as exc:
        _fail(3, f"No cameras available: picamera2 is not installed for {sys.executable} ({exc})")
    return picamera2


def _open(picamera2: Any, num: int) -> Any:
    cams = picamera2.Picamera2.global_camera_info()
    if num >= len(cams):
        _fail(3, f"No cameras available: camera {num} not found ({len(cams)} attached)")
    try:
        return picamera2.Picamera2(num)
    except RuntimeError as exc:
        text = str(exc)
        _fail(
            4 if "acquire" in text.lower() or "busy" in text.lower() else 1,
            f"Failed to acquire camera: {text}",
        )
    return None


def cmd_list(_args: argparse.Namespace) -> None:
    picamera2 = _import()
    out = []
    for i, info in enumerate(picamera2.Picamera2.global_camera_info()):
        out.append(
            {
                "num": int(info.get("Num", i)),
                "model": str(info.get("Model", "camera")),
                "location": LOCATIONS.get(info.get("Location"), "unknown"),
                "id": str(info.get("Id", "")),
            }
        )
    print(json.dumps(out), flush=True)


def cmd_snap(args: argparse.Namespace) -> None:
    picamera2 = _import()
    cam = _open(picamera2, args.camera)
    try:
        sw, sh = cam.sensor_resolution
        w = min(args.max_width, sw)
        h = max(2, round(sh * w / sw) // 2 * 2)
        w = max(2, w // 2 * 2)
        cam.configure(cam.create_still_configuration(main={"size": (w, h)}))
        cam.options["quality"] = args.quality
        cam.start()
        time.sleep(args.delay_ms / 1000)  # auto-exposure and white balance settle meanwhile
        cam.capture_file(args.output, format="jpeg")
        cam.stop()
    finally:
        cam.close()


def cmd_clip(args: argparse.Namespace) -> None:
    picamera2 = _import()
    from picamera2.encoders import H264Encoder
    from picamera2.outputs import FfmpegOutput

    cam = _open(picamera2, args.camera)
    try:
        cam.configure(
            cam.create_video_configuration(
                main={"size": (args.width, args.height)},
                controls={"FrameRate": float(args.framerate)},
            )
        )
        audio = args.audio_device is not None
        kwargs: dict[str, Any] = {"audio": audio}
        if audio:
            kwargs["audio_device"] = args.audio_device
        cam.start_recording(H264Encoder(bitrate=4_000_000), FfmpegOutput(args.output, **kwargs))
        time.sleep(args.duration_ms / 1000)
        cam.stop_recording()
    finally:
        cam.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="picam_worker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list").set_defaults(func=cmd_list)
    snap = sub.add_parser("snap")
    snap.add_argument("--camera", type=int, required=True)
    snap.add_argument("--max-width", type=int, required=True)
    snap.add_argument("--quality", type=int, required=True)
    snap.add_argument("--delay-ms", type=int, default=0)
    snap.add_argument("--output", required=True)
    snap.set_defaults(func=cmd_snap)
    clip = sub.add_parser("clip")
    clip.add_argument("--camera", type=int, required=True)
    clip.add_argument("--width", type=int, required=True)
    clip.add_argument("--height", type=int, required=True)
    clip.add_argument("--framerate", type=int, default=30)
    clip.add_argument("--duration-ms", type=int, required=True)
    clip.add_argument("--audio-device")
    clip.add_argument("--output", required=True)
    clip.set_defaults(func=cmd_clip)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
