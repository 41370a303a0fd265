"""Triggers: a source (GPIO edge, schedule, device threshold, camera motion) → actions (photo, pin and
device reads through the node's own commands) → one agent.request, spooled on disk and delivered in
order. `gpio.pins.<name>.on_edge: agent` is an implicit trigger of this capability."""

from __future__ import annotations

from edgeclaw.capabilities.base import Capability, NodeServices
from edgeclaw.capabilities.triggers.config import Config
from edgeclaw.capabilities.triggers.manifest import MANIFEST

CONFIG_KEY = "triggers"


def create(config: Config, services: NodeServices) -> Capability:
    from edgeclaw.capabilities.triggers.capability import TriggersCapability

    return TriggersCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
