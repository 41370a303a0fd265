"""GPIO: configured pins as node commands and agent tools, edges as events and agent.requests, safe
states on stop and without a gateway. gpiozero 2.x (lgpio on real boards, MockFactory when simulated)
is imported only when the capability starts with pins configured."""

from __future__ import annotations

from edgeclaw.capabilities.base import Capability, NodeServices
from edgeclaw.capabilities.gpio.config import Config, PinConfig
from edgeclaw.capabilities.gpio.manifest import MANIFEST

CONFIG_KEY = "gpio"


def create(config: Config, services: NodeServices) -> Capability:
    from edgeclaw.capabilities.gpio.capability import GpioCapability  # only when GPIO is enabled

    return GpioCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "PinConfig", "create"]
