"""The hardware seam: gpiozero devices behind a small interface. Everything above this module is the same
on a real board (lgpio) and on a simulated one (MockFactory with PWM pins).

gpiozero is imported here only, and only when a capability with pins starts. Devices get our own pin
factory (never `Device.pin_factory`), so gpiozero's atexit hook does not reset outputs we left in
their safe state.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgeclaw.capabilities.gpio.config import PinConfig, gpiozero_pin

log = logging.getLogger("edgeclaw.gpio")

SPEED_OF_SOUND = 343.26  # m/s, what gpiozero's DistanceSensor uses

# (pin name, active, wall-clock time) from whatever thread gpiozero calls us on
EdgeCallback = Callable[[str, bool, float], None]
_KEPT: list[Any] = []  # outputs left driven in their safe state (see PinHandle.release_keeping_state)


class PinFault(Exception):
    """The hardware refused (or the pin never opened); reported as GPIO_UNAVAILABLE."""


def make_factory(simulated: bool) -> Any:
    """MockFactory on a simulated board, LGPIOFactory on a real one; PinFactoryError (coded, with the
    fix) when this machine has no pin driver. See edgeclaw.capabilities.gpio.factory for why gpiozero's
    own fallback is never used."""
    from edgeclaw.capabilities.gpio.factory import make_factory as make

    return make(simulated)


class PinHandle:
    """One configured pin and its gpiozero device."""

    def __init__(
        self, name: str, cfg: PinConfig, factory: Any, on_edge: EdgeCallback, *, error: str | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.factory = factory
        self.device: Any = None
        self.error: str | None = error  # given: no pin driver at all, never opened
        self.lock = threading.Lock()
        self._on_edge = on_edge
        if error is not None:
            return
        try:
            self.device = self._open()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("gpio pin %s (%s) is unavailable: %s", name, cfg.pin, self.error)

    # opening ---------------------------------------------------------------------------------------
    def _open(self) -> Any:
        import gpiozero

        cfg = self.cfg
        pin = gpiozero_pin(cfg.pin)
        f = self.factory
        if cfg.kind == "output":
            return gpiozero.DigitalOutputDevice(
                pin, active_high=cfg.active_high, initial_value=bool(cfg.initial_value), pin_factory=f
            )
        if cfg.kind == "pwm":
            return gpiozero.PWMOutputDevice(
                pin,
                active_high=cfg.active_high,
                initial_value=cfg.initial_value,
                frequency=int(cfg.frequency or 100) or 1,
                pin_factory=f,
            )
        pull = cfg.effective_pull()
        pull_up = {"up": True, "down": False, "none": None}[pull]
        active_state = cfg.active_high if pull_up is None else None
        dev: Any
        if cfg.kind in ("input", "button"):
            dev = gpiozero.DigitalInputDevice(pin, pull_up=pull_up, active_state=active_state, pin_factory=f)
        elif cfg.kind == "motion":
            dev = gpiozero.MotionSensor(pin, pull_up=pull_up, active_state=active_state, pin_factory=f)
        else:
            assert cfg.trigger is not None
            trigger = gpiozero_pin(cfg.trigger)
            if _is_mock(f):
                _prepare_mock_distance(f, pin, trigger, cfg.max_distance)
            dev = gpiozero.DistanceSensor(
                echo=pin,
                trigger=trigger,
                max_distance=cfg.max_distance,
                threshold_distance=cfg.threshold_distance,
                pin_factory=f,
            )
        dev.when_activated = lambda: self._edge(True)
        dev.when_deactivated = lambda: self._edge(False)
        return dev

    def _edge(self, active: bool) -> None:
        self._on_edge(self.name, active, time.time())

    # access ----------------------------------------------------------------------------------------
    def _dev(self) -> Any:
        if self.device is None:
            raise PinFault(f"pin {self.name} ({self.cfg.pin}) is unavailable: {self.error or 'closed'}")
        return self.device

    def read(self) -> dict[str, Any]:
        """Current value: outputs as set (logical), inputs as the hardware reads them now."""
        with self.lock:
            dev = self._dev()
            try:
                kind = self.cfg.kind
                inactive, active = self.cfg.labels()
                if kind == "pwm":
                    value = float(dev.value)
                    freq = dev.frequency
                    return {
                        "value": round(value, 6),
                        "state": active if value > 0 else inactive,
                        "frequency": freq,
                    }
                if kind == "distance":
                    distance = float(dev.distance)
                    is_active = bool(dev.is_active)
                    return {
                        "value": int(is_active),
                        "state": active if is_active else inactive,
                        "distance_m": round(distance, 4),
                    }
                if kind == "motion":
                    is_active = bool(dev.is_active)
                    return {
                        "value": int(is_active),
                        "state": active if is_active else inactive,
                        "level": round(float(dev.value), 4),
                    }
                is_active = bool(dev.value)
                return {"value": int(is_active), "state": active if is_active else inactive}
            except PinFault:
                raise
            except Exception as exc:
                raise PinFault(f"reading {self.name} failed: {type(exc).__name__}: {exc}") from exc

    def write(self, value: float, frequency: float | None = None) -> None:
        with self.lock:
            dev = self._dev()
            try:
                if frequency is not None:
                    dev.frequency = frequency
                dev.value = value if self.cfg.kind == "pwm" else bool(value)
            except Exception as exc:
                raise PinFault(f"writing {self.name} failed: {type(exc).__name__}: {exc}") from exc

    def current_output(self) -> float:
        with self.lock:
            return float(self._dev().value)

    def close(self) -> None:
        with self.lock:
            dev, self.device = self.device, None
            if dev is not None:
                if self.error is None:
                    self.error = "closed"
                try:
                    dev.close()
                except Exception as exc:
                    log.warning("closing gpio pin %s: %s", self.name, exc)

    def release_keeping_state(self) -> None:
        """Forget the device without closing it: gpiozero's close() would turn an output back into a
        floating input, undoing the safe state; the kernel frees the line when the process exits."""
        with self.lock:
            dev, self.device = self.device, None
            if dev is not None:
                for attr in ("when_activated", "when_deactivated"):
                    if hasattr(dev, attr):
                        with contextlib.suppress(Exception):
                            setattr(dev, attr, None)
                self.error = "released"
                dev.close = lambda: None  # __del__ (at exit or collection) would close() it
                _KEPT.append(dev)


def _is_mock(factory: Any) -> bool:
    return type(factory).__name__ == "MockFactory"


def _prepare_mock_distance(factory: Any, echo: Any, trigger: Any, max_distance: float) -> None:
    """On a simulated board, wire the trigger pin to echo back after a settable time (an object at a
    distance); `set_mock_distance` moves the object."""
    from gpiozero.pins.mock import MockPWMPin, MockTriggerPin

    class SimTriggerPin(MockTriggerPin, MockPWMPin):
        pass

    echo_pin = factory.pin(echo)
    factory.pin(
        trigger, pin_class=SimTriggerPin, echo_pin=echo_pin, echo_time=2 * max_distance / SPEED_OF_SOUND
    )


def set_mock_distance(handle: PinHandle, metres: float) -> None:
    dev = handle._dev()
    trig = dev.trigger
    if not hasattr(trig, "echo_time"):
        raise PinFault(f"{handle.name} is not a simulated distance sensor")
    trig.echo_time = max(0.0, metres) * 2 / SPEED_OF_SOUND


def drive_mock_input(handle: PinHandle, active: bool) -> None:
    """Simulated board only: drive an input pin to the level that means `active` for this pin."""
    dev = handle._dev()
    pin = dev.pin
    if not hasattr(pin, "drive_high"):
        raise PinFault(f"{handle.name} is not on a simulated board")
    level = active if handle.cfg.active_when_high() else not active
    if level:
        pin.drive_high()
    else:
        pin.drive_low()


def mock_pin_state(handle: PinHandle) -> dict[str, Any]:
    """Simulated board only: the physical pin as a test would probe it."""
    dev = handle._dev()
    pin = dev.pin
    return {
        "function": pin.function,
        "state": pin.state,
        "frequency": pin.frequency,
        "changes": len(getattr(pin, "states", [])) - 1,
    }
