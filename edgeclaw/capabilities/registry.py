"""Where capability packages are found. A capability module exposes:

- `CONFIG_KEY: str` — its top-level section in config.yaml;
- `Config` — a dataclass (with an `enabled: bool` field) validated by `edgeclaw.typedconfig`;
- `MANIFEST: CapabilityManifest` — commands, caps, devices and groups it needs;
- `create(config, services) -> Capability`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CAPABILITY_MODULES: dict[str, str] = {
    "system": "edgeclaw.capabilities.system",
    "shell": "edgeclaw.capabilities.shell",
    "camera": "edgeclaw.capabilities.camera",
    "gpio": "edgeclaw.capabilities.gpio",
    "device": "edgeclaw.capabilities.device",
}


def load_capability_modules() -> dict[str, ModuleType]:
    """Import every capability module that is installed (the modules import their heavy backends lazily)."""
    modules: dict[str, ModuleType] = {}
    for key, module_name in CAPABILITY_MODULES.items():
        try:
            modules[key] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return modules
