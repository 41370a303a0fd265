"""The GPIO capability: commands over the configured pins, edges into the ring, node events and the
event bus (GPIO_EDGE: the triggers capability turns `on_edge: agent` and gpio trigger sources into
agent.requests), momentary pulses owned by the node, and safe states on stop and on a lost gateway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from edgeclaw.capabilities.base import (
    Capability,
    Handler,
    InvokeContext,
    InvokeError,
    NodeServices,
    NotConnected,
)
from edgeclaw.capabilities.gpio import tools as toolgen
from edgeclaw.capabilities.gpio.config import Config, PinConfig, PinNotAllowed, resolve_pin
from edgeclaw.capabilities.gpio.edges import Debouncer, EdgeRing, iso_time
from edgeclaw.capabilities.gpio.manifest import MANIFEST
from edgeclaw.platform import events
from edgeclaw.platform.supervisor import Restart, Supervisor

log = logging.getLogger("edgeclaw.gpio")


def _pin_error(exc: Exception) -> InvokeError:
    return InvokeError("GPIO_UNAVAILABLE", str(exc))


class _Pulse:
    def __init__(self, restore_to: float, task: asyncio.Task[None]) -> None:
        self.restore_to = restore_to
        self.task = task


class GpioCapability(Capability):
    manifest = MANIFEST
    max_concurrency = 8
    queue_limit = 32

    def __init__(self, config: Config, services: NodeServices) -> None:
        super().__init__(config, services)
        self.config: Config = config
        self.factory: Any = None
        self.pins: dict[str, Any] = {}  # name → backend.PinHandle
        self.debouncers: dict[str, Debouncer] = {}
        self.ring = EdgeRing(config.event_buffer)
        self.pulses: dict[str, _Pulse] = {}
        self.failsafe_applied_at: float | None = None
        self.sup: Supervisor | None = None  # the failsafe timer; edge sends and pulses are short
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None
        self.sim: Any = None
        self.started = False

    # surface ---------------------------------------------------------------------------------------
    def _active(self) -> bool:
        return bool(self.config.enabled and self.config.pins)

    def handlers(self) -> dict[str, Handler]:
        if not self._active():
            return {}
        return {
            "gpio.list": self._list,
            "gpio.read": self._read,
            "gpio.write": self._write,
            "gpio.pwm": self._pwm,
            "gpio.pulse": self._pulse,
            "gpio.events": self._events,
        }

    def plugin_tools(self) -> list[dict[str, Any]]:
        return toolgen.plugin_tools(self.config)

    def skills(self) -> list[dict[str, Any]]:
        doc = toolgen.skill(self.config, self.services.display_name)
        return [doc] if doc else []

    # lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._active():
            return
        self._open_pins(self.config.pins)
        self._unsubscribe = self.services.bus.subscribe(self._on_bus)
        self.sup = self.services.supervisor.child_supervisor("gpio")
        if not self.services.is_connected():
            self._arm_failsafe()
        if self.services.simulated:
            from edgeclaw.capabilities.gpio.simctl import SimControl

            self.sim = SimControl(self, self.services.config.runtime_dir)
            await self.sim.start()
        self.started = True
        log.info("gpio: %d pin(s) on %s", len(self.pins), type(self.factory).__name__)

    def _open_pins(self, pins: dict[str, PinConfig]) -> None:
        from edgeclaw.capabilities.gpio.backend import PinHandle, make_factory
        from edgeclaw.capabilities.gpio.factory import PinFactoryError

        no_driver: str | None = None
        if self.factory is None:
            try:
                self.factory = make_factory(self.services.simulated)
            except PinFactoryError as exc:
                # the node keeps running: every pin answers GPIO_UNAVAILABLE with this code and fix
                no_driver = f"{exc} (fix: {exc.fix})"
                log.error("gpio: no pin driver, %d pin(s) unavailable: %s", len(pins), no_driver)
        for name, cfg in pins.items():
            handle = PinHandle(name, cfg, self.factory, self._edge_from_thread, error=no_driver)
            self.pins[name] = handle
            if not cfg.is_output and handle.device is not None:
                try:
                    initial = bool(handle.read()["value"])
                except Exception:
                    initial = False
                self.debouncers[name] = Debouncer(
                    cfg.bounce_time, functools.partial(self._on_edge, name), initial
                )

    def _close_pin(self, name: str, *, safe: bool) -> None:
        pulse = self.pulses.pop(name, None)
        if pulse is not None:
            pulse.task.cancel()
            self._set(name, pulse.restore_to, why="pulse cut short")
        deb = self.debouncers.pop(name, None)
        if deb is not None:
            deb.cancel()
        handle = self.pins.pop(name)
        cfg: PinConfig = handle.cfg
        wants_safe = safe and cfg.is_output and cfg.safe_on_shutdown
        if (
            wants_safe
            and cfg.safe_state is not None
            and self._set_handle(handle, cfg.safe_state, why="safe stop")
        ):
            handle.release_keeping_state()
            return
        handle.close()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.sup is not None:
            self.sup.cancel_child("failsafe")
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None
        for name in list(self.pins):
            self._close_pin(name, safe=True)
        if self.sup is not None:
            await self.sup.stop(timeout=2.0)
            self.sup = None
        self.started = False

    async def reload(self, new_config: Any) -> None:
        """Keep unchanged pins as they are (no glitch on an output); close removed or changed ones
        (safe state first), open new ones."""
        old: Config = self.config
        self.config = new_config
        if not self.started:
            if self._active():
                await self.start()
            return
        if not self._active():
            await self.stop()
            return
        for name in list(self.pins):
            if new_config.pins.get(name) != old.pins.get(name):
                self._close_pin(name, safe=True)
        self._open_pins({n: c for n, c in new_config.pins.items() if n not in self.pins})
        self.ring.resize(new_config.event_buffer)

    async def on_session_ready(self) -> None:
        self._disarm_failsafe()

    async def on_disconnected(self) -> None:
        self._arm_failsafe()

    def _on_bus(self, name: str, fields: dict[str, Any]) -> None:
        if name == events.HELLO_OK:
            self._disarm_failsafe()
        elif name == events.DISCONNECT:
            self._arm_failsafe()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A short task (an edge event, a pulse's restore) under the capability's supervisor."""
        assert self.sup is not None
        return self.sup.spawn(coro, name)

    # failsafe --------------------------------------------------------------------------------------
    def _arm_failsafe(self) -> None:
        if self.config.failsafe_after <= 0 or not self.pins:
            return
        if self.sup is None:
            return
        after = self.config.failsafe_after
        self.sup.start_child("failsafe", lambda: self._failsafe(after), restart=Restart.TRANSIENT)

    def _disarm_failsafe(self) -> None:
        if self.sup is not None:
            self.sup.cancel_child("failsafe")
        if self.failsafe_applied_at is not None:
            log.info("gateway reachable again; outputs stay in their safe state until told otherwise")
            self.failsafe_applied_at = None

    async def _failsafe(self, after: float) -> None:
        await asyncio.sleep(after)
        if self.services.is_connected():
            return
        applied = []
        for name, handle in list(self.pins.items()):
            cfg: PinConfig = handle.cfg
            if cfg.is_output and cfg.safe_state is not None and cfg.safe_on_failsafe:
                pulse = self.pulses.pop(name, None)
                if pulse is not None:
                    pulse.task.cancel()
                if self._set(name, cfg.safe_state, why="failsafe"):
                    applied.append(name)
        self.failsafe_applied_at = time.time()
        log.warning(
            "gateway unreachable for %.0f s: failsafe put %s in the safe state",
            after,
            ", ".join(applied) or "no pins",
        )

    # edges -----------------------------------------------------------------------------------------
    def _edge_from_thread(self, name: str, active: bool, ts: float) -> None:
        """gpiozero calls this on its own thread (or the thread that drove a mock pin)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing during shutdown
            loop.call_soon_threadsafe(self._raw_edge, name, active, ts)

    def _raw_edge(self, name: str, active: bool, ts: float) -> None:
        deb = self.debouncers.get(name)
        if deb is not None:
            deb.feed(active, ts)

    def _on_edge(self, name: str, active: bool, ts: float) -> None:
        handle = self.pins.get(name)
        if handle is None:
            return
        cfg: PinConfig = handle.cfg
        inactive_word, active_word = cfg.labels()
        state = active_word if active else inactive_word
        edge = self.ring.add(name, active, state, ts)
        log.debug("gpio edge %s %s (#%d)", name, state, edge.seq)
        # every edge goes on the bus: triggers (gpio sources, `on_edge: agent`) subscribe to it
        self.services.bus.emit(
            events.GPIO_EDGE,
            pin_name=name,
            pin=cfg.pin,
            kind=cfg.kind,
            active=active,
            state=state,
            value=int(active),
            ts=ts,
            seq=edge.seq,
            description=cfg.description or name,
        )
        wanted = cfg.trigger_on == "both" or (cfg.trigger_on == "active") == active
        if wanted and cfg.on_edge == "event":
            self._spawn(self._send_edge_event(edge.to_json()), "gpio-edge-event")

    async def _send_edge_event(self, payload: dict[str, Any]) -> None:
        try:
            await self.services.send_event("gpio.edge", payload, timeout=5)
        except (NotConnected, InvokeError) as exc:
            log.debug("gpio.edge event not sent (%s); it stays in gpio.events", exc)

    # pin access ------------------------------------------------------------------------------------
    def _handle(self, ctx: InvokeContext) -> Any:
        name = self._pin_name(ctx, required=True)
        assert name is not None
        handle = self.pins.get(name)
        if handle is None:  # configured but not open (reload in progress)
            raise InvokeError("GPIO_PIN_NOT_ALLOWED", f"pin {name!r} is not available right now")
        return handle

    def _pin_name(self, ctx: InvokeContext, *, required: bool) -> str | None:
        """The configured pin that `name` (or `pin`) denotes: its name or its id in any form gpiozero
        reads. Every key that names a pin must name a configured one, and the same one."""
        found: list[str] = []
        for key in ("name", "pin"):
            ref = ctx.params.get(key)
            if ref is None:
                continue
            try:
                found.append(resolve_pin(self.config.pins, ref))
            except TypeError as exc:
                raise InvokeError("INVALID_REQUEST", f"parameter {key!r}: {exc}") from None
            except PinNotAllowed as exc:
                raise InvokeError("GPIO_PIN_NOT_ALLOWED", str(exc)) from None
        if not found:
            if required:
                raise InvokeError(
                    "INVALID_REQUEST", "parameter 'name' (a configured pin name or its pin id) is required"
                )
            return None
        if len(set(found)) > 1:
            raise InvokeError(
                "INVALID_REQUEST", f"'name' and 'pin' denote different pins ({', '.join(found)})"
            )
        return found[0]

    def _set_handle(self, handle: Any, value: float, *, why: str) -> bool:
        try:
            handle.write(value)
        except Exception as exc:
            log.error("gpio %s: setting %s to %s (%s) failed: %s", why, handle.name, value, why, exc)
            return False
        log.info("gpio %s: %s = %g", why, handle.name, value)
        return True

    def _set(self, name: str, value: float, *, why: str) -> bool:
        handle = self.pins.get(name)
        return handle is not None and self._set_handle(handle, value, why=why)

    def _describe(self, name: str, handle: Any) -> dict[str, Any]:
        cfg: PinConfig = handle.cfg
        doc: dict[str, Any] = {"name": name, "pin": cfg.pin, "kind": cfg.kind, "description": cfg.description}
        if cfg.trigger:
            doc["trigger"] = cfg.trigger
        if cfg.is_output:
            doc["safe_state"] = cfg.safe_state
        else:
            doc["on_edge"] = cfg.on_edge
        try:
            doc.update(handle.read())
        except Exception as exc:
            doc["error"] = str(exc)
        if name in self.pulses:
            doc["pulsing"] = True
        return doc

    def _cancel_pulse(self, name: str) -> None:
        pulse = self.pulses.pop(name, None)
        if pulse is not None:
            pulse.task.cancel()

    # handlers --------------------------------------------------------------------------------------
    async def _list(self, ctx: InvokeContext) -> dict[str, Any]:
        return {
            "pins": [self._describe(n, h) for n, h in self.pins.items()],
            "simulated": self.services.simulated,
            "failsafe": {
                "after_s": self.config.failsafe_after,
                "applied_at": iso_time(self.failsafe_applied_at) if self.failsafe_applied_at else None,
            },
            "latest_event_seq": self.ring.seq,
        }

    async def _read(self, ctx: InvokeContext) -> dict[str, Any]:
        handle = self._handle(ctx)
        try:
            return {"name": handle.name, "kind": handle.cfg.kind, **handle.read()}
        except Exception as exc:
            raise _pin_error(exc) from None

    def _output(self, ctx: InvokeContext, *, pwm: bool) -> Any:
        handle = self._handle(ctx)
        cfg: PinConfig = handle.cfg
        if not cfg.is_output:
            raise InvokeError(
                "INVALID_REQUEST", f"{handle.name} is an input ({cfg.kind}); it cannot be written"
            )
        if pwm and cfg.kind != "pwm":
            raise InvokeError(
                "INVALID_REQUEST", f"{handle.name} is a digital output; PWM needs a pin of kind pwm"
            )
        return handle

    async def _write(self, ctx: InvokeContext) -> dict[str, Any]:
        handle = self._output(ctx, pwm=False)
        value = _binary(ctx.params.get("value"))
        self._cancel_pulse(handle.name)  # an explicit write wins over a pulse's restore
        try:
            handle.write(value)
            return {"name": handle.name, **handle.read()}
        except Exception as exc:
            raise _pin_error(exc) from None

    async def _pwm(self, ctx: InvokeContext) -> dict[str, Any]:
        handle = self._output(ctx, pwm=True)
        value = ctx.params.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InvokeError("INVALID_REQUEST", "parameter 'value' must be a number from 0 to 1")
        freq = ctx.params.get("frequency")
        if freq is not None and (
            isinstance(freq, bool) or not isinstance(freq, (int, float)) or not 0 < freq <= 100_000
        ):
            raise InvokeError("INVALID_REQUEST", "parameter 'frequency' must be a number in (0, 100000] Hz")
        self._cancel_pulse(handle.name)
        try:
            handle.write(float(value), frequency=float(freq) if freq is not None else None)
            return {"name": handle.name, **handle.read()}
        except Exception as exc:
            raise _pin_error(exc) from None

    async def _pulse(self, ctx: InvokeContext) -> dict[str, Any]:
        handle = self._output(ctx, pwm=False)
        cfg: PinConfig = handle.cfg
        ms = ctx.params.get("ms")
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 1 <= ms <= cfg.max_pulse_ms:
            raise InvokeError(
                "INVALID_REQUEST", f"parameter 'ms' must be a number from 1 to {cfg.max_pulse_ms}"
            )
        raw = ctx.params.get("value", 1)
        value = _binary(raw) if cfg.kind == "output" else _unit(raw)
        name = handle.name
        previous = self.pulses.get(name)
        try:
            restore_to = previous.restore_to if previous else handle.current_output()
        except Exception as exc:
            raise _pin_error(exc) from None
        if previous is not None:
            previous.task.cancel()
        try:
            handle.write(value)
        except Exception as exc:
            raise _pin_error(exc) from None
        started = time.time()
        # The restore belongs to the capability, not to this invoke: a lost gateway or a dropped
        # connection still ends the pulse on time. A pulse lives no longer than its invoke, though: at
        # the invoke's deadline, or when the invoke is cancelled, the pin goes back at once.
        task = self._spawn(self._restore_after(name, ms / 1000, restore_to), f"gpio-pulse-{name}")
        pulse = _Pulse(restore_to, task)
        self.pulses[name] = pulse
        try:
            async with asyncio.timeout(ctx.remaining()):
                await asyncio.shield(task)
        except TimeoutError:
            self._end_pulse_early(name, pulse, why="pulse cut at the invoke deadline")
            raise InvokeError(
                "TIMEOUT",
                f"a {ms:g} ms pulse does not fit the invoke's {ctx.timeout_ms} ms deadline; "
                f"{name} was set back to {restore_to:g} at the deadline",
            ) from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self._end_pulse_early(name, pulse, why="pulse cut: invoke cancelled")
                raise
        return {
            "name": name,
            "pulsed_to": value,
            "ms": ms,
            "restored_to": restore_to,
            "started": iso_time(started),
            "interrupted": task.cancelled(),
        }

    def _end_pulse_early(self, name: str, pulse: _Pulse, *, why: str) -> None:
        """Restore now, unless a newer pulse or an explicit write has taken the pin over already."""
        if self.pulses.get(name) is pulse:
            del self.pulses[name]
            pulse.task.cancel()
            self._set(name, pulse.restore_to, why=why)

    async def _restore_after(self, name: str, seconds: float, restore_to: float) -> None:
        await asyncio.sleep(seconds)
        if name in self.pulses and self.pulses[name].task is asyncio.current_task():
            del self.pulses[name]
        self._set(name, restore_to, why="pulse end")

    async def _events(self, ctx: InvokeContext) -> dict[str, Any]:
        since = ctx.params.get("since", 0)
        limit = ctx.params.get("limit", 100)
        if since is None:
            since = 0
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise InvokeError("INVALID_REQUEST", "parameter 'since' must be a non-negative integer (a seq)")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvokeError("INVALID_REQUEST", "parameter 'limit' must be an integer from 1 to 1000")
        name = self._pin_name(ctx, required=False)
        return self.ring.since(since, name=name, limit=limit)


def _binary(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return float(value)
    raise InvokeError("INVALID_REQUEST", f"parameter 'value' must be 0 or 1 (or true/false), got {value!r}")


def _unit(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    raise InvokeError("INVALID_REQUEST", f"parameter 'value' must be a number from 0 to 1, got {value!r}")
