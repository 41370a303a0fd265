"""Remote diagnostics: `edgeclaw.logs` (a bounded, redacted tail of the node's own log), `edgeclaw.doctor`
(`edgeclaw doctor`'s checks as JSON) and `device.identify` (blink the board's LED), as node commands and
as agent tools.

On by default, but all three are custom commands the gateway withholds until the operator lists them in
`gateway.nodes.commands.allow` (the Linux platform defaults hold only system.* and screen/computer
commands: node-command-policy in the gateway's dist). In safe mode this capability is off and the
safe-mode `edgeclaw.logs` answers instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeclaw.capabilities.base import Capability, CapabilityManifest, NodeServices
from edgeclaw.typedconfig import ConfigError

CONFIG_KEY = "diagnostics"

COMMANDS = ("edgeclaw.logs", "edgeclaw.doctor", "device.identify")
MANIFEST = CapabilityManifest(
    name="diagnostics",
    caps=("diagnostics",),
    commands=COMMANDS,
    needs_gateway_allowlist=COMMANDS,
)


@dataclass
class Config:
    enabled: bool = True
    journal_unit: str | None = None  # the unit whose journal edgeclaw.logs reads; default: our own unit
    journal_timeout_s: float = 5.0  # journalctl is killed after this; the answer falls back to memory
    doctor_timeout_s: float = 60.0
    identify_led: str = (
        "auto"  # an LED under leds_dir (ACT, led0, …) or a path; auto: ACT, else led0; "": none
    )
    identify_pin: str | None = None  # a gpio output's name: blink it (through gpio.write) instead of an LED
    leds_dir: str = "/sys/class/leds"
    identify_max_s: int = 120
    identify_default_s: int = 10

    def validate(self) -> None:
        if self.journal_unit is not None and not self.journal_unit.endswith(".service"):
            raise ConfigError("must be a unit name ending in .service", key="diagnostics.journal_unit")
        if not 0.5 <= self.journal_timeout_s <= 60:
            raise ConfigError("must be between 0.5 and 60 seconds", key="diagnostics.journal_timeout_s")
        if not 5 <= self.doctor_timeout_s <= 600:
            raise ConfigError("must be between 5 and 600 seconds", key="diagnostics.doctor_timeout_s")
        if not 1 <= self.identify_max_s <= 600:
            raise ConfigError("must be between 1 and 600 seconds", key="diagnostics.identify_max_s")
        if not 1 <= self.identify_default_s <= self.identify_max_s:
            raise ConfigError("must be between 1 and identify_max_s", key="diagnostics.identify_default_s")
        if not self.leds_dir.startswith("/"):
            raise ConfigError("must be an absolute path", key="diagnostics.leds_dir")


def create(config: Config, services: NodeServices) -> Capability:
    from edgeclaw.capabilities.diagnostics.capability import DiagnosticsCapability

    return DiagnosticsCapability(config, services)


__all__ = ["CONFIG_KEY", "MANIFEST", "Config", "create"]
