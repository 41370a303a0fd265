"""`edgeclaw run`: wires config, identity, capabilities, runner, systemd and signals into one process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from types import ModuleType
from typing import Any

from edgeclaw import __version__
from edgeclaw.capabilities.base import Capability
from edgeclaw.capabilities.registry import load_capability_modules
from edgeclaw.config import EX_CONFIG, Config, load_config
from edgeclaw.node.runner import EX_DATAERR, FatalError, NodeRunner
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


class Daemon:
    def __init__(self, config: Config, config_path: str | None) -> None:
        self.config = config
        self.config_path = config_path
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
        self._stop_task: asyncio.Task[Any] | None = None

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
        await self._apply_capabilities(self.config)
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
        loop.add_signal_handler(signal.SIGHUP, lambda: self.supervisor.spawn(self.reload(), "reload"))
        self.supervisor.start_child("loop-lag", self._lag_monitor)
        interval = watchdog_interval()
        if interval:
            self.supervisor.start_child("watchdog", lambda: self._watchdog(interval))
        self.notifier.ready(runner.status.line())
        # the connection loop is a transient child: a crash out of it is restarted with backoff
        self.supervisor.start_child("connection", runner.run, restart=Restart.TRANSIENT)
        try:
            await self.supervisor.join("connection")
            if self._stop_task is not None:  # the connection ended first: let stop() finish its work
                await asyncio.wait({self._stop_task}, timeout=DRAIN_TIMEOUT_S + 10)
        except Escalated as exc:
            code = exc.cause.exit_code if isinstance(exc.cause, FatalError) else EX_SOFTWARE
            message = str(exc.cause) if isinstance(exc.cause, FatalError) else f"gave up: {exc.reason}"
            log.error("%s", message)
            self.notifier.status(f"stopped: {message}")
            await self._stop_capabilities()
            return code
        finally:
            self.supervisor.cancel_all()
        return 0

    # capabilities ---------------------------------------------------------------------------------
    async def _apply_capabilities(self, config: Config) -> None:
        assert self.runner is not None
        for key, module in self.modules.items():
            section = config.capabilities.get(key)
            enabled = bool(getattr(section, "enabled", False))
            current = self.caps.get(key)
            self.cap_starts.cancel_child(key)  # a pending retry is replaced by what this config says
            if current is not None and not enabled:
                await _safe(current.stop(), f"{key}: stop")
                del self.caps[key]
            elif current is not None:
                await current.reload(section)
            elif enabled:
                try:
                    await self._start_capability(key, module, section)
                except Exception as exc:
                    log.error("capability %s failed to start: %s; retrying with backoff", key, exc)
                    self.cap_starts.start_child(
                        key,
                        functools.partial(self._start_capability, key, module, section, late=True),
                        restart=Restart.TRANSIENT,
                        critical=False,  # missing hardware must not restart the whole node
                        retrying=f"{type(exc).__name__}: {exc}",
                    )
        self.runner.set_capabilities(list(self.caps.values()))

    async def _start_capability(
        self, key: str, module: ModuleType, section: Any, *, late: bool = False
    ) -> None:
        """Create and start one capability; a late start (a retry that worked) widens the surface."""
        assert self.runner is not None
        cap = module.create(section, self.runner)
        try:
            await cap.start()
        except Exception:
            await _safe(cap.stop(), f"{key}: stop after a failed start")
            raise
        self.caps[key] = cap
        if late:
            log.info("capability %s started after a retry", key)
            self.runner.set_capabilities(list(self.caps.values()))
            self.runner.request_reconnect(f"capability {key} started")

    async def _stop_capabilities(self) -> None:
        for key, cap in list(self.caps.items()):
            await _safe(cap.stop(), f"{key}: stop")

    # signals --------------------------------------------------------------------------------------
    def _on_stop_signal(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_task = self.supervisor.spawn(self.stop(), "stop")

    async def stop(self) -> None:
        assert self.runner is not None
        log.info("stopping: draining in-flight invokes (up to %.0f s)", DRAIN_TIMEOUT_S)
        self.notifier.stopping()
        await self.runner.shutdown(DRAIN_TIMEOUT_S)
        await self._stop_capabilities()

    async def reload(self) -> None:
        """SIGHUP: re-read config; a broken config keeps the old one running and says why."""
        assert self.runner is not None
        runner = self.runner
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            if new.gateway.url != self.config.gateway.url or new.state_dir != self.config.state_dir:
                raise ConfigError("gateway.url and node.state_dir change only with a restart")
            before = (runner.declared_commands(), runner.declared_caps())
            set_level(new.core.log.level)
            await self._apply_capabilities(new)
            await self.telemetry.reload(new.core.telemetry)
        except (ConfigError, ValueError) as exc:
            runner.status.reload_error = str(exc)
            log.error("reload failed, keeping the running config: %s", exc)
        else:
            runner.status.reload_error = None
            self.config = new
            runner.config = new
            after = (runner.declared_commands(), runner.declared_caps())
            if after != before:
                runner.request_reconnect("node manifest changed")
            elif runner.is_connected():
                await runner.publish_tools()
            log.info("configuration reloaded from %s", new.path)
        self.notifier.ready(runner.status.line())
        runner.status_file.write(runner.status, force=True)

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


async def _safe(coro: Any, what: str) -> None:
    try:
        await asyncio.wait_for(coro, 10)
    except Exception as exc:
        log.error("%s failed: %s", what, exc)


def run_daemon(config_path: str | None) -> int:
    setup_logging("info")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    setup_logging(config.core.log.level)
    daemon = Daemon(config, config_path)
    started = time.monotonic()
    try:
        import uvloop

        runner_fn: Any = uvloop.run
    except ImportError:
        runner_fn = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        code = runner_fn(daemon.main())
        log.info("exited after %.0f s with status %d", time.monotonic() - started, code)
        return int(code)
    return 0
