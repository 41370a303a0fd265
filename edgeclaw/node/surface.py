"""Surface and plugin-tool publishing: after each hello-ok the runner publishes its agent tools and
skills, learns whether its command surface is approved and which commands the gateway withholds, and
sends host stats while connected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import Capability, InvokeError, NotConnected
from edgeclaw.config import Config
from edgeclaw.node.hoststats import host_stats
from edgeclaw.node.status import NodeStatus
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.state import PairingState, StateDir
from edgeclaw.protocol.frames import GatewayError
from edgeclaw.protocol.handshake import surface_request_id

log = logging.getLogger("edgeclaw.runner")

SURFACE_RECHECK_S = 30.0


class SurfaceMixin:
    """Part of NodeRunner: what the gateway lets the agent use of this node."""

    config: Config
    state: StateDir
    status: NodeStatus
    bus: EventBus
    pairing: PairingState
    capabilities: list[Capability]
    approved_event: asyncio.Event
    _published_tool_commands: set[str]
    _last_withheld_logged: list[str] | None

    if TYPE_CHECKING:

        def is_connected(self) -> bool: ...

        async def request(self, method: str, params: Any, *, timeout: float = 10.0) -> Any: ...

        async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any: ...

        def _publish_status(self, *, force: bool = False) -> None: ...

        def _save_pairing(self) -> None: ...

    async def _after_connect(self) -> None:
        known_approved = self.status.pairing == "approved"
        await self.publish_tools()
        for cap in self.capabilities:
            try:
                await cap.on_session_ready()
            except Exception:
                log.exception("%s: on_session_ready failed", cap.manifest.name)
        await self._check_surface()
        if not known_approved and self.status.pairing == "approved":
            # An empty echo means "pending" or "withheld"; only now (approved) can publish_tools tell which.
            await self.publish_tools()

    async def _check_surface(self) -> None:
        """Learn whether the command surface is approved; the gateway names the pending request only in a
        message, so we ask with a harmless node-role method and read the answer."""
        while self.is_connected():
            try:
                await self.request(
                    "node.runnerInventory.update",
                    {"protocolFeatures": []},
                    timeout=10,
                )
            except InvokeError as exc:
                rid = surface_request_id(GatewayError(exc.code, exc.message))
                if rid is None:
                    log.debug("surface probe: %s", exc)
                    return
                self._set_surface_pending(rid)
                await asyncio.sleep(SURFACE_RECHECK_S)
                continue
            except NotConnected:
                return
            self._set_surface_approved()
            return

    def _set_surface_pending(self, rid: str) -> None:
        if self.status.pairing != "surface-pending" or self.status.surface_request_id != rid:
            log.warning(
                "connected; the node's commands await approval: run `openclaw nodes approve %s` on the gateway",
                rid,
            )
            self.bus.emit(events.PAIRING, stage="surface-pending", request_id=rid)
        self.status.pairing = "surface-pending"
        self.status.surface_request_id = rid
        self.pairing.surface_approved = False
        self.pairing.surface_request_id = rid
        self.approved_event.clear()
        self._save_pairing()
        self._publish_status(force=True)

    def _set_surface_approved(self) -> None:
        was = self.status.pairing
        self.status.pairing = "approved"
        self.status.surface_request_id = None
        self.pairing.surface_approved = True
        self.pairing.surface_request_id = None
        self._save_pairing()
        self.approved_event.set()
        if was != "approved":
            log.info("the node's command surface is approved")
            self.bus.emit(events.PAIRING, stage="approved", request_id=None)
        self._publish_status(force=True)

    async def publish_tools(self) -> None:
        """Publish plugin tools and skills for this connection; a tool the gateway drops reveals a
        command it withholds (not in gateway.nodes.commands.allow)."""
        tools: list[dict[str, Any]] = []
        skills: list[dict[str, Any]] = []
        for cap in self.capabilities:
            try:
                tools.extend(cap.plugin_tools())
                skills.extend(cap.skills())
            except Exception:
                log.exception("%s: building tools failed", cap.manifest.name)
        try:
            if skills:
                await self.request("node.skills.update", {"skills": skills}, timeout=10)
            answer = await self.request("node.pluginTools.update", {"tools": tools}, timeout=10)
        except (InvokeError, NotConnected) as exc:
            log.debug("publishing tools failed: %s", exc)
            return
        self._published_tool_commands = {t["command"] for t in tools if "command" in t}
        echoed = answer.get("tools") if isinstance(answer, dict) else None
        if tools and isinstance(echoed, list) and echoed:
            kept = {t.get("command") for t in echoed if isinstance(t, dict)}
            self._report_withheld(sorted(self._published_tool_commands - kept))
        elif tools and isinstance(echoed, list) and self.status.pairing == "approved":
            self._report_withheld(sorted(self._published_tool_commands))

    def _report_withheld(self, withheld: list[str]) -> None:
        changed = withheld != self._last_withheld_logged
        self._last_withheld_logged = withheld
        self.status.withheld_commands = withheld
        self.pairing.withheld_commands = withheld
        self._save_pairing()
        if withheld and changed:  # once per distinct set, not on every reconnect
            allow = json.dumps(sorted(set(withheld)))
            log.error(
                "the gateway withholds %s (not in its command allowlist); on the gateway run: "
                "openclaw config set gateway.nodes.commands.allow '%s' (merge with any existing entries), "
                "then approve the node again",
                ", ".join(withheld),
                allow,
            )
        self._publish_status(force=True)

    async def _stats_loop(self) -> None:
        interval = self.config.node.stats_interval_s
        while self.is_connected():
            try:
                await self.send_event("node.host.stats", host_stats(str(self.state.path)), timeout=10)
            except (InvokeError, NotConnected) as exc:
                log.debug("node.host.stats not sent: %s", exc)
            await asyncio.sleep(interval)

    async def _after_approval(self) -> None:
        await self.publish_tools()
        with contextlib.suppress(InvokeError, NotConnected):
            await self.send_event("node.host.stats", host_stats(str(self.state.path)))
