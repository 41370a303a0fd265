"""device.info and device.status: board identity and health, read-only, from procfs/sysfs.

`device.*` are not in the gateway's default Linux allowlist; the operator adds them with
`openclaw config set gateway.nodes.commands.allow '["device.info","device.status"]'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler, InvokeContext, NodeServices

CONFIG_KEY = "device"

MANIFEST = CapabilityManifest(
    name="device",
    caps=("device",),
    commands=("device.info", "device.status"),
    needs_gateway_allowlist=("device.info", "device.status"),
)

PLUGIN_ID = "edgeclaw"


@dataclass
class Config:
    enabled: bool = True
    vcgencmd: str = (
        "vcgencmd"  # asked for get_throttled only when the kernel lacks the sysfs file; "" = never
    )


class DeviceCapability(Capability):
    manifest = MANIFEST
    max_concurrency = 2
    queue_limit = 8

    def handlers(self) -> dict[str, Handler]:
        if not self.config.enabled:
            return {}
        return {"device.info": self._info, "device.status": self._status}

    def plugin_tools(self) -> list[dict[str, Any]]:
        if not self.config.enabled:
            return []
        return [
            {
                "pluginId": PLUGIN_ID,
                "name": "device_status",
                "description": "Health of this board right now: CPU temperature, under-voltage and throttling "
                "flags, load, memory, disk space, SD/eMMC wear, network and Wi-Fi signal, clock sync, and the "
                "EdgeClaw node's own memory, uptime, reconnects and invoke count.",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
                "command": "device.status",
            },
            {
                "pluginId": PLUGIN_ID,
                "name": "device_info",
                "description": "What this board is: model and revision, OS, kernel, architecture, Python and "
                "EdgeClaw versions, hostname, boot time and the node's capabilities.",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
                "command": "device.info",
            },
        ]

    async def _info(self, ctx: InvokeContext) -> dict[str, Any]:
        from edgeclaw.capabilities.device import live

        return live.info(self.services)

    async def _status(self, ctx: InvokeContext) -> dict[str, Any]:
        from edgeclaw.capabilities.device import live

        return await live.status(self.services, self.config, timeout=min(3.0, max(0.5, ctx.remaining() - 1)))


def create(config: Config, services: NodeServices) -> Capability:
    return DeviceCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
