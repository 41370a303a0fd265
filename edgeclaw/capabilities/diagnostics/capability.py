"""The diagnostics capability: handlers, the identify child under the capability's supervisor, tools."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.base import Capability, Handler, InvokeContext, InvokeError, NodeServices
from edgeclaw.capabilities.diagnostics import MANIFEST, Config
from edgeclaw.capabilities.diagnostics import doctor as doctor_mod
from edgeclaw.capabilities.diagnostics import logs as logs_mod
from edgeclaw.capabilities.diagnostics.identify import MIN_S, Identifier, IdentifyError
from edgeclaw.capabilities.diagnostics.tools import plugin_tools
from edgeclaw.platform import events
from edgeclaw.platform.logsetup import REDACTOR
from edgeclaw.platform.redact import Redactor
from edgeclaw.platform.supervisor import Restart, Supervisor

log = logging.getLogger("edgeclaw.diagnostics")

DEADLINE_MARGIN_S = 0.5  # the blink ends (restored) this long before the gateway stops waiting


class DiagnosticsCapability(Capability):
    manifest = MANIFEST
    max_concurrency = 2  # a doctor run and a logs read at once; identify is one at a time anyway
    queue_limit = 4

    def __init__(self, config: Config, services: NodeServices) -> None:
        super().__init__(config, services)
        self.config: Config = config
        self.sup: Supervisor | None = None
        self.identifier = self._make_identifier(config)
        self._unsubscribe: Any = None

    def _make_identifier(self, config: Config) -> Identifier:
        return Identifier(
            led_setting=config.identify_led,
            leds_dir=Path(config.leds_dir),
            pin=config.identify_pin,
            local_invoke=getattr(self.services, "invoke_local", None),
            state_dir=self.services.state_dir,
        )

    # surface -------------------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Handler]:
        if not self.config.enabled:
            return {}
        return {
            "edgeclaw.logs": self._logs,
            "edgeclaw.doctor": self._doctor,
            "device.identify": self._identify,
        }

    def plugin_tools(self) -> list[dict[str, Any]]:
        if not self.config.enabled:
            return []
        try:
            self.identifier.target()
            can_identify = True
        except IdentifyError:
            can_identify = False  # declared (it answers why), but not offered to the agent
        return plugin_tools(can_identify)

    # lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.config.enabled:
            return
        self.sup = self.services.supervisor.child_supervisor("diagnostics")
        self._unsubscribe = self.services.bus.subscribe(self._on_bus)
        self.identifier.stop_now.clear()
        done = self.identifier.recover()
        if done:
            log.warning("identify: %s", done)

    async def stop(self) -> None:
        self.identifier.stop_now.set()  # a blink ends now, restoring the LED, before outputs go safe
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.sup is not None:
            await self.sup.stop_child("identify", timeout=3.0)
            await self.sup.stop(timeout=2.0)
            self.sup = None

    async def reload(self, new_config: Any) -> None:
        if self.sup is not None and self.sup.is_active("identify"):
            raise ValueError("an identify blink is running; reload again when it is over")
        self.config = new_config
        self.identifier = self._make_identifier(new_config)

    def _on_bus(self, name: str, fields: dict[str, Any]) -> None:
        # the node drains invokes before stopping capabilities: end a blink at once, not after the drain
        if name == events.STATE and fields.get("state") == "stopping":
            self.identifier.stop_now.set()

    # commands ------------------------------------------------------------------------------------------
    def redactor(self) -> Redactor:
        """Every secret the node knows now: registered ones (gateway, device and bootstrap tokens) plus
        the config's token and setup code; the device id stays readable (it is public)."""
        cfg = self.services.config
        known = [*REDACTOR.known(), getattr(cfg, "gateway_token", None), getattr(cfg, "setup_code", None)]
        return Redactor(known, public=[self.services.node_id])

    async def _logs(self, ctx: InvokeContext) -> dict[str, Any]:
        unit = logs_mod.journal_unit(self.config.journal_unit)
        timeout = max(0.5, min(self.config.journal_timeout_s, ctx.remaining() - 1.0))
        return await logs_mod.logs(ctx.params, self.redactor(), unit=unit, timeout=timeout)

    async def _doctor(self, ctx: InvokeContext) -> dict[str, Any]:
        if ctx.params:
            raise InvokeError("INVALID_REQUEST", "edgeclaw.doctor takes no parameters")
        path = getattr(self.services.config, "path", None)
        if not path or not os.path.exists(path):
            raise InvokeError("DOCTOR_FAILED", "the node runs without a config file to check")
        timeout = min(self.config.doctor_timeout_s, ctx.remaining() - 1.0)
        if timeout < 5:
            raise InvokeError("TIMEOUT", "too little time left in the invoke for the doctor (needs 5 s)")
        return await doctor_mod.run_doctor(path, timeout, self.redactor())

    async def _identify(self, ctx: InvokeContext) -> dict[str, Any]:
        unknown = set(ctx.params) - {"seconds"}
        if unknown:
            raise InvokeError("INVALID_REQUEST", f"unknown parameter(s) {', '.join(sorted(unknown))}")
        seconds = ctx.params.get("seconds", self.config.identify_default_s)
        top = self.config.identify_max_s
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not MIN_S <= seconds <= top:
            raise InvokeError("INVALID_REQUEST", f"'seconds' must be a number from {MIN_S} to {top}")
        assert self.sup is not None
        if self.sup.is_active("identify"):
            raise InvokeError("IDENTIFY_BUSY", "the board is already blinking; try again when it stops")
        try:
            target = self.identifier.target()
        except IdentifyError as exc:
            raise InvokeError("IDENTIFY_UNAVAILABLE", str(exc)) from None
        budget = min(float(seconds), ctx.remaining() - DEADLINE_MARGIN_S)
        if budget <= 0:
            raise InvokeError("TIMEOUT", "no time left in the invoke to blink")
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        identifier = self.identifier

        end = loop.time() + budget

        async def job() -> None:
            """Supervised: a crash is logged, counted and restarted, and the restart blinks on only
            until the original end; cancelled (cancel, stop), the restore has run when it ends."""
            try:
                result = await identifier.blink(max(0.0, end - loop.time()))
            except IdentifyError as exc:
                if not outcome.done():
                    outcome.set_exception(InvokeError("IDENTIFY_FAILED", str(exc)))
                return
            except asyncio.CancelledError:
                if not outcome.done():
                    outcome.set_exception(InvokeError("UNAVAILABLE", "the blink was stopped (node stopping)"))
                raise
            if not outcome.done():
                outcome.set_result(result)

        log.info("identify: blinking %s for %.1f s", target, budget)
        self.sup.start_child("identify", job, restart=Restart.TRANSIENT, critical=False)
        try:
            result = await asyncio.wait_for(asyncio.shield(outcome), budget + 5.0)
        except asyncio.CancelledError:
            # node.invoke.cancel or the dispatcher's deadline: stop the blink and wait for the restore
            if self.sup is not None:
                await self.sup.stop_child("identify", timeout=3.0)
            raise
        except TimeoutError:
            if self.sup is not None:
                await self.sup.stop_child("identify", timeout=3.0)
            raise InvokeError("IDENTIFY_FAILED", "the blink did not finish; it was stopped") from None
        cut = None
        if identifier.stop_now.is_set():
            cut = "node stopping"
        elif budget < seconds:
            cut = "invoke deadline"
        return {"target": target, "seconds": seconds, **result, "restored": True, "cut_short": cut}
