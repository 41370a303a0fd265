"""Where capability packages are found. A capability module exposes:

- `CONFIG_KEY: str` — its top-level section in config.yaml;
- `Config` — a dataclass (with an `enabled: bool` field) validated by `edgeclaw.typedconfig`;
- `MANIFEST: CapabilityManifest` — commands, caps, devices and groups it needs;
- `create(config, services) -> Capability`.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

log = logging.getLogger("edgeclaw.capabilities")
REQUIRED = ("CONFIG_KEY", "Config", "MANIFEST", "create")

CAPABILITY_MODULES: dict[str, str] = {
    "system": "edgeclaw.capabilities.system",
    "shell": "edgeclaw.capabilities.shell",
    "camera": "edgeclaw.capabilities.camera",
    "gpio": "edgeclaw.capabilities.gpio",
    "device": "edgeclaw.capabilities.device",
    "diagnostics": "edgeclaw.capabilities.diagnostics",
    "triggers": "edgeclaw.capabilities.triggers",  # last: uses the others through the node
}


def load_capability_modules() -> dict[str, ModuleType]:
    """Import every capability module that is installed (the modules import their heavy backends lazily)."""
    modules: dict[str, ModuleType] = {}
    for key, module_name in CAPABILITY_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        missing = [name for name in REQUIRED if not hasattr(module, name)]
        if missing:
            log.warning(
                "%s is not a complete capability (missing %s); left out", module_name, ", ".join(missing)
            )
            continue
        modules[key] = module
    return modules
