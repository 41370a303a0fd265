"""system.notify on a headless board: the notification goes into the journal at a priority that matches
its urgency, and optionally to a configured hook command (a buzzer, an LED, a mail script)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.platform import procgroup

if TYPE_CHECKING:
    from edgeclaw.capabilities.system import Config

log = logging.getLogger("edgeclaw.notify")

HOOK_KILL_GRACE_S = 1.0
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
    timeout = min(config.notify_hook_timeout_s, max(0.5, ctx.remaining() - 0.5))
    try:
        # the node's one kill strategy: at the timeout or a cancel, the hook and everything it started die
        code, _, stderr = await procgroup.communicate(
            config.notify_hook, timeout=timeout, grace=HOOK_KILL_GRACE_S, env=env, stdout=False
        )
    except TimeoutError:
        raise InvokeError(
            "NOTIFICATIONS_UNAVAILABLE", f"notify hook timed out after {timeout:.0f} s"
        ) from None
    except OSError as exc:
        raise InvokeError("NOTIFICATIONS_UNAVAILABLE", f"notify hook cannot start: {exc.strerror}") from None
    if code != 0:
        tail = stderr.decode("utf-8", "replace").strip()[-300:]
        raise InvokeError("NOTIFICATIONS_UNAVAILABLE", f"notify hook exited {code}: {tail}")
