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

# What the hook inherits from the node: enough to run a script in the right locale, nothing that is the
# node's (EDGECLAW_GATEWAY_TOKEN, NOTIFY_SOCKET, CREDENTIALS_DIRECTORY, LISTEN_FDS, …).
HOOK_ENV_KEYS = ("PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME", "TMPDIR")
HOOK_ENV_PREFIXES = ("LC_",)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Beyond C0/DEL/C1 and lone surrogates: Unicode's own line breaks and the bidi controls that reorder
# what a reader of the journal sees. (Explicit, not unicodedata: that module costs the node RSS.)
_ALSO_ESCAPED = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _needs_escape(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or ch in _ALSO_ESCAPED


async def handle_notify(ctx: InvokeContext, config: Config) -> dict[str, Any]:
    title, body = ctx.params.get("title"), ctx.params.get("body")
    for name, value in (("title", title), ("body", body)):
        if value is not None and not isinstance(value, str):
            raise InvokeError("INVALID_REQUEST", f"{name} must be a string")
        if value and not _is_env_safe(value):  # could not reach the hook's environment
            raise InvokeError("INVALID_REQUEST", f"{name} must be text without NUL or lone surrogates")
    if not (title or "").strip() and not (body or "").strip():
        raise InvokeError("INVALID_REQUEST", "a notification needs a title or a body")
    priority = ctx.params.get("priority") or "active"
    if not isinstance(priority, str) or priority not in _PRIORITY_LEVEL:  # a list or dict is unhashable
        raise InvokeError("INVALID_REQUEST", "priority must be passive, active or timeSensitive")
    text = " — ".join(p for p in (title, body) if p)
    log.log(_PRIORITY_LEVEL[priority], "notification [%s]: %s", priority, escape_for_journal(text))
    if config.notify_hook:
        await _run_hook(config, title or "", body or "", priority, ctx)
    return {"ok": True}


def _is_env_safe(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\\ud800" escape
        return False
    return True


def escape_for_journal(text: str) -> str:
    """Agent text as one printable line: journald starts a new entry (with its own `<prio>` prefix) at
    every line break, and a terminal running `journalctl` obeys ANSI escapes; so controls are shown as
    `\\n`, `\\x1b`, `\\u2028` instead of acting."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif _needs_escape(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def hook_environment(title: str, body: str, priority: str) -> dict[str, str]:
    """An allowlist, not the node's environment: the hook is an operator's script fed agent text."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in HOOK_ENV_KEYS or key.startswith(HOOK_ENV_PREFIXES)
    }
    env.setdefault("PATH", os.defpath)
    env.update(
        {"EDGECLAW_NOTIFY_TITLE": title, "EDGECLAW_NOTIFY_BODY": body, "EDGECLAW_NOTIFY_PRIORITY": priority}
    )
    return env


async def _run_hook(config: Config, title: str, body: str, priority: str, ctx: InvokeContext) -> None:
    env = hook_environment(title, body, priority)
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
