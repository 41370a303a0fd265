"""system.which and system.notify: the always-present commands of a headless Linux node."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler, NodeServices

CONFIG_KEY = "system"

MANIFEST = CapabilityManifest(
    name="system",
    caps=("system",),
    commands=("system.which", "system.notify"),
)


@dataclass
class Config:
    enabled: bool = True
    notify_hook: list[str] = field(default_factory=list)  # argv run per notification; gets EDGECLAW_NOTIFY_*
    notify_hook_timeout_s: float = 10.0


class SystemCapability(Capability):
    manifest = MANIFEST
    max_concurrency = 8
    queue_limit = 64

    def handlers(self) -> dict[str, Handler]:
        from edgeclaw.capabilities.system import notify, which

        if not self.config.enabled:
            return {}
        return {
            "system.which": which.handle_which,
            "system.notify": lambda ctx: notify.handle_notify(ctx, self.config),
        }


def create(config: Config, services: NodeServices) -> Capability:
    return SystemCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
