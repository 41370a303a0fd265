"""`edgeclaw run`: wires config, identity, capabilities, runner, systemd and signals into one process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from types import ModuleType
from typing import Any

from edgeclaw import __version__
from edgeclaw.capabilities.base import Capability
from edgeclaw.capabilities.registry import load_capability_modules
from edgeclaw.config import EX_CONFIG, Config, load_config
from edgeclaw.node.capset import ApplyError, CapabilitySet
from edgeclaw.node.ladder import Ladder
from edgeclaw.node.runner import EX_DATAERR, FatalError, NodeRunner
from edgeclaw.node.waiting import wait_for_valid_config
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.logsetup import set_level, setup_logging
from edgeclaw.platform.metrics import LoopLag
from edgeclaw.platform.state import StateDir, StateError
from edgeclaw.platform.supervisor import EX_SOFTWARE, Escalated, Restart, Supervisor
from edgeclaw.platform.systemd import Notifier, watchdog_interval
from edgeclaw.platform.telemetry import Telemetry
from edgeclaw.typedconfig import ConfigError

log = logging.getLogger("edgeclaw.daemon")

LAG_SAMPLE_S = 0.5
LAG_SAMPLE_BUSY_S = 0.05  # while invokes run: that is when a stall hurts, and the loop is awake anyway
LAG_SUMMARY_S = 2.0
LAG_UNHEALTHY_S = 5.0
DRAIN_TIMEOUT_S = 20.0
RELOAD_WAIT_S = 30.0  # a stop waits this long for a reload in progress


class Daemon:
    def __init__(self, config: Config, config_path: str | None, *, serve: bool = True) -> None:
        self.config = config
        self.config_path = config_path
        self.serve = serve  # False for `edgeclaw pair`: declare the commands, run none (see paironly)
        self.bus = EventBus()
        self.state = StateDir(config.state_dir)
        self.notifier = Notifier()
        self.modules: dict[str, ModuleType] = load_capability_modules()
        self.caps: dict[str, Capability] = {}
        self.runner: NodeRunner | None = None
        self.loop_lag = 0.0
        self.lag_samples = LoopLag()
        # every long-lived task of the process runs under this tree; giving up means exit EX_SOFTWARE
        self.supervisor = Supervisor("edgeclaw", bus=self.bus, fatal=(FatalError,))
        self.cap_starts = self.supervisor.child_supervisor(
            "capability-start", backoff_initial_s=2.0, backoff_max_s=300.0
        )
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = asyncio.Event()
        self.capset: CapabilitySet | None = None
        self.ladder: Ladder | None = None

    async def main(self) -> int:
        try:
            self.state.ensure()
            identity = self.state.load_identity() if self.state.has_identity() else None
            if identity is None:
                identity = self.state.create_identity()
                log.info("created a new device identity %s", identity.device_id)
        except StateError as exc:
            log.error("%s", exc)
            return EX_DATAERR
        except OSError as exc:
            log.error("state directory %s is not usable: %s", self.state.path, exc)
            return EX_CONFIG
        runner = NodeRunner(
            self.config,
            identity,
            self.state,
            bus=self.bus,
            supervisor=self.supervisor.child_supervisor("node"),
        )
        self.runner = runner
        self.capset = CapabilitySet(self.modules, runner, serve=self.serve, on_start_failed=self._retry_start)
        self.caps = self.capset.caps
        self.bus.subscribe(self._on_bus)
        self.telemetry = Telemetry(
            self.config.core.telemetry,
            self.bus,
            node_id=identity.device_id,
            version=__version__,
            snapshot=runner.node_snapshot,
            loop_lag=lambda: self.loop_lag,
            loop_lag_samples=self.lag_samples,
        )
        self.supervisor.start_child("telemetry", self.telemetry.run)
        self.ladder = ladder = Ladder(self)
        ladder.begin()
        await ladder.start_capabilities()
        if ladder.safe_reason:  # after start_capabilities, so edgeclaw.logs has this line too
            log.critical("starting in SAFE MODE: %s", ladder.safe_reason)
        log.info(
            "EdgeClaw node %s (%s) declaring %d commands: %s",
            runner.display_name,
            identity.device_id[:12],
            len(runner.declared_commands()),
            ", ".join(runner.declared_commands()),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        sup = self.supervisor
        sup.start_child("reload", self._reload_worker)
        sup.start_child("loop-lag", self._lag_monitor)
        interval = watchdog_interval()
        if interval:
            sup.start_child("watchdog", functools.partial(self._watchdog, interval))
        sup.start_child("healthy-timer", ladder.healthy_timer, restart=Restart.TRANSIENT)
        self.notifier.ready(runner.status.line())
        sup.spawn(ladder.announce_safe_mode(), "safe-mode-notify")
        code = 0
        try:
            while True:
                # the connection loop is a transient child: a crash out of it is restarted with backoff
                sup.start_child("connection", runner.run, restart=Restart.TRANSIENT)
                try:
                    await sup.join("connection")
                    break
                except Escalated as exc:
                    if not isinstance(exc.cause, FatalError):  # restart intensity exceeded
                        log.error("gave up: %s", exc.reason)
                        self.notifier.status(f"stopped: gave up: {exc.reason}")
                        code = EX_SOFTWARE
                        break
                    fatal = exc.cause
                    log.error("%s", fatal)
                    if not self.notifier.enabled:  # in a terminal: exit with the status at once
                        self.notifier.status(f"stopped: {fatal}")
                        code = fatal.exit_code
                        break
                    sup.reset_escalation()
                    if not await ladder.wait_after_fatal(fatal):
                        break
        finally:
            await self._finish_stop()
            sup.cancel_all()
            ladder.end(code)
        return code

    @property
    def stopping(self) -> bool:
        return self._stopping

    # stop -----------------------------------------------------------------------------------------
    def _on_stop_signal(self) -> None:
        if self._stop_task is not None:
            log.info("already stopping; signal ignored")
            return
        self._begin_stop()

    def _begin_stop(self) -> asyncio.Task[None]:
        """The one stop sequence; later requests join it. Not in self._tasks: main()'s cleanup cancels
        those, and this one must run to its end."""
        if self._stop_task is None:
            self._stopping = True
            if self.ladder is not None:
                self.ladder.wake.set()
            self._stop_task = asyncio.get_running_loop().create_task(self._stop_sequence(), name="stop")
        return self._stop_task

    async def stop(self) -> None:
        """Stop as SIGTERM does (e.g. `edgeclaw pair` when approved); returns when outputs are safe."""
        await asyncio.shield(self._begin_stop())

    async def _stop_sequence(self) -> None:
        """Stop taking invokes, drain (bounded), every output to its safe state, then close."""
        runner = self.runner
        self.notifier.stopping()
        if runner is not None:
            log.info("stopping: draining in-flight invokes (up to %.0f s)", DRAIN_TIMEOUT_S)
            try:
                await runner.shutdown(DRAIN_TIMEOUT_S)
            except Exception as exc:  # the capabilities below must stop whatever happened here
                log.error("closing the session failed: %s", exc)
        await self._stop_capabilities()

    async def _finish_stop(self) -> None:
        """Whatever ended runner.run() (a signal, a fatal error, cancellation), outputs reach their safe
        state before main() returns; cancelling main() meanwhile is deferred until they have."""
        if self._stop_task is None:
            self._stopping = True
            self._stop_task = asyncio.get_running_loop().create_task(self._stop_capabilities(), name="stop")
        cancelled = False
        while not self._stop_task.done():
            try:
                await asyncio.shield(self._stop_task)
            except asyncio.CancelledError:
                cancelled = True
        if not self._stop_task.cancelled() and self._stop_task.exception() is not None:
            log.error("stopping failed: %r", self._stop_task.exception())
        if cancelled:
            raise asyncio.CancelledError

    async def _stop_capabilities(self) -> None:
        self.cap_starts.cancel_all()  # no late start may switch an output on after this
        # a reload in progress finishes first (bounded), so the set stopped is the one that stays
        try:
            await asyncio.wait_for(self._reload_lock.acquire(), RELOAD_WAIT_S)
        except TimeoutError:
            log.error("a reload did not finish within %.0f s; stopping anyway", RELOAD_WAIT_S)
        else:
            self._reload_lock.release()
        if self.capset is not None:
            await self.capset.stop_all()
        if self.runner is not None:
            self.runner.set_capabilities([])

    # capability start retries --------------------------------------------------------------------
    def _retry_start(self, key: str, exc: Exception) -> None:
        """A capability that failed to start is retried with backoff instead of dropped until restart;
        the retries never count against the node's health (missing hardware must not restart it)."""
        log.error("capability %s failed to start: %s; retrying with backoff", key, exc)
        self.cap_starts.start_child(
            key,
            functools.partial(self._start_late, key),
            restart=Restart.TRANSIENT,
            critical=False,
            retrying=f"{type(exc).__name__}: {exc}",
        )

    async def _start_late(self, key: str) -> None:
        """One retry, with the section in force now (a reload may have changed or disabled it)."""
        assert self.capset is not None and self.runner is not None and self.ladder is not None
        section = self.ladder.applied_sections().get(key)
        if self._stopping or key in self.caps or not getattr(section, "enabled", False):
            return
        await self.capset.start_one(key, section)
        log.info("capability %s started after a retry", key)
        self.runner.set_capabilities(list(self.caps.values()))
        self.runner.request_reconnect(f"capability {key} started")

    # reload ---------------------------------------------------------------------------------------
    def request_reload(self) -> None:
        """SIGHUP: signals that arrive during a reload coalesce into one more reload after it."""
        if self.ladder is not None and self.ladder.waiting:
            self.ladder.wake.set()  # waiting after a fatal error: try again with the config as it is now
        elif not self._stopping:
            self._reload_wanted.set()

    async def _reload_worker(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    async def reload(self) -> None:
        """Re-read the config; validate all of it, apply all or nothing, always end with READY=1 and a
        STATUS= saying what happened. A broken config keeps the old one running and says why."""
        assert self.runner is not None
        async with self._reload_lock:
            if self._stopping:
                return
            runner = self.runner
            self.notifier.reloading()
            outcome = "reload failed: internal error"
            try:
                outcome = await self._reload_locked(runner)
            except Exception as exc:  # never leave systemd at RELOADING=1
                runner.status.reload_error = f"{type(exc).__name__}: {exc}"
                log.exception("reload failed, keeping the running config")
                outcome = f"reload failed: {runner.status.reload_error}"
            finally:
                line = runner.status.line()  # a failure is already its prefix ("reload failed: why")
                self.notifier.ready(line if runner.status.reload_error else f"{outcome} · {line}")
                runner.status_file.write(runner.status, force=True)

    async def _reload_locked(self, runner: NodeRunner) -> str:
        try:
            new = load_config(self.config_path)
            if new.gateway.url != self.config.gateway.url or new.state_dir != self.config.state_dir:
                raise ConfigError("gateway.url and node.state_dir change only with a restart")
        except (ConfigError, ValueError) as exc:
            runner.status.reload_error = str(exc)
            log.error("reload failed, keeping the running config: %s", exc)
            return f"reload failed: {exc}"
        before = (runner.declared_commands(), runner.declared_caps())
        assert self.capset is not None and self.ladder is not None
        try:
            changed = await self.capset.apply(self.ladder.applied_sections(), new.capabilities)
        except ApplyError as exc:
            runner.set_capabilities(list(self.caps.values()))
            runner.status.reload_error = str(exc)
            log.error("reload failed, rolled back to the running config: %s", exc)
            return f"reload failed: {exc}"
        for key in self.modules:  # a pending start retry ends when its capability is disabled
            if not getattr(new.capabilities.get(key), "enabled", False):
                self.cap_starts.cancel_child(key)
        if self.ladder.leave_safe_mode():
            changed.append("left safe mode")
        runner.set_capabilities(list(self.caps.values()))
        runner.status.reload_error = None
        set_level(new.core.log.level)
        await self.telemetry.reload(new.core.telemetry)
        self.config = new
        changed += runner.update_config(new)
        after = (runner.declared_commands(), runner.declared_caps())
        if after != before:
            changed.append("node manifest changed")
        reconnect = [c for c in changed if not c.endswith(("reloaded", "enabled", "disabled"))]
        if reconnect:
            runner.request_reconnect(", ".join(reconnect))
        elif runner.is_connected():
            await runner.publish_tools()
        log.info("configuration reloaded from %s (%s)", new.path, ", ".join(changed) or "no change")
        return f"reload ok ({', '.join(changed) or 'no change'})"

    # health ---------------------------------------------------------------------------------------
    def _on_bus(self, name: str, fields: dict[str, Any]) -> None:
        if name == events.STATE and not self._stopping:
            self.notifier.status(str(fields.get("detail", "")))

    async def _lag_monitor(self) -> None:
        """Sleep-drift sampler: how late a timer fires is how long anything else waited for the loop."""
        loop = asyncio.get_running_loop()
        summarised = loop.time()
        while True:
            runner = self.runner
            busy = runner is not None and runner.dispatcher.in_flight > 0
            period = LAG_SAMPLE_BUSY_S if busy else LAG_SAMPLE_S
            before = loop.time()
            await asyncio.sleep(period)
            now = loop.time()
            self.loop_lag = max(0.0, now - before - period)
            self.lag_samples.observe(self.loop_lag, now)
            if self.loop_lag > 1.0:
                self.bus.emit(events.LOOP_LAG, lag_s=self.loop_lag)
            if runner is not None and now - summarised >= LAG_SUMMARY_S:
                summarised = now
                runner.status.loop_lag_ms = self.lag_samples.summary()

    def health(self) -> str | None:
        assert self.runner is not None
        if self.loop_lag > LAG_UNHEALTHY_S:
            return f"event loop lagging {self.loop_lag:.1f} s"
        if self.ladder is not None and self.ladder.waiting:
            return None  # waiting for a fix on purpose: no connection attempts to be overdue
        return self.runner.health(asyncio.get_running_loop().time()) or self.supervisor.health()

    async def _watchdog(self, interval: float) -> None:
        last_reason: str | None = None
        while True:
            reason = self.health()
            if reason is None:
                self.notifier.watchdog()
                if last_reason:
                    log.info("healthy again; watchdog pings resumed")
            elif reason != last_reason:
                log.error("unhealthy, withholding watchdog pings: %s", reason)
            last_reason = reason
            # also refresh STATUS= so "last N s ago" stays honest
            if self.runner is not None and not self._stopping:
                self.notifier.status(self.runner.status.line())
            await asyncio.sleep(interval)


def run_daemon(config_path: str | None) -> int:
    setup_logging("info")
    loaded: Config | None = None
    error: ConfigError | None = None
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        if not os.environ.get("NOTIFY_SOCKET"):  # in a terminal: say it and exit
            return EX_CONFIG
        error = exc  # under systemd: wait for a fix instead of a restart loop (see waiting.py)

    async def main() -> int:
        config = loaded
        if config is None:
            assert error is not None
            config = await wait_for_valid_config(config_path, error)
            if config is None:
                return 0
        setup_logging(config.core.log.level)
        return await Daemon(config, config_path).main()

    started = time.monotonic()
    try:
        import uvloop

        runner_fn: Any = uvloop.run
    except ImportError:
        runner_fn = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        code = runner_fn(main())
        log.info("exited after %.0f s with status %d", time.monotonic() - started, code)
        return int(code)
    return 0
