"""Which rules run (the configured ones plus gpio `on_edge: agent` pins) and each one's counters, kept
across reloads by name for status and telemetry."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgeclaw.capabilities.gpio.edges import iso_time
from edgeclaw.capabilities.triggers.config import Config, GpioSource, Rule, Source


@dataclass
class TriggerState:
    """Counters of one trigger, kept across reloads (by name) for status and telemetry."""

    kind: str
    fired: int = 0
    suppressed: int = 0
    last_fire: float | None = None
    next_fire: float | None = None
    last_value: float | None = None  # threshold: the metric's last reading
    armed: bool | None = None  # threshold: ready to fire on the next crossing
    recent: deque[float] = field(default_factory=deque)  # fire times inside the rate-limit window

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.kind,
            "fired": self.fired,
            "suppressed": self.suppressed,
            "last_fire": iso_time(self.last_fire) if self.last_fire else None,
            "last_fire_ts": self.last_fire,
        }
        if self.kind == "schedule":
            out["next_fire"] = iso_time(self.next_fire) if self.next_fire else None
            out["next_fire_ts"] = self.next_fire
        if self.kind == "threshold":
            out["last_value"] = self.last_value
            out["armed"] = self.armed
        return out


def effective_rules(config: Config, gpio: Any) -> dict[str, Rule]:
    """The configured rules plus one implicit rule per `gpio.pins.<name>.on_edge: agent` input."""
    rules = dict(config.rules)
    if getattr(gpio, "enabled", False):
        for name, pin in (getattr(gpio, "pins", {}) or {}).items():
            if pin.on_edge == "agent" and not pin.is_output:
                rules[f"gpio.{name}"] = Rule(
                    source=Source(gpio=GpioSource(pin=name, edge=pin.trigger_on)),
                    message=pin.message,
                    session_key=getattr(gpio, "session_key", None),
                )
    return rules
