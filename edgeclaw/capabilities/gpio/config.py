"""The `gpio` config section: the board as declared by the user — nothing outside it is reachable.

Validation needs no gpiozero (the daemon imports it only when pins are configured), so pin names are
normalised here for the common forms (17, GPIO17, BCM17, BOARD11, J8:11) to catch a pin used twice.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Literal

from edgeclaw.typedconfig import ConfigError

PinKind = Literal["output", "pwm", "input", "button", "motion", "distance"]
OUTPUT_KINDS = ("output", "pwm")
INPUT_KINDS = ("input", "button", "motion", "distance")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TEMPLATE_FIELDS = frozenset({"name", "state", "time", "value", "node", "pin", "kind", "seq", "description"})

# The 40-pin header (every Raspberry Pi since the B+, and the many boards that copy it): BOARD → BCM.
BOARD_TO_BCM = {
    3: 2,
    5: 3,
    7: 4,
    8: 14,
    10: 15,
    11: 17,
    12: 18,
    13: 27,
    15: 22,
    16: 23,
    18: 24,
    19: 10,
    21: 9,
    22: 25,
    23: 11,
    24: 8,
    26: 7,
    27: 0,
    28: 1,
    29: 5,
    31: 6,
    32: 12,
    33: 13,
    35: 19,
    36: 16,
    37: 26,
    38: 20,
    40: 21,
}
_BCM_RE = re.compile(r"^(?:GPIO|BCM)?(\d{1,3})$", re.IGNORECASE)
_BOARD_RE = re.compile(r"^(?:BOARD|J8:)(\d{1,2})$", re.IGNORECASE)


def canonical_pin(spec: str) -> str:
    """A key for "is this the same pin": GPIO<n> for the forms we know, else the upper-cased name
    (gpiozero resolves those at start). Raises ValueError for a header pin that is not a GPIO."""
    text = spec.strip()
    m = _BCM_RE.match(text)
    if m:
        return f"GPIO{int(m.group(1))}"
    m = _BOARD_RE.match(text)
    if m:
        board = int(m.group(1))
        if board not in BOARD_TO_BCM:
            raise ValueError(f"header pin {board} is power or ground, not a GPIO")
        return f"GPIO{BOARD_TO_BCM[board]}"
    return text.upper()


def pin_id_of_name(name: str) -> str | None:
    """The pin a pin *name* would also denote as a pin id (`gpio17`, `bcm17`, `board11`), else None."""
    if not (_BCM_RE.match(name) or _BOARD_RE.match(name)):
        return None
    try:
        return canonical_pin(name)
    except ValueError:  # board1: a power pin, so no pin id; an ordinary name
        return None


class PinNotAllowed(LookupError):
    """The reference names no configured pin (whichever form it takes)."""


def resolve_pin(pins: dict[str, PinConfig], ref: object) -> str:
    """The configured name a reference denotes: the name itself, or the pin as gpiozero would read it
    (17, "17", "GPIO17", "BCM17", "BOARD11", "J8:11"). Raises PinNotAllowed for anything else, so an
    unconfigured pin is refused whichever form names it; a name that is also a pin id must be that pin
    (validated), so a name can never reach a different pin than the id it spells."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise TypeError("a pin is named by a string (its configured name or pin id) or a BCM number")
    text = str(ref).strip()
    if isinstance(ref, str) and ref in pins:
        return ref
    try:
        canon = canonical_pin(text)
    except ValueError as exc:
        raise PinNotAllowed(f"{text!r} is not a configured pin ({exc})") from None
    for name, pin in pins.items():
        if canonical_pin(pin.pin) == canon:
            return name
    for name, pin in pins.items():
        if pin.trigger and canonical_pin(pin.trigger) == canon:
            raise PinNotAllowed(f"{text!r} ({canon}) is the trigger line of {name!r}; address {name!r}")
    raise PinNotAllowed(f"{text!r} ({canon}) is not a configured pin (configured: {', '.join(pins)})")


def gpiozero_pin(spec: str) -> int | str:
    """What to hand gpiozero: plain numbers as int (BCM), everything else as written."""
    text = spec.strip()
    return int(text) if text.isdigit() else text


@dataclass
class PinConfig:
    pin: str  # GPIO17, BCM17, BOARD11, J8:11 or 17 (BCM); gpiozero resolves it
    kind: PinKind = "output"
    description: str = ""  # shown to the agent in tools and the generated skill
    active_high: bool = True  # outputs; inputs with pull "none"
    pull: Literal["up", "down", "none"] | None = None  # inputs; default: button up, others down
    initial_value: float = 0.0  # outputs: 0/1, pwm: 0..1
    frequency: float | None = None  # pwm only (Hz, default 100)
    bounce_time: float = 0.05  # inputs: seconds an input must settle before another edge counts
    safe_state: float | None = None  # outputs: the value that leaves the machine safe
    safe_on_shutdown: bool = True  # apply safe_state when the node stops (and in `edgeclaw gpio-safe`)
    safe_on_failsafe: bool = False  # apply safe_state after gpio.failsafe_after s without a gateway
    on_edge: Literal["none", "event", "agent"] = "none"  # inputs: node event or agent.request per edge
    trigger_on: Literal["active", "inactive", "both"] = "active"  # which edges fire on_edge
    message: str = "{name} went {state} at {time}"  # agent.request text; fields: see TEMPLATE_FIELDS
    active_label: str | None = None  # words for the two states (default by kind: pressed/released, ...)
    inactive_label: str | None = None
    trigger: str | None = None  # distance: the trigger pin (`pin` is the echo pin)
    max_distance: float = 1.0  # distance, metres
    threshold_distance: float = 0.3  # distance: "in range" below this, metres
    max_pulse_ms: int = 10_000  # longest gpio.pulse accepted
    tools: bool = True  # publish agent tools for this pin

    def validate(self) -> None:
        canonical_pin(self.pin)
        out = self.kind in OUTPUT_KINDS
        if out:
            for key, bad in (
                ("pull", self.pull is not None),
                ("on_edge", self.on_edge != "none"),
                ("trigger", self.trigger is not None),
            ):
                if bad:
                    raise ValueError(f"{key} applies only to inputs, not to a {self.kind} pin")
            if self.kind == "output":
                if self.frequency is not None:
                    raise ValueError("frequency needs kind: pwm (a digital output cannot do PWM)")
                for key, value in (("initial_value", self.initial_value), ("safe_state", self.safe_state)):
                    if value is not None and value not in (0, 1):
                        raise ValueError(f"{key} of a digital output must be 0 or 1, got {value}")
            else:
                if self.frequency is not None and not 0 < self.frequency <= 100_000:
                    raise ValueError("frequency must be in (0, 100000] Hz")
                for key, value in (("initial_value", self.initial_value), ("safe_state", self.safe_state)):
                    if value is not None and not 0 <= value <= 1:
                        raise ValueError(f"{key} of a pwm pin must be between 0 and 1, got {value}")
            if not 1 <= self.max_pulse_ms <= 3_600_000:
                raise ValueError("max_pulse_ms must be between 1 and 3600000")
        else:
            if self.frequency is not None:
                raise ValueError(f"frequency (PWM) is impossible on an input ({self.kind})")
            if self.safe_state is not None:
                raise ValueError(f"safe_state applies only to outputs, not to a {self.kind} pin")
            if self.initial_value not in (0, 0.0):
                raise ValueError(f"initial_value applies only to outputs, not to a {self.kind} pin")
            if self.bounce_time < 0 or self.bounce_time > 10:
                raise ValueError("bounce_time must be between 0 and 10 seconds")
            if self.kind == "distance":
                if not self.trigger:
                    raise ValueError("a distance sensor needs `trigger` (the trigger pin; `pin` is echo)")
                canonical_pin(self.trigger)
                if not 0 < self.threshold_distance < self.max_distance <= 10:
                    raise ValueError("need 0 < threshold_distance < max_distance <= 10 (metres)")
            elif self.trigger is not None:
                raise ValueError("trigger applies only to a distance sensor")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.message) if f is not None}
        except ValueError as exc:
            raise ValueError(f"message template is malformed: {exc}") from None
        unknown = {n.split(".")[0].split("[")[0] for n in names} - TEMPLATE_FIELDS
        if unknown or "" in names:
            raise ValueError(
                f"message template uses unknown field(s) {sorted(unknown) or ['{}']}; "
                f"known: {', '.join(sorted(TEMPLATE_FIELDS))}"
            )

    @property
    def is_output(self) -> bool:
        return self.kind in OUTPUT_KINDS

    def effective_pull(self) -> str:
        if self.pull is not None:
            return self.pull
        return "up" if self.kind == "button" else "down"

    def active_when_high(self) -> bool:
        """Inputs: which physical level counts as active (a pull-up input is active low)."""
        pull = self.effective_pull()
        if pull == "up":
            return False
        if pull == "down":
            return True
        return self.active_high

    def labels(self) -> tuple[str, str]:
        """(inactive, active) words used in events, messages and tool descriptions."""
        defaults = {
            "button": ("released", "pressed"),
            "motion": ("clear", "motion"),
            "distance": ("out of range", "in range"),
            "input": ("inactive", "active"),
            "output": ("off", "on"),
            "pwm": ("off", "on"),
        }[self.kind]
        return (self.inactive_label or defaults[0], self.active_label or defaults[1])


@dataclass
class Config:
    enabled: bool = False
    pins: dict[str, PinConfig] = field(default_factory=dict)
    failsafe_after: float = 60.0  # seconds without a gateway before safe_on_failsafe pins go safe; 0 = never
    event_buffer: int = 256  # edges kept for gpio.events
    spool_max: int = 200  # agent.requests kept on disk while the gateway is unreachable
    spool_max_age: float = 3600.0  # seconds; older spooled requests are dropped (and counted)
    session_key: str | None = None  # agent.request session; default edgeclaw-<display name>
    tool_prefix: str = "gpio"  # agent tool names: <prefix>_<pin>_<action>

    def validate(self) -> None:
        if self.failsafe_after < 0:
            raise ConfigError("must be >= 0 (0 turns the failsafe off)", key="gpio.failsafe_after")
        if not 1 <= self.event_buffer <= 100_000:
            raise ConfigError("must be between 1 and 100000", key="gpio.event_buffer")
        if not 1 <= self.spool_max <= 100_000:
            raise ConfigError("must be between 1 and 100000", key="gpio.spool_max")
        if self.spool_max_age <= 0:
            raise ConfigError("must be > 0 seconds", key="gpio.spool_max_age")
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,15}$", self.tool_prefix):
            raise ConfigError(
                "must be 1-16 letters, digits, _ or -, starting with a letter", key="gpio.tool_prefix"
            )
        if self.session_key is not None and not self.session_key.strip():
            raise ConfigError("must not be empty", key="gpio.session_key")
        used: dict[str, str] = {}
        for name, pin in self.pins.items():
            if not NAME_RE.match(name):
                raise ConfigError(
                    "pin names are 1-32 lower-case letters, digits or _, starting with a letter",
                    key=f"gpio.pins.{name}",
                )
            spelled = pin_id_of_name(name)
            if spelled is not None and spelled != canonical_pin(pin.pin):
                raise ConfigError(
                    f"the name {name!r} spells pin {spelled} but this pin is {pin.pin}; a name that is a "
                    "pin id must be that pin (invokes may address pins by id), so rename it",
                    key=f"gpio.pins.{name}",
                )
            specs = [("pin", pin.pin)] + ([("trigger", pin.trigger)] if pin.trigger else [])
            for key, spec in specs:
                canon = canonical_pin(spec)
                if canon in used:
                    raise ConfigError(
                        f"{spec} ({canon}) is already used by {used[canon]}", key=f"gpio.pins.{name}.{key}"
                    )
                used[canon] = f"gpio.pins.{name}"
