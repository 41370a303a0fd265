"""system.which: {bins:[…]} → {bins:{name: absPath}} for the binaries found on the service's PATH."""

from __future__ import annotations

import os
import shutil
from typing import Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError

MAX_BINS = 256


async def handle_which(ctx: InvokeContext) -> dict[str, Any]:
    bins = ctx.params.get("bins")
    if not isinstance(bins, list) or not all(isinstance(b, str) for b in bins):
        raise InvokeError("INVALID_REQUEST", "bins must be a list of strings")
    if len(bins) > MAX_BINS:
        raise InvokeError("INVALID_REQUEST", f"at most {MAX_BINS} bins per call")
    found: dict[str, str] = {}
    for name in bins:
        if not name or "\x00" in name:
            continue
        path = shutil.which(name)
        if path:
            found[name] = os.path.abspath(path)
    return {"bins": found}
