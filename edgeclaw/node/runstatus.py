"""What the runner tells the outside: status.json and STATUS= (rate-limited for invoke counts), the
snapshot for device.status and telemetry, and health() for the systemd watchdog."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from edgeclaw.capabilities.base import Capability
from edgeclaw.node.dispatch import Dispatcher
from edgeclaw.node.session import Session
from edgeclaw.node.status import NodeStatus, StatusFile
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.supervisor import Supervisor

INVOKE_STATUS_INTERVAL_S = 2.0  # invoke counts reach STATUS= and status.json at most this often


class StatusMixin:
    """Part of NodeRunner: status reporting and health."""

    status: NodeStatus
    status_file: StatusFile
    bus: EventBus
    dispatcher: Dispatcher
    capabilities: list[Capability]
    session: Session | None
    supervisor: Supervisor
    next_attempt_at: float | None
    _invoke_status_stale: bool
    _invoke_status_timer: asyncio.TimerHandle | None

    def declared_commands(self) -> list[str]:
        return self.dispatcher.commands

    def node_snapshot(self) -> dict[str, Any]:
        status = self.status
        return {
            "connection": status.connection,
            "pairing": status.pairing,
            "reconnects": status.reconnects,
            "invokes": self.dispatcher.invoke_count,
            "invokes_in_flight": self.dispatcher.in_flight,
            "capabilities": sorted(cap.manifest.name for cap in self.capabilities),
            "commands": self.declared_commands(),
            "withheld_commands": list(status.withheld_commands),
            "supervisor_restarts": self.supervisor.total_restarts(),
            "capability_reports": self._capability_reports(),
        }

    def _capability_reports(self) -> dict[str, Any]:
        """Each capability's own status section (e.g. `triggers`), for status.json and telemetry."""
        out: dict[str, Any] = {}
        for cap in self.capabilities:
            try:
                report = cap.status_report()
            except Exception as exc:
                report = {"error": f"{type(exc).__name__}: {exc}"}
            if report is not None:
                out[cap.manifest.name] = report
        return out

    # lifecycle ------------------------------------------------------------------------------------
    def _track_invokes(self, name: str, fields: dict[str, Any]) -> None:
        if name in (events.CHILD_DOWN, events.CHILD_RESTART):
            self._refresh_tasks()
            return
        if name == events.INVOKE_STOP or name == events.TRIGGER:
            if name == events.INVOKE_STOP:  # a trigger's news is not an invoke: only the refresh is shared
                self.status.invokes = self.dispatcher.invoke_count
                self.status.last_invoke_at = time.time()
            self._invoke_status_stale = True
            if self._invoke_status_timer is None:
                self._flush_invoke_status()

    def _flush_invoke_status(self) -> None:
        """The first invoke after a quiet spell shows at once, a busy stretch at most every
        INVOKE_STATUS_INTERVAL_S, and its last count always: not one STATUS= datagram to PID 1 (and one
        status.json rewrite) per invoke."""
        self._invoke_status_timer = None
        if self._invoke_status_stale:
            self._invoke_status_stale = False
            self._publish_status(force=True)
            self._invoke_status_timer = asyncio.get_running_loop().call_later(
                INVOKE_STATUS_INTERVAL_S, self._flush_invoke_status
            )

    def _refresh_tasks(self) -> None:
        """A supervised task went down or came back: status.json and STATUS= say so at once."""
        root = self.supervisor.root
        self.status.tasks = root.snapshot()
        self.status.task_restarts = root.total_restarts()
        self._publish_status(force=True)

    def _publish_status(self, *, force: bool = False) -> None:
        self.status.capabilities = self._capability_reports()
        self.status_file.write(self.status, force=force)
        self.bus.emit(events.STATE, state=self.status.connection, detail=self.status.line())

    def health(self, now: float, *, grace: float = 5.0) -> str | None:
        """None when the connection state machine is making progress, else why not (for the watchdog)."""
        session = self.session
        if session is not None and session.hello is not None:
            limit = 2 * session.hello.tick_interval_ms / 1000 + grace
            idle = now - session.last_inbound
            if idle > limit:
                return f"no inbound traffic for {idle:.0f} s while connected"
        elif self.next_attempt_at is not None and now > self.next_attempt_at + grace + 5:
            return f"reconnect attempt overdue by {now - self.next_attempt_at:.0f} s"
        overdue = self.dispatcher.oldest_overdue(now, grace=30.0)
        if overdue is not None:
            return f"invoke {overdue} is stuck past its deadline"
        return self.supervisor.health()  # a supervised task (here or in a capability) is down
