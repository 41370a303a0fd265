"""system.which: {bins:[…]} → {bins:{name: absPath}} for the binaries found on the service's PATH.

Only names are looked up. OpenClaw's node host answers nothing for a name with a `/` or `\\`; EdgeClaw
refuses the call (INVALID_REQUEST) so that an agent cannot use it to probe arbitrary paths
(`/etc/shadow`, `../x`) and learns why instead of seeing "not found"."""

from __future__ import annotations

import os
import shutil
from typing import Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError

MAX_BINS = 256
NAME_MAX = 255  # a file name longer than this cannot exist on Linux


def check_name(name: str) -> None:
    """A bare file name, or INVALID_REQUEST saying why not."""
    if not name or name in (".", "..") or len(name) > NAME_MAX:
        raise InvokeError("INVALID_REQUEST", f"bins: {name[:40]!r} is not a program name")
    if "/" in name or "\\" in name or not name.isprintable():
        raise InvokeError(
            "INVALID_REQUEST", f"bins: {name[:40]!r} is not a program name (names only, no paths)"
        )


async def handle_which(ctx: InvokeContext) -> dict[str, Any]:
    bins = ctx.params.get("bins")
    if not isinstance(bins, list) or not all(isinstance(b, str) for b in bins):
        raise InvokeError("INVALID_REQUEST", "bins must be a list of strings")
    if len(bins) > MAX_BINS:
        raise InvokeError("INVALID_REQUEST", f"at most {MAX_BINS} bins per call")
    names = [b.strip() for b in bins if b.strip()]  # OpenClaw trims and skips empty entries
    for name in names:
        check_name(name)
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name)
        if path:
            found[name] = os.path.abspath(path)
    return {"bins": found}
