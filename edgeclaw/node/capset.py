"""The daemon's set of running capabilities, changed all or nothing.

A reload used to apply capability by capability: a failure half-way left the earlier ones on the new
config and the later ones on the old (a tightened shell policy silently not applied), and two overlapping
reloads could each start a GPIO capability, the orphan keeping its pins. Here every change is a step with
its undo; a failed step undoes itself and every earlier step, newest first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgeclaw.capabilities.base import Capability, NodeServices

log = logging.getLogger("edgeclaw.daemon")

STOP_TIMEOUT_S = 10.0  # one capability's stop(); a hung backend must not hold the whole stop


class ApplyError(Exception):
    """A capability change failed; everything was rolled back (the message says what, and any undo that
    failed too)."""


@dataclass
class _Step:
    what: str
    do: Callable[[], Awaitable[None]]
    undo: Callable[[], Awaitable[None]]


async def stop_safely(cap: Capability, what: str) -> bool:
    """stop() bounded in time; a failure is logged, not raised: the other capabilities still stop."""
    try:
        await asyncio.wait_for(cap.stop(), STOP_TIMEOUT_S)
    except Exception as exc:
        log.error("%s: stop failed: %s", what, exc)
        return False
    return True


class CapabilitySet:
    def __init__(
        self,
        modules: dict[str, ModuleType],
        services: NodeServices,
        *,
        serve: bool = True,
        on_start_failed: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.modules = modules
        self.services = services
        # at start, a capability that fails is handed here (the daemon retries it with backoff)
        self.on_start_failed = on_start_failed
        self.serve = serve  # False for `edgeclaw pair`: declare the commands, run none (see paironly)
        self.caps: dict[str, Capability] = {}

    def _create(self, module: ModuleType, section: Any) -> Capability:
        cap: Capability = module.create(section, self.services)
        if not self.serve:
            from edgeclaw.node.paironly import DeclareOnly

            cap = DeclareOnly(cap)
        return cap

    async def start(self, capabilities: dict[str, Any]) -> None:
        """At start: a capability that fails to start is left out for now (said so) and handed to
        `on_start_failed`; the node runs without it meanwhile."""
        for key in self.modules:
            section = capabilities.get(key)
            if not getattr(section, "enabled", False):
                continue
            try:
                await self.start_one(key, section)
            except Exception as exc:
                if self.on_start_failed is None:
                    log.error("capability %s failed to start and is left out: %s", key, exc)
                else:
                    self.on_start_failed(key, exc)

    async def start_one(self, key: str, section: Any) -> None:
        """Create and start one capability; one that fails half-way is stopped again, not kept."""
        cap = self._create(self.modules[key], section)
        try:
            await cap.start()
        except Exception:
            await stop_safely(cap, f"{key} (after a failed start)")
            raise
        self.caps[key] = cap

    async def apply(self, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """Move every capability from `old` to `new` config sections, all or nothing; returns what changed.
        Raises ApplyError after rolling back."""
        steps = [self._plan(key, old.get(key), new.get(key)) for key in self.modules]
        done: list[_Step] = []
        for step in (s for s in steps if s is not None):
            done.append(step)  # a step that fails half-way is undone too
            try:
                await step.do()
            except Exception as exc:
                problems = await self._rollback(done)
                why = f"{step.what}: {type(exc).__name__}: {exc}"
                if problems:
                    why += f" (rollback incomplete: {'; '.join(problems)})"
                raise ApplyError(why) from exc
        return [s.what for s in done]

    async def stop_all(self) -> None:
        """Every capability to its safe state and released, in reverse start order."""
        for key in reversed(list(self.caps)):
            cap = self.caps.pop(key, None)  # another stop may have taken it meanwhile
            if cap is not None:
                await stop_safely(cap, key)

    def _plan(self, key: str, old: Any, new: Any) -> _Step | None:
        enabled = bool(getattr(new, "enabled", False))
        current = self.caps.get(key)
        module = self.modules[key]
        if current is not None and not enabled:

            async def disable() -> None:
                del self.caps[key]
                await stop_safely(current, key)  # logged if it fails; the capability is gone either way

            async def reenable() -> None:
                cap = self._create(module, old)
                await cap.start()
                self.caps[key] = cap

            return _Step(f"{key} disabled", disable, reenable)
        if current is not None:
            if new == old:
                return None

            async def reload() -> None:
                await current.reload(new)

            async def restore() -> None:
                await current.reload(old)

            return _Step(f"{key} reloaded", reload, restore)
        if enabled and getattr(old, "enabled", False):
            return None  # its start failed and is being retried (with the section in force then)
        if enabled:
            box: list[Capability] = []

            async def enable() -> None:
                cap = self._create(module, new)
                box.append(cap)
                await cap.start()
                self.caps[key] = cap

            async def disable_again() -> None:
                self.caps.pop(key, None)
                if box:
                    await stop_safely(box[0], key)

            return _Step(f"{key} enabled", enable, disable_again)
        return None

    async def _rollback(self, done: list[_Step]) -> list[str]:
        problems: list[str] = []
        for step in reversed(done):
            try:
                await step.undo()
            except Exception as exc:
                log.error("rolling back %s failed: %s", step.what, exc)
                problems.append(f"{step.what}: {exc}")
        return problems
