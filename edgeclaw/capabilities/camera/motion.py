"""Camera motion detection for triggers: frame differencing at low resolution in a worker process,
never in the daemon (the daemon only reads one small line per detection).

Interface shared by the triggers capability (the consumer) and the motion worker (the producer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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

    def validate(self, key: str) -> None:
        """Raise edgeclaw.typedconfig.ConfigError (with `key`) for out-of-range values."""
        raise NotImplementedError  # filled in by the motion worker branch


@dataclass(frozen=True)
class MotionEvent:
    ts: float  # wall clock of the frame that crossed the threshold
    area: float  # fraction of the frame that changed, 0..1
    frames: int  # frames analysed so far by this worker


class MotionWatcher:
    """Runs the worker process for one device and calls `on_motion` (on the event loop) per detection.

    `run()` is a supervised child: it returns only by cancellation (and then the worker process and its
    children are gone) or raises when the worker dies, so the supervisor restarts and counts it.
    """

    def __init__(
        self,
        settings: MotionSettings,
        camera_config: Any,
        on_motion: Callable[[MotionEvent], None],
        *,
        simulated: bool,
        runtime_dir: str,
    ) -> None:
        self.settings = settings
        self.camera_config = camera_config
        self.on_motion = on_motion
        self.simulated = simulated
        self.runtime_dir = runtime_dir

    async def run(self) -> None:
        raise NotImplementedError  # filled in by the motion worker branch

    def stats(self) -> dict[str, Any]:
        """frames analysed, detections, worker pid, worker RSS in bytes, restarts: for status/telemetry."""
        raise NotImplementedError  # filled in by the motion worker branch
