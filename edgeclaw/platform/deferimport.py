"""Load a module on first use instead of when something merely imports it.

Why: websockets imports `importlib.metadata` at the top of `websockets/version.py` but only calls it in
unreleased checkouts, and `urllib.request` at the top of `websockets/proxy.py` but only calls it when a
proxy is in play. Together they pull in zipfile, csv, email, http.client and friends: about 3 MB of RSS
on a node whose whole budget is 30 MB. `shutil` (which argparse imports for the terminal width) imports
`bz2` and `lzma` only to learn whether archives could use them: another 0.3 MB. A deferred module is a placeholder in `sys.modules` that holds the
real module's spec; the first attribute anyone reads from it imports the real module, which then takes
its place (in `sys.modules` and on its parent package), so later readers see the real thing.

This is not a stub: every use still gets the real module; only the moment it loads changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_lock = threading.RLock()

# Imported by libraries the node uses, used by none of the code paths the node takes (see above).
UNUSED_BY_THE_NODE = ("importlib.metadata", "urllib.request", "bz2", "lzma")


class DeferredModule(types.ModuleType):
    """Placeholder for a module not loaded yet; any attribute it lacks loads the real one."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self), attr)


def _load(placeholder: DeferredModule) -> types.ModuleType:
    name = placeholder.__name__
    with _lock:
        current = sys.modules.get(name)
        if current is not None and current is not placeholder:
            return current
        sys.modules.pop(name, None)
        try:
            real = importlib.import_module(name)
        except BaseException:
            sys.modules.setdefault(name, placeholder)
            raise
        _bind_to_parent(name, real)
        return real


def _bind_to_parent(name: str, module: types.ModuleType) -> None:
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def defer(*names: str) -> list[str]:
    """Defer each module not imported yet; returns the names actually deferred."""
    deferred = []
    with _lock:
        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None:
                continue
            placeholder = DeferredModule(name)
            placeholder.__spec__ = spec
            placeholder.__loader__ = spec.loader
            sys.modules[name] = placeholder
            _bind_to_parent(name, placeholder)
            deferred.append(name)
    return deferred


def is_loaded(name: str) -> bool:
    """True when the real module (not a placeholder) is in sys.modules."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, DeferredModule)
