"""When a trigger fires: schedule arithmetic, device metrics and the threshold's hysteresis. Pure
functions and small state objects, so the capability's loops stay short and the logic is testable."""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass
from pathlib import Path

from edgeclaw.capabilities.device.health import disk_usage, memory, throttling
from edgeclaw.capabilities.triggers.config import ScheduleSource, ThresholdSource


def next_fire(src: ScheduleSource, now: float, *, rng: random.Random | None = None) -> float:
    """Wall-clock time of the next fire after `now` (every_s from now, or the next local HH:MM)."""
    jitter = (rng or random).uniform(0, src.jitter_s) if src.jitter_s else 0.0
    if src.every_s is not None:
        return now + src.every_s + jitter
    assert src.at is not None
    hour, minute = (int(x) for x in src.at.split(":"))
    local = dt.datetime.fromtimestamp(now).astimezone()
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target.timestamp() <= now:
        target = (local + dt.timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return target.timestamp() + jitter


def read_metric(src: ThresholdSource, root: Path = Path("/")) -> float | None:
    """The metric's current value, None when this board cannot tell (no zone, no firmware flags)."""
    if src.metric == "cpu_temp_c":
        try:
            return int(Path(src.thermal_zone).read_text().strip()) / 1000.0
        except (OSError, ValueError):
            return None
    if src.metric == "disk_used_pct":
        usage = disk_usage(src.path, os.statvfs)
        return float(usage["used_percent"]) if usage else None
    if src.metric == "memory_used_pct":
        mem, _ = memory(root)
        return float(mem["used_percent"]) if mem else None
    flags = throttling(root, None)
    if flags is None:
        return None
    key = "under_voltage_now" if src.metric == "under_voltage" else "throttled_now"
    return 1.0 if flags.get(key) else 0.0


@dataclass
class Hysteresis:
    """Fires once per crossing: armed → past the limit fires and disarms; re-armed only once the value
    is back past clear_at. Starts armed, so a value already past the limit at start fires once."""

    src: ThresholdSource
    armed: bool = True
    last_value: float | None = None

    def feed(self, value: float) -> bool:
        self.last_value = value
        src = self.src
        if src.above is not None:
            crossed, cleared = value > src.above, value <= src.clear
        else:
            crossed, cleared = value < src.limit, value >= src.clear
        if self.armed and crossed:
            self.armed = False
            return True
        if not self.armed and cleared and not crossed:
            self.armed = True
        return False
