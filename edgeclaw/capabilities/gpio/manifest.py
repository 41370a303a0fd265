"""What the GPIO capability declares, importable without the capability itself (a node with GPIO off
never loads the capability's modules)."""

from __future__ import annotations

from edgeclaw.capabilities.base import CapabilityManifest

COMMANDS = ("gpio.list", "gpio.read", "gpio.write", "gpio.pwm", "gpio.pulse", "gpio.events")
MANIFEST = CapabilityManifest(
    name="gpio",
    caps=("gpio",),
    commands=COMMANDS,
    devices=("/dev/gpiochip*",),
    groups=("gpio",),
    needs_gateway_allowlist=COMMANDS,
)
