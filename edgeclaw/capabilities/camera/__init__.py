"""camera.list / camera.snap / camera.clip for CSI camera modules, USB webcams and a simulated camera.

This module is imported by the daemon at startup, so it stays tiny: the config schema and the manifest.
Every capture runs out of process (ffmpeg, rpicam-* or a short-lived picamera2 worker); the capability
code itself is imported only when the camera is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from edgeclaw.capabilities.base import CapabilityManifest

if TYPE_CHECKING:
    from edgeclaw.capabilities.base import Capability, NodeServices

CONFIG_KEY = "camera"

MANIFEST = CapabilityManifest(
    name="camera",
    caps=("camera",),
    commands=("camera.list", "camera.snap", "camera.clip"),
    devices=("/dev/video*", "/dev/media*", "/dev/v4l-subdev*", "/dev/dma_heap/*", "/dev/snd/*"),
    groups=("video", "audio"),
    needs_gateway_allowlist=("camera.snap", "camera.clip"),
)

BackendName = Literal["auto", "picamera2", "rpicam", "v4l2", "simulated"]


@dataclass
class Config:
    # Opt-in: a camera is privacy-sensitive, so a node shows none until the owner turns it on.
    enabled: bool = False
    # false keeps the commands declared (no re-pairing) but every capture answers CAMERA_DISABLED;
    # flip it with a SIGHUP reload as a privacy switch.
    capture: bool = True
    backend: BackendName = (
        "auto"  # auto: picamera2, rpicam, v4l2 in that order; simulated on hardware: simulated
    )
    default_delay_ms: int = 2000  # settle time for auto-exposure/white balance when delayMs is not given
    # Budget for the base64 answer on top of the gateway's maxPayload: the openclaw CLI fails (1006)
    # above about 13.1 M characters, so stay under it by default.
    max_base64_chars: int = 12_000_000
    queue_limit: int = 2  # captures that may wait for a busy device; more get CAMERA_BUSY
    clip_max_width: int = 1280
    clip_framerate: int = 30
    h264_encoder: str = "libx264"  # e.g. h264_v4l2m2m on a Pi 4 (V4L2 backend only)
    audio_device: str = "auto"  # ALSA capture device such as "hw:1,0"; "auto" picks the first; "none"
    mjpeg_passthrough: bool = True  # V4L2: hand out the camera's own JPEG when no re-encode is needed
    ffmpeg: str = "ffmpeg"
    rpicam_still: str = "rpicam-still"
    rpicam_vid: str = "rpicam-vid"
    picamera2_python: str = "/usr/bin/python3"  # an interpreter that can `import picamera2` (apt package)
    simulated_devices: int = 1
    simulated_width: int = 1920
    simulated_height: int = 1080
    simulated_audio: bool = True  # the simulated board has a microphone (a sine tone)
    tmp_dir: str = ""  # where clips are encoded before sending; empty: the system temp dir

    def validate(self) -> None:
        from edgeclaw.typedconfig import ConfigError

        if not 0 <= self.default_delay_ms <= 10_000:
            raise ConfigError("must be between 0 and 10000", key="camera.default_delay_ms")
        if self.max_base64_chars < 64 * 1024:
            raise ConfigError("must be at least 65536", key="camera.max_base64_chars")
        if self.queue_limit < 0:
            raise ConfigError("must be >= 0", key="camera.queue_limit")
        if not 16 <= self.clip_max_width <= 4096:
            raise ConfigError("must be between 16 and 4096", key="camera.clip_max_width")
        if not 1 <= self.clip_framerate <= 120:
            raise ConfigError("must be between 1 and 120", key="camera.clip_framerate")
        if not 1 <= self.simulated_devices <= 8:
            raise ConfigError("must be between 1 and 8", key="camera.simulated_devices")
        if self.simulated_width < 16 or self.simulated_height < 16:
            raise ConfigError("must be at least 16x16", key="camera.simulated_width")


def create(config: Config, services: NodeServices) -> Capability:
    from edgeclaw.capabilities.camera.capability import CameraCapability

    return CameraCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
