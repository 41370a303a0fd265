"""The `triggers:` config section: rules of source → actions → one agent.request, validated with
file:line errors by edgeclaw.typedconfig like every other section."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeclaw.typedconfig import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
AT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
METRICS = ("cpu_temp_c", "disk_used_pct", "memory_used_pct", "under_voltage", "throttled")
# fields every message template may use; source-specific ones are added per source below
# the gateway's own ceilings (openclaw 2026.9.6, hello-ok policy.attachments): one image at most 6 MiB;
# a request's attachments, base64 in one frame, under its 25 MiB maxPayload. Past either, it drops the
# whole agent.request without telling the node, so photos are kept under both whatever the config says.
GATEWAY_IMAGE_MAX_BYTES = 6_291_456
GATEWAY_REQUEST_MEDIA_BYTES = 18_000_000
COMMON_FIELDS = frozenset({"node", "time", "trigger", "pins", "device", "notes"})
SOURCE_FIELDS: dict[str, frozenset[str]] = {
    "gpio": frozenset({"name", "state", "value", "pin", "kind", "seq", "description"}),
    "schedule": frozenset({"count"}),
    "threshold": frozenset({"metric", "value", "limit"}),
    "camera_motion": frozenset({"area", "device"}),
}


@dataclass
class GpioSource:
    pin: str  # a configured gpio input (its name under gpio.pins)
    edge: Literal["active", "inactive", "both"] = "active"


@dataclass
class ScheduleSource:
    every_s: float | None = None  # fire every this many seconds
    at: str | None = None  # or at this local time of day, "HH:MM"
    jitter_s: float = 0.0  # add 0..jitter_s random seconds (many nodes, one gateway)

    def validate(self) -> None:
        if (self.every_s is None) == (self.at is None):
            raise ValueError("a schedule needs exactly one of every_s or at")
        if self.every_s is not None and not 1 <= self.every_s <= 31 * 86400:
            raise ValueError("every_s must be between 1 and 2678400 seconds")
        if self.at is not None and not AT_RE.match(self.at):
            raise ValueError(f"at must be a local time HH:MM (00:00-23:59), got {self.at!r}")
        if not 0 <= self.jitter_s <= 3600:
            raise ValueError("jitter_s must be between 0 and 3600 seconds")


@dataclass
class ThresholdSource:
    metric: Literal["cpu_temp_c", "disk_used_pct", "memory_used_pct", "under_voltage", "throttled"]
    above: float | None = None  # fire when the value rises above this
    below: float | None = None  # or when it falls below this
    clear_at: float | None = None  # hysteresis: re-armed only once the value is back past this
    interval_s: float = 10.0  # how often the metric is read
    thermal_zone: str = "/sys/class/thermal/thermal_zone0/temp"  # cpu_temp_c: millidegrees file
    path: str = "/"  # disk_used_pct: the filesystem

    def validate(self) -> None:
        if (self.above is None) == (self.below is None):
            raise ValueError("a threshold needs exactly one of above or below")
        if not 0.5 <= self.interval_s <= 86400:
            raise ValueError("interval_s must be between 0.5 and 86400 seconds")
        if self.clear_at is not None:
            if self.above is not None and self.clear_at > self.above:
                raise ValueError(f"clear_at ({self.clear_at}) must be <= above ({self.above})")
            if self.below is not None and self.clear_at < self.below:
                raise ValueError(f"clear_at ({self.clear_at}) must be >= below ({self.below})")

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else float(self.below or 0.0)

    @property
    def clear(self) -> float:
        return self.clear_at if self.clear_at is not None else self.limit


@dataclass
class MotionSource:
    """camera_motion: the fields of edgeclaw.capabilities.camera.motion.MotionSettings."""

    device: str | None = None
    width: int = 160
    height: int = 120
    fps: float = 2.0
    sensitivity: float = 0.1
    min_area: float = 0.02
    cooldown_s: float = 10.0

    def settings(self) -> Any:
        """The watcher's MotionSettings (imported here: the daemon loads camera code only when used)."""
        from edgeclaw.capabilities.camera.motion import MotionSettings

        return MotionSettings(
            device=self.device,
            width=self.width,
            height=self.height,
            fps=self.fps,
            sensitivity=self.sensitivity,
            min_area=self.min_area,
            cooldown_s=self.cooldown_s,
        )

    def validate(self) -> None:
        # the watcher's own checks, at load time: a bad value is a file:line error, not a worker that
        # the supervisor restarts forever
        try:
            self.settings().validate("")
        except ConfigError as exc:
            raise ValueError(f"{exc.key}: {exc.message}") from None


@dataclass
class Source:
    gpio: GpioSource | None = None
    schedule: ScheduleSource | None = None
    threshold: ThresholdSource | None = None
    camera_motion: MotionSource | None = None

    def validate(self) -> None:
        set_ = [k for k in SOURCE_FIELDS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"a source is exactly one of {', '.join(SOURCE_FIELDS)} (got {set_ or 'none'})")

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_FIELDS if getattr(self, k) is not None)


@dataclass
class SnapAction:
    device: str | None = None  # camera device id; None = the camera's default
    max_width: int = 1280
    quality: int = 80  # JPEG quality 1..100; lowered (and the width) until the photo fits media_max_bytes

    def validate(self) -> None:
        if not 64 <= self.max_width <= 4096:
            raise ValueError("max_width must be between 64 and 4096")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be between 1 and 100")


@dataclass
class Action:
    snap: SnapAction | None = None  # camera.snap → an image attachment
    read_pins: list[str] | None = None  # gpio.read → {pins[name]} in the message
    read_device: list[str] | None = None  # device.status fields → {device[field]} in the message

    def validate(self) -> None:
        set_ = [k for k in ("snap", "read_pins", "read_device") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"an action is exactly one of snap, read_pins, read_device (got {set_ or 'none'})"
            )


@dataclass
class RateLimit:
    count: int  # at most this many fires ...
    per_s: float  # ... in any window of this many seconds; the rest are suppressed (and counted)

    def validate(self) -> None:
        if not 1 <= self.count <= 100_000 or not 1 <= self.per_s <= 31 * 86400:
            raise ValueError("rate_limit needs count 1..100000 and per_s 1..2678400")


@dataclass
class Rule:
    source: Source
    actions: list[Action] = field(default_factory=list)
    message: str = "{node}: {trigger} fired at {time}"
    session_key: str | None = None  # default: edgeclaw-<slug(display name)>
    deliver: bool = False  # ask the gateway to route the agent's reply to channel/to
    channel: str | None = None
    to: str | None = None
    cooldown_s: float = 0.0  # fires closer together than this are suppressed (and counted)
    rate_limit: RateLimit | None = None

    def validate(self) -> None:
        if self.cooldown_s < 0 or self.cooldown_s > 86400:
            raise ValueError("cooldown_s must be between 0 and 86400")
        if self.session_key is not None and not self.session_key.strip():
            raise ValueError("session_key must not be empty")
        if len(self.actions) > 8:
            raise ValueError("at most 8 actions per trigger")
        if sum(1 for a in self.actions if a.snap is not None) > 1:
            raise ValueError("at most one snap action per trigger")
        check_template(self.message, COMMON_FIELDS | SOURCE_FIELDS[self.source.kind])

    def pins_read(self) -> list[str]:
        return [p for a in self.actions for p in (a.read_pins or [])]


def check_template(message: str, known: frozenset[str]) -> None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(message) if f is not None}
    except ValueError as exc:
        raise ValueError(f"message template is malformed: {exc}") from None
    unknown = {n.split(".")[0].split("[")[0] for n in names} - known
    if unknown or "" in names:
        raise ValueError(
            f"message template uses unknown field(s) {sorted(unknown) or ['{}']}; known: {', '.join(sorted(known))}"
        )
    if len(message) > 4000:
        raise ValueError("message template is longer than 4000 characters")


@dataclass
class Config:
    enabled: bool = True  # no rules (and no gpio `on_edge: agent`) = nothing runs
    spool_max: int | None = None  # agent.requests kept on disk (default: gpio.spool_max, else 200)
    spool_max_age: float | None = None  # seconds (default: gpio.spool_max_age, else 3600)
    media_max_bytes: int = 5_000_000  # photos are sized to fit (gateway agents.defaults.mediaMaxMb)
    rules: dict[str, Rule] = field(default_factory=dict)

    @property
    def photo_max_bytes(self) -> int:
        """One photo's ceiling: the configured cap, never above the gateway's image limit."""
        return min(self.media_max_bytes, GATEWAY_IMAGE_MAX_BYTES)

    @property
    def request_media_bytes(self) -> int:
        """All photos of one request together (a backlog's batch): the cap, under the gateway's frame."""
        return min(self.media_max_bytes, GATEWAY_REQUEST_MEDIA_BYTES)

    def validate(self) -> None:
        if self.spool_max is not None and not 1 <= self.spool_max <= 100_000:
            raise ConfigError("must be between 1 and 100000", key="triggers.spool_max")
        if self.spool_max_age is not None and self.spool_max_age <= 0:
            raise ConfigError("must be > 0 seconds", key="triggers.spool_max_age")
        if not 10_000 <= self.media_max_bytes <= 50_000_000:
            raise ConfigError("must be between 10000 and 50000000", key="triggers.media_max_bytes")
        for name in self.rules:
            if not NAME_RE.match(name):
                raise ConfigError(
                    "trigger names are 1-32 lower-case letters, digits or _, starting with a letter",
                    key=f"triggers.rules.{name}",
                )


def cross_check(config: Config, gpio: Any, camera: Any) -> None:
    """Checks that need the other sections (a gpio source names a configured input, a snap needs the
    camera): run when the capability starts or reloads, raising ValueError with the key."""
    pins = dict(getattr(gpio, "pins", {}) or {}) if getattr(gpio, "enabled", False) else {}
    for name, rule in config.rules.items():
        key = f"triggers.rules.{name}"
        src = rule.source.gpio
        if src is not None:
            pin = pins.get(src.pin)
            if pin is None:
                raise ValueError(f"{key}.source.gpio.pin: {src.pin!r} is not a configured gpio pin")
            if pin.is_output:
                raise ValueError(f"{key}.source.gpio.pin: {src.pin!r} is an output, not an input")
        for pin_name in rule.pins_read():
            if pin_name not in pins:
                raise ValueError(f"{key}.actions: read_pins names {pin_name!r}, not a configured gpio pin")
        needs_camera = rule.source.camera_motion is not None or any(a.snap for a in rule.actions)
        if needs_camera and not getattr(camera, "enabled", False):
            raise ValueError(f"{key}: needs the camera section enabled (snap or camera_motion)")
