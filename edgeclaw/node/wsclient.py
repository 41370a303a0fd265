"""The WebSocket client (websockets' asyncio implementation), imported lean, and its proxy choice.

websockets loads `importlib.metadata` and `urllib.request` at import time and, in a released version
with no proxy configured, never uses either; they are deferred here (see edgeclaw.platform.deferimport)
so the daemon does not carry them. This module is the only place the node imports websockets from.
"""

from __future__ import annotations

import os
from typing import Literal

from edgeclaw.platform.deferimport import defer

defer("importlib.metadata", "urllib.request")  # also when imported without the CLI (tests, tools)

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI  # noqa: E402

__all__ = [
    "ClientConnection",
    "ConnectionClosed",
    "InvalidHandshake",
    "InvalidURI",
    "connect",
    "proxy_setting",
]


def proxy_setting(environ: os._Environ[str] | dict[str, str] | None = None) -> Literal[True] | None:
    """websockets' `proxy=` argument: True (use the environment's proxy, honouring no_proxy) when any
    `*_proxy` variable is set, as urllib would see it; None otherwise, which also skips loading
    urllib.request just to find out that there is no proxy."""
    env = os.environ if environ is None else environ
    return (
        True
        if any(
            value and key.lower().endswith("_proxy") and key.lower() != "no_proxy"
            for key, value in env.items()
        )
        else None
    )
