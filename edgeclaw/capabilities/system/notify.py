"""system.notify on a headless board: the notification goes into the journal at a priority that matches
its urgency, and optionally to a configured hook command (a buzzer, an LED, a mail script)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError

if TYPE_CHECKING:
    from edgeclaw.capabilities.system import Config

log = logging.getLogger("edgeclaw.notify")

_PRIORITY_LEVEL = {"passive": logging.INFO, "active": logging.WARNING, "timeSensitive": logging.ERROR}


async def handle_notify(ctx: InvokeContext, config: Config) -> dict[str, Any]:
    title, body = ctx.params.get("title"), ctx.params.get("body")
    for name, value in (("title", title), ("body", body)):
        if value is not None and not isinstance(value, str):
            raise InvokeError("INVALID_REQUEST", f"{name} must be a string")
    if not (title or "").strip() and not (body or "").strip():
        raise InvokeError("INVALID_REQUEST", "a notification needs a title or a body")
    priority = ctx.params.get("priority") or "active"
    if not isinstance(priority, str) or priority not in _PRIORITY_LEVEL:  # a list or dict is unhashable
        raise InvokeError("INVALID_REQUEST", "priority must be passive, active or timeSensitive")
    text = " — ".join(p for p in (title, body) if p)
    log.log(_PRIORITY_LEVEL[priority], "notification [%s]: %s", priority, text)
    if config.notify_hook:
        await _run_hook(config, title or "", body or "", priority, ctx)
    return {"ok": True}


async def _run_hook(config: Config, title: str, body: str, priority: str, ctx: InvokeContext) -> None:
    env = dict(os.environ)
    env.update(
        {"EDGECLAW_NOTIFY_TITLE": title, "EDGECLAW_NOTIFY_BODY": body, "EDGECLAW_NOTIFY_PRIORITY": priority}
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *config.notify_hook,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise InvokeError("NOTIFICATIONS_UNAVAILABLE", f"notify hook cannot start: {exc.strerror}") from None
    timeout = min(config.notify_hook_timeout_s, max(0.5, ctx.remaining() - 0.5))
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise InvokeError(
            "NOTIFICATIONS_UNAVAILABLE", f"notify hook timed out after {timeout:.0f} s"
        ) from None
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip()[-300:]
        raise InvokeError("NOTIFICATIONS_UNAVAILABLE", f"notify hook exited {proc.returncode}: {tail}")
