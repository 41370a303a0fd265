"""The escalation ladder inside the process: crash-loop safe mode and waiting after a fatal error.

Ladder, bottom up: a background task fails → its supervisor restarts it; the process dies → systemd
restarts it (Restart=on-failure); K such starts within T → the node starts in safe mode (this module);
the node hangs → WatchdogSec= kills and restarts it; the board hangs → the hardware watchdog reboots it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from edgeclaw.config import load_config
from edgeclaw.node.runner import FatalError
from edgeclaw.node.safemode import LogTail, SafeModeCapability, notify_owner
from edgeclaw.node.startlog import StartHistory
from edgeclaw.node.waiting import retry_delay, wait_for_change, watched_files
from edgeclaw.typedconfig import ConfigError

if TYPE_CHECKING:
    from edgeclaw.node.daemon import Daemon

log = logging.getLogger("edgeclaw.daemon")

SAFE_KEY = "edgeclaw"  # the safe-mode capability's slot in the capability set
SAFE_CAPABILITIES = ("device",)  # config sections that still run in safe mode


class Ladder:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.history = StartHistory(daemon.state.path, daemon.config.node.safe_mode)
        self.safe_reason: str | None = None
        self.tail: LogTail | None = None
        self.wake = asyncio.Event()  # SIGHUP or stop while waiting after a fatal error
        self.waiting = False
        self._notified: set[str] = set()
        self._fatal_attempt = 0  # grows while nothing changes; a fix (file, reload) starts it over

    # crash-loop safe mode ---------------------------------------------------------------------------
    def begin(self) -> str | None:
        """Record this start; the reason to run in safe mode, or None."""
        self.safe_reason = self.history.crash_loop(self.history.begin())
        return self.safe_reason

    def applied_sections(self) -> dict[str, Any]:
        """The capability sections actually running (in safe mode, only SAFE_CAPABILITIES)."""
        caps = self.daemon.config.capabilities
        if not self.safe_reason:
            return caps
        return {k: dataclasses.replace(caps[k], enabled=True) for k in SAFE_CAPABILITIES if k in caps}

    async def start_capabilities(self) -> None:
        d = self.daemon
        assert d.capset is not None and d.runner is not None
        await d.capset.start(self.applied_sections())
        if self.safe_reason:
            if self.tail is None:
                self.tail = LogTail()
                logging.getLogger().addHandler(self.tail)
            starts = [dict(e) for e in self.history.entries]
            d.caps[SAFE_KEY] = SafeModeCapability(self.safe_reason, self.tail, d.runner, starts)
            d.runner.status.safe_mode = self.safe_reason
        d.runner.set_capabilities(list(d.caps.values()))

    async def announce_safe_mode(self) -> None:
        reason = self.safe_reason
        if reason:
            body = (
                f"{reason}; running in safe mode: only device.info, device.status and edgeclaw.logs. "
                "Fix the cause, then `systemctl reload edgeclaw` (or restart it)."
            )
            await self._notify_once("EdgeClaw node in safe mode", body)

    def leave_safe_mode(self) -> bool:
        """After a reload applied the full config: the safe-mode command goes; True if it was on."""
        d = self.daemon
        if not self.safe_reason:
            return False
        d.caps.pop(SAFE_KEY, None)
        self.safe_reason = None
        if d.runner is not None:
            d.runner.status.safe_mode = None
        if self.tail is not None:
            logging.getLogger().removeHandler(self.tail)
            self.tail = None
        log.warning("left safe mode: the full configuration runs again")
        return True

    async def healthy_timer(self) -> None:
        """After healthy_after_s seconds with a responsive loop, earlier failed starts are forgiven."""
        from edgeclaw.node.daemon import LAG_UNHEALTHY_S

        after = self.daemon.config.node.safe_mode.healthy_after_s
        while True:
            await asyncio.sleep(after)
            if self.daemon.loop_lag < LAG_UNHEALTHY_S:
                self.history.mark("healthy")
                log.info("healthy for %.0f s; the crash-loop record is cleared", after)
                return

    def end(self, code: int) -> None:
        self.history.mark("stopped" if code == 0 else "failed")
        if self.tail is not None:
            logging.getLogger().removeHandler(self.tail)
            self.tail = None

    # waiting after a fatal error -------------------------------------------------------------------
    async def wait_after_fatal(self, exc: FatalError) -> bool:
        """Report once, put outputs in their safe state, then wait for a fix; True to try again."""
        d = self.daemon
        runner = d.runner
        assert runner is not None and d.capset is not None
        await d.capset.stop_all()
        d.caps.pop(SAFE_KEY, None)
        runner.set_capabilities([])
        await self._notify_once("EdgeClaw node cannot connect", str(exc))
        self.waiting = True
        try:
            while not d.stopping:
                delay = retry_delay(self._fatal_attempt)
                runner.status.waiting_for = (
                    f"{exc} (exit status {exc.exit_code} would not help); trying again when the config or "
                    f"token file changes, on `systemctl reload edgeclaw`, or in {delay:.0f} s"
                )
                runner.status_file.write(runner.status, force=True)
                d.notifier.status(runner.status.line())
                why = await wait_for_change(watched_files(d.config_path, d.config), self.wake, delay)
                if d.stopping:
                    return False
                self._fatal_attempt = self._fatal_attempt + 1 if why == "backoff elapsed" else 0
                try:
                    new = load_config(d.config_path)
                except ConfigError as err:
                    log.error("still waiting: %s", err)
                    continue
                log.info("trying again (%s)", why)
                d.config = new
                runner.update_config(new)
                runner.status.waiting_for = None
                await self.start_capabilities()
                return True
            return False
        finally:
            self.waiting = False
            runner.status.waiting_for = None

    async def _notify_once(self, title: str, body: str) -> None:
        if body in self._notified:
            return
        self._notified.add(body)
        system = self.daemon.config.capabilities.get("system")
        await notify_owner(title, body, list(getattr(system, "notify_hook", []) or []))
