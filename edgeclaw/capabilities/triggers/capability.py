"""The triggers capability: each rule's source (a GPIO edge from the bus, a schedule, a device
threshold, camera motion) fires its actions and spools one agent.request; a pump delivers the spool in
order, a backlog for one session as one request. Every long-lived loop is a supervised child."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from edgeclaw.capabilities.base import Capability, Handler, InvokeError, NodeServices, NotConnected
from edgeclaw.capabilities.camera import motion as motion_mod
from edgeclaw.capabilities.gpio.edges import iso_time
from edgeclaw.capabilities.gpio.tools import _slug
from edgeclaw.capabilities.triggers import delivery
from edgeclaw.capabilities.triggers.actions import ActionResult, run_actions
from edgeclaw.capabilities.triggers.config import Config, Rule, cross_check
from edgeclaw.capabilities.triggers.manifest import MANIFEST
from edgeclaw.capabilities.triggers.migrate import migrate_gpio_spool
from edgeclaw.capabilities.triggers.rules import TriggerState, effective_rules
from edgeclaw.capabilities.triggers.sources import Hysteresis, next_fire, read_metric
from edgeclaw.capabilities.triggers.spool import Spool
from edgeclaw.platform import events
from edgeclaw.platform.supervisor import Supervisor

log = logging.getLogger("edgeclaw.triggers")

RETRY_S = 5.0
MOTION_STATUS_S = 5.0  # while a motion watcher runs, status.json shows its frames/RSS this fresh
MAX_SLEEP_S = 60.0  # schedule timers wake at least this often (wall-clock jumps after NTP sync)


class TriggersCapability(Capability):
    manifest = MANIFEST

    def __init__(self, config: Config, services: NodeServices) -> None:
        super().__init__(config, services)
        self.config: Config = config
        self.rules: dict[str, Rule] = {}
        self.states: dict[str, TriggerState] = {}
        self.spool: Spool | None = None
        self.sup: Supervisor | None = None
        self._wake = asyncio.Event()
        self._fire_lock = asyncio.Lock()  # FIFO: fires reach the spool in the order they happened
        self._unsubscribe: Any = None
        self.watchers: dict[str, Any] = {}
        self.started = False

    # surface ----------------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Handler]:
        return {}  # triggers act on their own; what they do is in status and telemetry

    def _sections(self) -> tuple[Any, Any]:
        caps = getattr(self.services.config, "capabilities", {}) or {}
        return caps.get("gpio"), caps.get("camera")

    def _spool_bounds(self) -> tuple[int, float]:
        gpio, _ = self._sections()
        size = self.config.spool_max or getattr(gpio, "spool_max", None) or 200
        age = self.config.spool_max_age or getattr(gpio, "spool_max_age", None) or 3600.0
        return int(size), float(age)

    def default_session_key(self) -> str:
        return f"edgeclaw-{_slug(self.services.display_name)}"

    # lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        gpio, camera = self._sections()
        rules = effective_rules(self.config, gpio)
        cross_check(self.config, gpio, camera)
        size, age = self._spool_bounds()
        state_dir = self.services.state_dir
        legacy = (state_dir / "gpio-spool.json").exists()
        if not rules and not legacy and not (state_dir / "triggers-spool.json").exists():
            self.started = True  # nothing to do: no files, no tasks
            return
        self.spool = Spool.open(state_dir, size, age)
        migrate_gpio_spool(state_dir, self.spool)
        self.sup = self.services.supervisor.child_supervisor("triggers")
        self._unsubscribe = self.services.bus.subscribe(self._on_bus)
        self.sup.start_child("spool-pump", self._pump)
        self._start_rules(rules)
        self.started = True
        self._wake.set()
        if rules:
            log.info("triggers: %s", ", ".join(f"{n} ({r.source.kind})" for n, r in rules.items()))

    def _start_rules(self, rules: dict[str, Rule]) -> None:
        assert self.sup is not None
        self.rules = rules
        old = self.states
        self.states = {}
        for name, rule in rules.items():
            state = old.get(name)
            if state is None or state.kind != rule.source.kind:
                state = TriggerState(rule.source.kind)
            self.states[name] = state
            kind = rule.source.kind
            if kind == "schedule":
                self.sup.start_child(f"schedule-{name}", functools.partial(self._schedule_loop, name))
            elif kind == "threshold":
                self.sup.start_child(f"threshold-{name}", functools.partial(self._threshold_loop, name))
            elif kind == "camera_motion":
                self.sup.start_child(f"motion-{name}", functools.partial(self._motion_loop, name))
        if any(rule.source.kind == "camera_motion" for rule in rules.values()):
            self.sup.start_child("motion-status", self._motion_status_loop)

    def _stop_rules(self) -> None:
        if self.sup is None:
            return
        for name in list(self.sup.children):
            if name != "spool-pump":
                self.sup.cancel_child(name)
        self.watchers.clear()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.sup is not None:
            await self.sup.stop(timeout=5.0)
            self.sup = None
        self.watchers.clear()
        self.started = False

    async def reload(self, new_config: Any) -> None:
        """A changed section is applied in place (counters of unchanged names kept); a rule that does not
        fit the other sections raises ValueError and the old rules keep running."""
        gpio, camera = self._sections()
        rules = effective_rules(new_config, gpio)
        cross_check(new_config, gpio, camera)
        self.config = new_config
        if self.sup is None:
            await self.stop()
            await self.start()
            return
        size, age = self._spool_bounds()
        if self.spool is not None:
            self.spool.max_entries, self.spool.max_age = size, age
        if rules != self.rules:
            self._stop_rules()
            self._start_rules(rules)
        self._wake.set()

    async def on_session_ready(self) -> None:
        self._wake.set()

    def _on_bus(self, name: str, fields: dict[str, Any]) -> None:
        if name == events.GPIO_EDGE:
            self._on_gpio_edge(fields)
        elif name == events.HELLO_OK or (name == events.PAIRING and fields.get("stage") == "approved"):
            self._wake.set()

    # firing -----------------------------------------------------------------------------------------
    def _on_gpio_edge(self, edge: dict[str, Any]) -> None:
        for name, rule in self.rules.items():
            src = rule.source.gpio
            if src is None or src.pin != edge.get("pin_name"):
                continue
            if src.edge != "both" and (src.edge == "active") != bool(edge.get("active")):
                continue
            ts = float(edge.get("ts") or time.time())
            extra = {k: edge.get(k) for k in ("state", "value", "pin", "kind", "seq", "description")}
            extra["name"] = edge.get("pin_name")
            self.fire(name, ts, extra)

    def admit(self, name: str, ts: float) -> bool:
        """Cooldown and rate limit: False (and counted as suppressed) when this fire must not go out."""
        rule, state = self.rules[name], self.states[name]
        if rule.cooldown_s and state.last_fire is not None and ts - state.last_fire < rule.cooldown_s:
            return self._suppress(name, "cooldown")
        if rule.rate_limit is not None:
            window = rule.rate_limit.per_s
            while state.recent and ts - state.recent[0] >= window:
                state.recent.popleft()
            if len(state.recent) >= rule.rate_limit.count:
                return self._suppress(name, "rate limit")
            state.recent.append(ts)
        state.fired += 1
        state.last_fire = ts
        self.services.bus.emit(events.TRIGGER, trigger=name, outcome="fired", reason=rule.source.kind)
        return True

    def _suppress(self, name: str, why: str) -> bool:
        self.states[name].suppressed += 1
        log.info("trigger %s suppressed (%s)", name, why)
        self.services.bus.emit(events.TRIGGER, trigger=name, outcome="suppressed", reason=why)
        return False

    def fire(self, name: str, ts: float, extra: dict[str, Any]) -> asyncio.Task[Any] | None:
        """Admit, then run the actions and spool the request (in a short supervised task)."""
        if name not in self.rules or self.sup is None or not self.admit(name, ts):
            return None
        return self.sup.spawn(self._run(name, ts, extra), f"trigger-{name}")

    async def _run(self, name: str, ts: float, extra: dict[str, Any]) -> None:
        async with self._fire_lock:
            rule = self.rules.get(name)
            if rule is None or self.spool is None:
                return
            result = await run_actions(self.services, name, rule, self.config.photo_max_bytes, ts)
            message = self.render(name, rule, ts, extra, result)
            self.spool.add(
                ts,
                name,
                message,
                rule.session_key or self.default_session_key(),
                time_in_message="{time}" in rule.message,
                deliver=rule.deliver,
                channel=rule.channel,
                to=rule.to,
                photos=result.photos,
            )
            self._wake.set()

    def render(self, name: str, rule: Rule, ts: float, extra: dict[str, Any], result: ActionResult) -> str:
        notes = " ".join(result.notes)
        fields = {
            "node": self.services.display_name,
            "time": iso_time(ts),
            "trigger": name,
            "pins": result.pins,
            "device": result.device,
            "notes": notes,
            **extra,
        }
        try:
            message = rule.message.format_map(fields)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            message = f"{name} fired at {fields['time']} (message template failed: {exc})"
        if notes and "{notes}" not in rule.message:
            message = f"{message} {notes}"
        return message

    # source loops (supervised children) ------------------------------------------------------------
    async def _schedule_loop(self, name: str) -> None:
        src = self.rules[name].source.schedule
        assert src is not None
        state = self.states[name]
        count = 0
        while True:
            state.next_fire = next_fire(src, time.time())
            self.services.bus.emit(events.TRIGGER, trigger=name, outcome="scheduled", reason=None)
            while (left := state.next_fire - time.time()) > 0:
                await asyncio.sleep(min(left, MAX_SLEEP_S))
            count += 1
            self.fire(name, time.time(), {"count": count})

    async def _threshold_loop(self, name: str) -> None:
        src = self.rules[name].source.threshold
        assert src is not None
        state = self.states[name]
        hyst = Hysteresis(src, armed=state.armed if state.armed is not None else True)
        while True:
            value = await asyncio.to_thread(read_metric, src)
            changed, state.last_value = value != state.last_value, value
            if value is not None and hyst.feed(value):
                self.fire(name, time.time(), {"metric": src.metric, "value": value, "limit": src.limit})
            state.armed = hyst.armed
            if changed:  # status.json shows the reading with its fire, never a reading without it
                self.services.bus.emit(events.TRIGGER, trigger=name, outcome="reading", reason=None)
            await asyncio.sleep(src.interval_s)

    async def _motion_loop(self, name: str) -> None:
        src = self.rules[name].source.camera_motion
        assert src is not None
        _, camera = self._sections()
        settings = src.settings()

        def on_motion(event: motion_mod.MotionEvent) -> None:
            self.fire(name, event.ts, {"area": round(event.area, 3), "device": src.device or "default"})

        watcher = motion_mod.MotionWatcher(
            settings,
            camera,
            on_motion,
            simulated=self.services.simulated,
            runtime_dir=str(self.services.config.runtime_dir),
        )
        self.watchers[name] = watcher
        try:
            await watcher.run()
        finally:
            if self.watchers.get(name) is watcher:
                del self.watchers[name]

    async def _motion_status_loop(self) -> None:
        """A watcher's frames and worker RSS change without any event: refresh status.json now and then."""
        while True:
            await asyncio.sleep(MOTION_STATUS_S)
            if self.watchers:
                self.services.bus.emit(events.TRIGGER, trigger=None, outcome="watching", reason=None)

    # delivery ---------------------------------------------------------------------------------------
    async def _pump(self) -> None:
        """Deliver the spool in order whenever the gateway takes it; a backlog per session as one request."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            spool = self.spool
            while spool is not None and spool.head() is not None and self.services.is_connected():
                spool.expire(time.time())
                entries = delivery.pick(spool)
                if not entries:
                    break
                try:
                    outcome = await self._deliver(spool, entries)
                except Exception as exc:  # this entry, every time: set it aside rather than crash-loop
                    head = entries[0]
                    spool.entries = [e for e in spool.entries if e.id != head.id]
                    spool.quarantine(
                        {"id": head.id, "trigger": head.trigger, "message": head.message},
                        f"delivering it failed: {type(exc).__name__}: {exc}",
                    )
                    continue
                if outcome == "retry":
                    await asyncio.sleep(RETRY_S)
                    continue
                if outcome == "offline":
                    break

    async def _deliver(self, spool: Spool, entries: list[Any]) -> str:
        batch = delivery.build(spool, entries, self.config.request_media_bytes, time.time())
        try:
            await self.services.send_event("agent.request", batch.payload, timeout=30)
        except NotConnected:
            return "offline"
        except InvokeError as exc:
            if "PAIRING" in exc.code or "NOT_PAIRED" in exc.code or exc.code in ("UNAVAILABLE", "TIMEOUT"):
                log.info("agent.request not accepted yet (%s); retrying", exc)
                return "retry"
            log.error("gateway refused an agent.request (%d event(s)): %s; dropped", len(entries), exc)
            spool.remove(entries, delivered=False)
            for entry in entries:
                self.services.bus.emit(
                    events.TRIGGER, trigger=entry.trigger, outcome="dropped", reason=exc.code
                )
            return "dropped"
        spool.drops_reported(batch.drops_told)
        spool.remove(entries, delivered=True)
        log.info(
            "agent.request sent: %d event(s), %d photo(s) (spool #%s)",
            len(entries),
            len(batch.payload.get("attachments", [])),
            ",#".join(str(e.id) for e in entries),
        )
        self.services.bus.emit(events.TRIGGER, trigger=entries[0].trigger, outcome="sent", reason=None)
        return "sent"

    # status -----------------------------------------------------------------------------------------
    def status_report(self) -> dict[str, Any] | None:
        if not self.rules and self.spool is None:
            return None
        return {
            "triggers": {name: state.report() for name, state in self.states.items()},
            "spool": self.spool.stats() if self.spool is not None else None,
            "motion": {name: _stats(w) for name, w in self.watchers.items()},
        }


def _stats(watcher: Any) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        return dict(watcher.stats())
    return {}
