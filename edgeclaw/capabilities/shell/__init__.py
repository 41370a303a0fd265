"""Shell capability: system.run, system.run.prepare and the node's exec approvals.

Safe by default: with no approvals document nothing runs unless an operator allowlists it or approves
the run through the gateway (security allowlist, ask on-miss, askFallback deny).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler, InvokeContext, NodeServices

if TYPE_CHECKING:
    from edgeclaw.capabilities.shell.run import ShellService

CONFIG_KEY = "shell"
APPROVALS_FILE = "exec-approvals.json"  # approvals.FILE_NAME, without importing the policy code
log = logging.getLogger("edgeclaw.shell")

MANIFEST = CapabilityManifest(
    name="shell",
    caps=("system",),
    commands=("system.run", "system.run.prepare", "system.execApprovals.get", "system.execApprovals.set"),
)


@dataclass
class Config:
    enabled: bool = True
    max_concurrency: int = 4  # commands running at once
    queue_limit: int = 16  # commands waiting for a slot; beyond that SYSTEM_RUN_BUSY
    output_cap_bytes: int = 200_000  # per stream, the head is kept
    kill_grace_s: float = 2.0  # SIGTERM → SIGKILL
    # An exec approvals document (OpenClaw format) rolled out from config: applied whenever it changes,
    # keeping allow-always entries approved on the board. None: the document in the state dir rules.
    approvals: dict[str, Any] | None = None
    # where runs execute: `systemd` as user edgeclaw-run in an edgeclaw-run@.service of their own (through
    # `run_socket`), `inprocess` as children of the node, `auto` the first when its socket exists
    isolation: str = "auto"
    run_socket: str = "/run/edgeclaw-run.sock"

    def validate(self) -> None:
        if self.isolation not in ("auto", "systemd", "inprocess"):
            raise ValueError("isolation must be auto, systemd or inprocess")
        if self.max_concurrency < 1 or self.queue_limit < 0:
            raise ValueError("max_concurrency must be >= 1 and queue_limit >= 0")
        if self.output_cap_bytes < 1024:
            raise ValueError("output_cap_bytes must be at least 1024")
        if not 0 < self.kill_grace_s <= 60:
            raise ValueError("kill_grace_s must be between 0 and 60 seconds")
        if self.approvals is not None:
            from edgeclaw.capabilities.shell.approvals import ApprovalsInvalid, normalize

            try:
                normalize(self.approvals)
            except ApprovalsInvalid as exc:
                raise ValueError(f"approvals: {exc}") from None


class ShellCapability(Capability):
    manifest = MANIFEST
    busy_code = "SYSTEM_RUN_BUSY"
    # bookkeeping commands answer at once, even while every run slot is busy
    unlimited_commands = frozenset(
        {"system.run.prepare", "system.execApprovals.get", "system.execApprovals.set"}
    )

    def __init__(self, config: Config, services: NodeServices) -> None:
        super().__init__(config, services)
        self.max_concurrency = config.max_concurrency
        self.queue_limit = config.queue_limit
        self._service: ShellService | None = None
        # the approvals file as read at start/reload (a few kB; (None,): there was none)
        self._trusted: tuple[bytes | None] | None = None

    @property
    def service(self) -> ShellService:
        """Built on first use: the runner, its command parser and policy modules cost about 1 MB of RSS
        that a node which never runs a command should not carry."""
        if self._service is None:
            from edgeclaw.capabilities.shell.run import ShellService

            self._service = ShellService(self.config, self.services, self._trusted)
        return self._service

    def handlers(self) -> dict[str, Handler]:
        if not self.config.enabled:
            return {}
        return {
            "system.run": self._deferred("handle_run"),
            "system.run.prepare": self._deferred("handle_prepare"),
            "system.execApprovals.get": self._deferred("handle_get"),
            "system.execApprovals.set": self._deferred("handle_set"),
        }

    def _deferred(self, method: str) -> Handler:
        async def handle(ctx: InvokeContext) -> dict[str, Any]:
            result: dict[str, Any] = await getattr(self.service, method)(ctx)
            return result

        handle.__name__ = method
        return handle

    async def start(self) -> None:
        self._apply_seed()
        self._pin_approvals()

    async def reload(self, new_config: Any) -> None:
        self.config = new_config
        if self._service is not None:
            self._service.config = new_config
        self.max_concurrency = new_config.max_concurrency
        self.queue_limit = new_config.queue_limit
        self._apply_seed()
        self._pin_approvals()
        if self._service is not None:
            await self._service.reload()

    def _pin_approvals(self) -> None:
        """Read the approvals file now (start, SIGHUP): later edits that do not go through the node
        (a command rewriting it, without systemd's separate run user) are not honoured."""
        if self._service is not None or not self.config.enabled:
            return
        try:
            self._trusted = ((self.services.state_dir / APPROVALS_FILE).read_bytes(),)
        except FileNotFoundError:
            self._trusted = (None,)
        except OSError as exc:
            log.warning("cannot read exec approvals at start: %s", exc)

    def _apply_seed(self) -> None:
        if not (self.config.enabled and self.config.approvals):
            return  # nothing to roll out: leave the runner unloaded until a command needs it
        if self.service.store.apply_seed(self.config.approvals):
            log.info("exec approvals from config applied to %s", self.service.store.path)


def create(config: Config, services: NodeServices) -> Capability:
    return ShellCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
