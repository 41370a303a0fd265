"""How the picamera2, rpicam and V4L2 backends build their commands and map failures to codes —
checked without the hardware, from the argv lists and from the text those programs really print."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edgeclaw.capabilities.camera import Config
from edgeclaw.capabilities.camera.backends import Device, map_failure, parse_alsa_pcm
from edgeclaw.capabilities.camera.backends.picamera2 import WORKER, Picamera2Backend, parse_worker_list
from edgeclaw.capabilities.camera.backends.rpicam import RpicamBackend, parse_list_cameras
from edgeclaw.capabilities.camera.backends.v4l2 import (
    CAP_DEVICE_CAPS,
    CAP_VIDEO_CAPTURE,
    CAP_VIDEO_M2M_MPLANE,
    Formats,
    V4L2Backend,
    choose_snap_mode,
    decode_querycap,
    parse_list_formats,
)
from edgeclaw.capabilities.camera.backends.v4l2_enum import decode_fmtdesc, decode_frmsize, enum_formats
from edgeclaw.capabilities.camera.capability import build_backend
from edgeclaw.capabilities.camera.params import ClipRequest, SnapRequest
from edgeclaw.capabilities.camera.proc import Finished

OUT = Path("/run/cam/out")


def opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- rpicam ---------------------------------------------------------------------------------------------
LIST_CAMERAS = """Available cameras
-----------------
0 : imx708_wide [4608x2592 10-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a)
    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
                             2304x1296 [56.03 fps - (0, 0)/4608x2592 crop]
1 : ov5647 [2592x1944 10-bit GBRG] (/base/axi/pcie@120000/rp1/i2c@80000/ov5647@36)
    Modes: 'SGBRG10_CSI2P' : 640x480 [58.92 fps - (16, 0)/2560x1920 crop]
"""


def test_rpicam_lists_each_camera_not_its_modes() -> None:
    devices = parse_list_cameras(LIST_CAMERAS)
    assert [(d.id, d.width, d.height, d.device_type) for d in devices] == [
        ("csi0", 4608, 2592, "csi"),
        ("csi1", 2592, 1944, "csi"),
    ]
    assert devices[0].name.startswith("imx708_wide")
    assert parse_list_cameras("No cameras available!") == []


def test_rpicam_still_command_scales_keeps_aspect_and_settles() -> None:
    cam = parse_list_cameras(LIST_CAMERAS)[1]
    argv = RpicamBackend(still="/usr/bin/rpicam-still").build_snap(
        cam,
        SnapRequest(max_width=1296, quality=0.8, delay_ms=1500),
        OUT,
    )
    assert argv[0] == "/usr/bin/rpicam-still" and "--nopreview" in argv
    assert opt(argv, "--camera") == "1"
    assert (opt(argv, "--width"), opt(argv, "--height")) == ("1296", "972")
    assert opt(argv, "--quality") == "80" and opt(argv, "--encoding") == "jpg"
    assert opt(argv, "--timeout") == "1500" and opt(argv, "--output") == str(OUT)


def test_rpicam_still_never_upscales_and_zero_delay_is_immediate() -> None:
    cam = parse_list_cameras(LIST_CAMERAS)[1]
    argv = RpicamBackend().build_snap(cam, SnapRequest(max_width=8000, delay_ms=0), OUT)
    assert (opt(argv, "--width"), opt(argv, "--height")) == ("2592", "1944")
    assert "--immediate" in argv and "--timeout" not in argv  # -t 0 would mean "run forever"


def test_rpicam_vid_command_records_mp4_with_audio_when_there_is_a_microphone() -> None:
    cam = parse_list_cameras(LIST_CAMERAS)[0]
    backend = RpicamBackend(vid="rpicam-vid", clip_max_width=1280, framerate=25)
    argv = backend.build_clip(cam, ClipRequest(duration_ms=4000), OUT, "hw:1,0")
    assert argv[0] == "rpicam-vid" and opt(argv, "--timeout") == "4000"
    assert (opt(argv, "--width"), opt(argv, "--height")) == ("1280", "720")
    assert opt(argv, "--codec") == "libav" and opt(argv, "--libav-format") == "mp4"
    assert opt(argv, "--framerate") == "25"
    assert "--libav-audio" in argv and opt(argv, "--audio-device") == "hw:1,0"
    silent = backend.build_clip(cam, ClipRequest(duration_ms=4000), OUT, None)
    assert "--libav-audio" not in silent


# --- picamera2 worker -------------------------------------------------------------------------------------
def test_picamera2_runs_the_worker_script_with_the_system_interpreter() -> None:
    backend = Picamera2Backend(python="/usr/bin/python3")
    cam = Device(id="csi0", name="imx708", device_type="csi", extra=(("index", "0"),))
    argv = backend.build_snap(cam, SnapRequest(max_width=1024, quality=0.55, delay_ms=700), OUT)
    assert argv[:3] == ["/usr/bin/python3", "-I", str(WORKER)]  # -I: no PYTHONPATH/user site leaks in
    assert argv[3] == "snap"
    assert (opt(argv, "--camera"), opt(argv, "--max-width"), opt(argv, "--quality")) == ("0", "1024", "55")
    assert opt(argv, "--delay-ms") == "700" and opt(argv, "--output") == str(OUT)
    clip = backend.build_clip(cam, ClipRequest(duration_ms=2500), OUT, None)
    assert clip[3] == "clip" and opt(clip, "--duration-ms") == "2500" and "--audio-device" not in clip
    assert int(opt(clip, "--width")) % 2 == 0 and int(opt(clip, "--height")) % 2 == 0


def test_picamera2_worker_list_output_becomes_devices() -> None:
    devices = parse_worker_list(
        '[{"num": 0, "model": "imx219", "location": "back", "id": "/base/i2c@1/imx219@10"}]'
    )
    assert [(d.id, d.name, d.position, d.device_type) for d in devices] == [("csi0", "imx219", "back", "csi")]
    assert parse_worker_list("garbage") == [] and parse_worker_list("") == []


def test_the_worker_is_never_imported_by_the_daemon_side() -> None:
    text = WORKER.read_text()
    assert "import picamera2" in text and "edgeclaw" not in text.split('"""', 2)[2]


# --- V4L2 -------------------------------------------------------------------------------------------------
LIST_FORMATS = """[video4linux2,v4l2 @ 0x55d0c9c0] Compressed:       mjpeg :          Motion-JPEG : 1920x1080 1280x720 800x600 640x480 320x240
[video4linux2,v4l2 @ 0x55d0c9c0] Raw       :     yuyv422 :           YUYV 4:2:2 : 640x480 320x240
/dev/video0: Immediate exit requested
"""


def test_v4l2_format_listing_is_parsed() -> None:
    fmts = parse_list_formats(LIST_FORMATS)
    assert fmts.mjpeg == ((320, 240), (640, 480), (800, 600), (1280, 720), (1920, 1080))
    assert fmts.raw == ((320, 240), (640, 480))
    stepwise = (
        "[video4linux2,v4l2 @ 0x1] Raw       :     yuv420p :     Planar YUV 4:2:0 : {32-2592, 2}x{32-1944, 2}"
    )
    assert parse_list_formats(stepwise) == Formats()


def test_v4l2_snap_passes_the_cameras_own_jpeg_through_when_it_fits() -> None:
    fmts = parse_list_formats(LIST_FORMATS)
    dev = Device(id="/dev/video0", name="UVC Camera", device_type="v4l2")
    argv = V4L2Backend(ffmpeg="ffmpeg").build_snap(
        dev, SnapRequest(max_width=1280, quality=0.9, delay_ms=2000), fmts
    )
    assert opt(argv, "-input_format") == "mjpeg" and opt(argv, "-video_size") == "1280x720"
    assert (
        opt(argv, "-c:v") == "copy" and opt(argv, "-bsf:v") == "mjpeg2jpeg"
    )  # add Huffman tables, no re-encode
    assert opt(argv, "-ss") == "2.000" and opt(argv, "-frames:v") == "1"
    assert argv.index("-ss") > argv.index("-i")  # output-side: frames during settling are dropped
    assert "-vf" not in argv


def test_v4l2_snap_re_encodes_when_scaling_or_a_lower_quality_is_needed() -> None:
    fmts = parse_list_formats(LIST_FORMATS)
    dev = Device(id="/dev/video2", name="cam", device_type="v4l2")
    low_q = V4L2Backend().build_snap(dev, SnapRequest(max_width=1920, quality=0.3, delay_ms=0), fmts)
    assert "copy" not in low_q and opt(low_q, "-q:v") == "22" and "-ss" not in low_q
    odd = V4L2Backend().build_snap(dev, SnapRequest(max_width=1000, quality=0.9, delay_ms=0), fmts)
    assert "copy" not in odd  # 800x600 would be smaller than the 1000 px asked for: scale 1280x720 down
    assert opt(odd, "-video_size") == "1280x720" and "min(iw,1000)" in opt(odd, "-vf")
    raw_only = V4L2Backend().build_snap(dev, SnapRequest(max_width=640), Formats(raw=((640, 480),)))
    assert "-input_format" not in raw_only and opt(raw_only, "-video_size") == "640x480"
    no_pass = V4L2Backend(passthrough=False).build_snap(dev, SnapRequest(max_width=1280), fmts)
    assert "copy" not in no_pass


def test_choose_snap_mode_directly() -> None:
    fmts = Formats(mjpeg=((640, 480), (1280, 720)))
    assert choose_snap_mode(fmts, 1600, 0.9, True) == ("copy", (1280, 720))
    assert choose_snap_mode(fmts, 640, 0.9, True) == ("copy", (640, 480))
    assert choose_snap_mode(fmts, 320, 0.9, True) == (
        "encode",
        (640, 480),
    )  # the smallest that is wide enough
    assert choose_snap_mode(fmts, 1600, 0.5, True) == ("encode", (1280, 720))  # none is: the widest
    # a mode wider than asked for, at its tallest (4:3 is the whole sensor): 640x480 over 640x360
    both = Formats(raw=((320, 180), (640, 360), (640, 480), (1280, 720), (3840, 2160)))
    assert choose_snap_mode(both, 600, 0.9, True) == ("encode", (640, 480))
    assert choose_snap_mode(Formats(), 320, 0.9, True) == ("encode", None)


def test_v4l2_clip_encodes_h264_with_alsa_audio() -> None:
    fmts = parse_list_formats(LIST_FORMATS)
    dev = Device(id="/dev/video0", name="cam", device_type="v4l2")
    backend = V4L2Backend(encoder="h264_v4l2m2m", clip_max_width=1280, framerate=30)
    argv = backend.build_clip(dev, ClipRequest(duration_ms=3000), fmts, OUT, "hw:2,0")
    assert argv.count("-i") == 2 and opt(argv, "-f") == "v4l2"
    assert argv[argv.index("alsa") + 1 :].count("hw:2,0") == 1
    assert opt(argv, "-video_size") == "1280x720" and opt(argv, "-framerate") == "30"
    assert opt(argv, "-c:v") == "h264_v4l2m2m" and opt(argv, "-c:a") == "aac" and opt(argv, "-t") == "3.000"
    assert argv[-1] == str(OUT) and "+faststart" in argv
    silent = backend.build_clip(dev, ClipRequest(duration_ms=3000, include_audio=False), fmts, OUT, None)
    assert "alsa" not in silent and "-an" in silent


def _querycap(driver: str, card: str, bus: str, caps: int) -> bytes:
    return struct.pack(
        "16s32s32sIII12x", driver.encode(), card.encode(), bus.encode(), 0x60000, caps | CAP_DEVICE_CAPS, caps
    )


def test_querycap_tells_capture_nodes_from_codec_and_metadata_nodes() -> None:
    webcam = decode_querycap(_querycap("uvcvideo", "HD Webcam", "usb-0000:01:00.0-1.2", CAP_VIDEO_CAPTURE))
    assert (webcam.driver, webcam.card, webcam.captures_video) == ("uvcvideo", "HD Webcam", True)
    metadata = decode_querycap(_querycap("uvcvideo", "HD Webcam", "usb-x", 0x00800000))  # META_CAPTURE
    assert not metadata.captures_video
    codec = decode_querycap(_querycap("bcm2835-codec", "codec", "platform:x", CAP_VIDEO_M2M_MPLANE))
    assert not codec.captures_video


def test_alsa_capture_device_is_found() -> None:
    pcm = "00-00: bcm2835 HDMI 1 : bcm2835 HDMI 1 : playback 1\n01-00: USB Audio : USB Audio : playback 1 : capture 1\n"
    assert parse_alsa_pcm(pcm) == "hw:1,0"
    assert parse_alsa_pcm("00-00: HDMI : HDMI : playback 1\n") is None


# --- failures → codes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stderr", "code", "hint"),
    [
        (
            "[0:10:40.1] ERROR: *** failed to acquire camera /base/soc/i2c0mux/i2c@1/imx708@1a ***",
            "CAMERA_BUSY",
            "in use",
        ),
        (
            "[video4linux2,v4l2 @ 0x1] ioctl(VIDIOC_STREAMON): Device or resource busy",
            "CAMERA_BUSY",
            "in use",
        ),
        ("/dev/video0: Permission denied", "CAMERA_UNAVAILABLE", "'video' group"),
        ("ERROR: *** no cameras available ***", "CAMERA_UNAVAILABLE", "not available"),
        ("/dev/video3: No such file or directory", "CAMERA_UNAVAILABLE", "not available"),
        ("Segmentation fault", "CAMERA_UNAVAILABLE", "snap failed"),
    ],
)
def test_backend_failures_map_to_codes(stderr: str, code: str, hint: str) -> None:
    err = map_failure(Finished(1, b"", stderr), "snap", "rpicam")
    assert err.code == code and hint in err.message and "rpicam" in err.message


# --- selection ----------------------------------------------------------------------------------------
def test_auto_on_a_simulated_board_is_the_simulated_camera() -> None:
    backends, _ = build_backend(Config(enabled=True), simulated=True)
    assert [b.name for b in backends] == ["simulated"]


def test_auto_on_hardware_tries_picamera2_then_rpicam_then_v4l2(tmp_path: Path) -> None:
    for name in ("rpicam-still", "rpicam-vid", "ffmpeg"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    py = tmp_path / "python3"
    py.write_text("")
    config = Config(
        enabled=True,
        picamera2_python=str(py),
        rpicam_still=str(tmp_path / "rpicam-still"),
        rpicam_vid=str(tmp_path / "rpicam-vid"),
        ffmpeg=str(tmp_path / "ffmpeg"),
    )
    backends, _ = build_backend(config, simulated=False)
    assert [b.name for b in backends] == ["picamera2", "rpicam", "v4l2"]
    none, reason = build_backend(
        Config(
            enabled=True, picamera2_python="/nonexistent", rpicam_still="/nonexistent", ffmpeg="/nonexistent"
        ),
        simulated=False,
    )
    assert none == [] and "rpicam" in reason and "ffmpeg" in reason


def test_v4l2_driver_answers_are_decoded() -> None:
    """VIDIOC_ENUM_FMT / VIDIOC_ENUM_FRAMESIZES structs as a driver fills them (layouts of videodev2.h)."""
    fmtdesc = struct.pack("<III32sII12x", 0, 1, 0x1, b"Motion-JPEG", int.from_bytes(b"MJPG", "little"), 0)
    assert len(fmtdesc) == 64 and decode_fmtdesc(fmtdesc) == (0x1, "MJPG")
    discrete = struct.pack("<IIIII16x8x", 2, int.from_bytes(b"YUYV", "little"), 1, 640, 480)
    assert len(discrete) == 44 and decode_frmsize(discrete) == (640, 480)
    stepwise = struct.pack("<IIIIIIIII8x", 0, 0, 3, 32, 2592, 2, 32, 1944, 2)
    assert decode_frmsize(stepwise) is None


def test_v4l2_enum_formats_says_none_for_a_node_that_is_not_a_camera(tmp_path: Path) -> None:
    assert enum_formats("/dev/null") is None  # ENOTTY: the backend falls back to ffmpeg's listing
    assert enum_formats(str(tmp_path / "video9")) is None  # gone
