"""NodeRunner: the node's side of the gateway. It owns the connection lifecycle and offers
NodeServices to capabilities; its parts live beside it, one job each:

- edgeclaw.node.connection: the connection state machine (connect, pairing wait, serve, backoff)
- edgeclaw.node.credentials: which secret to connect with, the device token, state-directory writes
- edgeclaw.node.surface: plugin tools, skills, surface approval and withheld commands
- edgeclaw.node.runstatus: status.json / STATUS=, the snapshot for telemetry, health() for the watchdog
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.base import Capability, InvokeError, NotConnected
from edgeclaw.config import Config
from edgeclaw.node.connection import (
    EX_DATAERR,
    EX_NOPERM,
    EX_PROTOCOL,
    FAST_PROBE_INTERVAL_S,
    FAST_PROBE_WINDOW_S,
    ConnectionMixin,
    FatalError,
)
from edgeclaw.node.credentials import STATE_RETRY_S, STATE_WRITE_FAILED, CredentialsMixin
from edgeclaw.node.dispatch import Dispatcher
from edgeclaw.node.runstatus import INVOKE_STATUS_INTERVAL_S, StatusMixin
from edgeclaw.node.session import RequestFailed, Session
from edgeclaw.node.setupcode import parse_setup_code
from edgeclaw.node.status import NodeStatus, StatusFile
from edgeclaw.node.surface import SURFACE_RECHECK_S, SurfaceMixin
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.logsetup import REDACTOR
from edgeclaw.platform.state import StateDir
from edgeclaw.platform.supervisor import Restart, Supervisor
from edgeclaw.protocol.frames import Event
from edgeclaw.protocol.handshake import PROTOCOL_VERSION, is_pairing_changed
from edgeclaw.protocol.identity import DeviceIdentity

log = logging.getLogger("edgeclaw.runner")

__all__ = [
    "EX_DATAERR",
    "EX_NOPERM",
    "EX_PROTOCOL",
    "FAST_PROBE_INTERVAL_S",
    "FAST_PROBE_WINDOW_S",
    "INVOKE_STATUS_INTERVAL_S",
    "STATE_RETRY_S",
    "STATE_WRITE_FAILED",
    "SURFACE_RECHECK_S",
    "FatalError",
    "NodeRunner",
    "read_model_identifier",
]


def read_model_identifier() -> str | None:
    try:
        raw = Path("/proc/device-tree/model").read_bytes()
    except OSError:
        return None
    text = raw.rstrip(b"\x00").decode("utf-8", "replace").strip()
    return text or None


class NodeRunner(ConnectionMixin, CredentialsMixin, SurfaceMixin, StatusMixin):
    """Owns the connection lifecycle and offers NodeServices to capabilities."""

    def __init__(
        self,
        config: Config,
        identity: DeviceIdentity,
        state: StateDir,
        *,
        bus: EventBus | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.state = state
        self.bus = bus or EventBus()
        # the daemon passes a branch of its tree; alone (tests, `edgeclaw pair`) the runner has its own
        self.supervisor = supervisor or Supervisor("node", bus=self.bus)
        self.node_id = identity.device_id
        self.display_name = config.node.display_name or identity.device_id[:12]
        self.capabilities: list[Capability] = []
        self.session: Session | None = None
        self.protocol = PROTOCOL_VERSION
        self.status = NodeStatus(
            device_id=self.node_id, display_name=self.display_name, gateway_url=config.gateway.url
        )
        self.status_file = StatusFile(config.runtime_dir)
        self.dispatcher = Dispatcher(
            node_id=self.node_id,
            bus=self.bus,
            send_result=self._send_invoke_result,
            max_payload=self._max_payload,
            max_concurrent=config.node.max_concurrent_invokes,
            queue=config.node.invoke_queue,
        )
        self.connected_event = asyncio.Event()
        self.approved_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._session_tasks: set[asyncio.Task[Any]] = set()  # short, once per session: not children
        self._fast_probe_until = 0.0
        self._invoke_status_stale = False
        self._invoke_status_timer: asyncio.TimerHandle | None = None
        self._attempt = 0
        self._logged_request_ids: set[str] = set()
        self._bootstrap_token: str | None = None
        self.setup_code_used = False  # the gateway took the setup code and issued a device token
        self._unsaved_token: str | None = None  # issued by the gateway, not yet on disk (state dir full/RO)
        self._state_problems: dict[str, str] = {}
        self._token_override: str | None = config.gateway_token
        self._instance_id = state.instance_id()
        self._model = read_model_identifier()
        self._published_tool_commands: set[str] = set()
        self._last_withheld_logged: list[str] | None = None
        self._reconnect_reason: str | None = None
        self.next_attempt_at: float | None = None
        self.pairing = state.load_pairing()
        if config.setup_code:
            try:
                code = parse_setup_code(config.setup_code)
                self._bootstrap_token = code.bootstrap_token
                REDACTOR.add(code.bootstrap_token)
            except ValueError as exc:
                log.error("ignoring the setup code in %s: %s", config.gateway.setup_code_file, exc)
        REDACTOR.add(config.gateway_token)
        self.bus.subscribe(self._track_invokes)

    # NodeServices ---------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.state.path

    @property
    def simulated(self) -> bool:
        return self.config.node.hardware == "simulated"

    def is_connected(self) -> bool:
        return self.session is not None and self.session.hello is not None

    async def request(self, method: str, params: Any, *, timeout: float = 10.0) -> Any:
        """A node-role request; PAIRING_CHANGED right after a (re)connect is retried, as the gateway asks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.2
        while True:
            session = self.session
            if session is None or session.hello is None:
                raise NotConnected(f"not connected to the gateway ({method})")
            try:
                return await session.request(method, params, timeout=max(0.1, deadline - loop.time()))
            except RequestFailed as exc:
                if exc.error.retryable and is_pairing_changed(exc.error) and loop.time() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise InvokeError(exc.error.detail_code or exc.error.code, exc.error.message) from None
            except (TimeoutError, ConnectionError) as exc:
                raise NotConnected(f"{method}: {exc or 'timed out'}") from None

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        params = {"event": event, "payloadJSON": json.dumps(payload, separators=(",", ":"))}
        return await self.request("node.event", params, timeout=timeout)

    async def invoke_local(
        self, command: str, params: dict[str, Any], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        return await self.dispatcher.invoke_local(command, params, timeout=timeout)

    def request_reconnect(self, reason: str) -> None:
        self._reconnect_reason = reason
        session = self.session
        if session is not None:
            self.supervisor.spawn(session.close(1012, reason), "reconnect-close")
        self._wake.set()

    # lifecycle ------------------------------------------------------------------------------------
    def set_capabilities(self, capabilities: list[Capability]) -> None:
        self.capabilities = capabilities
        self.dispatcher.set_capabilities(capabilities)
        self.status.commands = self.declared_commands()

    def update_config(self, config: Config) -> list[str]:
        """Adopt a reloaded config; returns what the gateway learns only from a new connect (display
        name, shared token), for the caller to reconnect on."""
        changes: list[str] = []
        name = config.node.display_name or self.identity.device_id[:12]
        if name != self.display_name:
            self.display_name = self.status.display_name = name
            changes.append("display name changed")
        if config.gateway_token != self._token_override:
            REDACTOR.add(config.gateway_token)
            self._token_override = config.gateway_token
            changes.append("gateway token changed")
        self.config = config
        return changes

    def declared_commands(self) -> list[str]:
        return self.dispatcher.commands

    def declared_caps(self) -> list[str]:
        caps: set[str] = set()
        for cap in self.capabilities:
            caps.update(cap.caps())
        return sorted(caps)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop: no new invokes, let running ones finish and deliver, then close the session cleanly."""
        self.status.set_connection("stopping")
        self._publish_status(force=True)
        cut = await self.dispatcher.drain(drain_timeout)
        if cut:
            log.warning("%d invoke(s) did not finish within %.0f s of stopping", cut, drain_timeout)
        self.stop()
        session = self.session
        if session is not None:
            await session.close(1000, "node stopping")
        self.status.set_connection("stopped")
        self.status_file.remove()

    # one connection -------------------------------------------------------------------------------

    # while connected ------------------------------------------------------------------------------
    def _spawn_for_session(self, coro: Any, name: str) -> None:
        task = self.supervisor.spawn(coro, name)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    def _start_session_tasks(self) -> None:
        self._spawn_for_session(self._after_connect(), "after-connect")
        self.supervisor.start_child("host-stats", self._stats_loop, restart=Restart.TRANSIENT)

    async def _cancel_session_tasks(self) -> None:
        await self.supervisor.stop_child("host-stats", timeout=2.0)
        tasks = list(self._session_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    def _on_event(self, event: Event) -> None:
        name = event.event
        if name == "node.invoke.request":
            self.dispatcher.on_invoke_request(event.payload)
        elif name == "node.invoke.cancel":
            self.dispatcher.on_invoke_cancel(event.payload)
        elif name == "node.pair.resolved":
            payload = event.payload if isinstance(event.payload, dict) else {}
            if payload.get("decision") == "approved":
                self._set_surface_approved()
                self._spawn_for_session(self._after_approval(), "after-approval")
            else:
                log.warning("the gateway %s the node's command surface", payload.get("decision", "resolved"))
        elif name == "tick":
            self.status.ticks += 1
            self.status.last_tick_at = time.time()
        else:
            log.debug("ignoring gateway event %s", name)

    async def _send_invoke_result(self, params: dict[str, Any]) -> None:
        try:
            await self.request("node.invoke.result", params, timeout=15)
        except InvokeError as exc:
            log.warning("gateway refused the result of %s: %s", params.get("id"), exc)
        except NotConnected:
            log.warning("result of invoke %s not delivered: not connected", params.get("id"))

    def _max_payload(self) -> int:
        session = self.session
        if session is not None and session.hello is not None:
            return session.hello.max_payload
        return 25 * 1024 * 1024

    # status ---------------------------------------------------------------------------------------
