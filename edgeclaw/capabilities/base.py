"""The seam between the node core and a capability: what a capability declares and what it may use.

Capabilities never touch the WebSocket; they get an InvokeContext per call and NodeServices for events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgeclaw.config import Config
    from edgeclaw.platform.events import EventBus
    from edgeclaw.platform.supervisor import Supervisor


class InvokeError(Exception):
    """A coded failure the operator sees as `CODE: message`; the node keeps running."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotConnected(Exception):
    """The gateway is not reachable right now; callers that must not lose data spool instead."""


@dataclass(frozen=True)
class CapabilityManifest:
    """One source for what the node advertises, what `doctor` checks and what the unit must allow."""

    name: str
    caps: tuple[str, ...]
    commands: tuple[str, ...]
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    needs_gateway_allowlist: tuple[str, ...] = ()


@dataclass
class InvokeContext:
    invoke_id: str
    command: str
    params: dict[str, Any]
    deadline: float  # event-loop time by which the gateway stops waiting
    timeout_ms: int | None
    session_key: str | None = None
    idempotency_key: str | None = None
    max_payload_bytes: int = 25 * 1024 * 1024 - 64 * 1024
    extra: dict[str, Any] = field(default_factory=dict)
    # run (in order, in the background) once the answer has been sent: events about the invoke must not
    # hold its answer back past the gateway's deadline
    after_reply: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


Handler = Callable[[InvokeContext], Awaitable[dict[str, Any]]]


class NodeServices(Protocol):
    """What the core offers to capabilities."""

    node_id: str
    display_name: str
    config: Config
    bus: EventBus
    # long-lived loops of a capability run as children of a nested supervisor made from this one
    supervisor: Supervisor

    @property
    def state_dir(self) -> Path: ...

    @property
    def simulated(self) -> bool: ...

    def is_connected(self) -> bool: ...

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        """`node.event` to the gateway; raises NotConnected when there is no live session."""
        ...

    async def request(self, method: str, params: Any, *, timeout: float = 10.0) -> Any:
        """Any node-role gateway method; retries PAIRING_CHANGED; raises NotConnected or InvokeError."""
        ...

    def request_reconnect(self, reason: str) -> None:
        """Close with 1012 and reconnect, e.g. after the declared command surface changed."""
        ...

    async def invoke_local(
        self, command: str, params: dict[str, Any], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Run one of the node's own declared commands as the dispatcher would for the gateway (same
        limits, deadline, coded InvokeError on any failure): triggers use the node's commands, never a
        capability's internals."""
        ...

    def node_snapshot(self) -> dict[str, Any]:
        """A copy of the node's own state and counters (connection, pairing, reconnects, invokes,
        capabilities) for device.status and telemetry, so nobody reads the runner's internals."""
        ...


class Capability:
    """Base class: subclasses fill `manifest`, `handlers()`, and override the hooks they need."""

    manifest: CapabilityManifest
    max_concurrency: int = 4
    queue_limit: int = 16
    busy_code: str = "NODE_BUSY"

    def __init__(self, config: Any, services: NodeServices) -> None:
        self.config = config
        self.services = services

    def handlers(self) -> dict[str, Handler]:
        """The commands this capability declares right now (may depend on config)."""
        raise NotImplementedError

    def caps(self) -> list[str]:
        return list(self.manifest.caps)

    def plugin_tools(self) -> list[dict[str, Any]]:
        """Agent tools for `node.pluginTools.update` (republished after every hello-ok)."""
        return []

    def skills(self) -> list[dict[str, Any]]:
        """Skills for `node.skills.update`."""
        return []

    async def start(self) -> None:
        """Open backends; must not wait for the gateway."""

    async def stop(self) -> None:
        """Put hardware in its safe state and release it."""

    async def on_session_ready(self) -> None:
        """Called after every hello-ok (the surface may still be pending approval)."""

    async def on_disconnected(self) -> None:
        """Called when the session ends, before any reconnect."""

    async def reload(self, new_config: Any) -> None:
        """Apply a new config section in place; raise ValueError to keep the old one."""
        self.config = new_config

    def status_report(self) -> dict[str, Any] | None:
        """What this capability adds to `edgeclaw status` and telemetry (None: nothing)."""
        return None


def parse_params(
    ctx: InvokeContext, schema: dict[str, tuple[type | tuple[type, ...], bool]]
) -> dict[str, Any]:
    """Minimal param checking shared by handlers: {name: (types, required)} → INVALID_REQUEST on mismatch."""
    out: dict[str, Any] = {}
    for name, (types, required) in schema.items():
        if name not in ctx.params or ctx.params[name] is None:
            if required:
                raise InvokeError("INVALID_REQUEST", f"missing required parameter {name!r}")
            continue
        value = ctx.params[name]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise InvokeError("INVALID_REQUEST", f"parameter {name!r} has the wrong type (bool)")
        if not isinstance(value, types):
            raise InvokeError(
                "INVALID_REQUEST", f"parameter {name!r} has the wrong type ({type(value).__name__})"
            )
        out[name] = value
    return out
