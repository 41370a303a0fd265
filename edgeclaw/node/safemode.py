"""Safe mode: what a crash-looping node still offers. Only the connection, device.info/device.status and
`edgeclaw.logs` (a bounded, redacted tail of the node's own log) run, so the owner can see why from the
gateway without a shell on the board; the capabilities that may be crashing it stay off."""

from __future__ import annotations

import collections
import logging
import re
from typing import Any

from edgeclaw.capabilities.base import (
    Capability,
    CapabilityManifest,
    Handler,
    InvokeContext,
    InvokeError,
    NodeServices,
)
from edgeclaw.platform import procgroup
from edgeclaw.platform.logsetup import REDACTOR
from edgeclaw.platform.redact import Redactor

log = logging.getLogger("edgeclaw.safemode")

LOG_TAIL_LINES = 200  # kept in memory
LOGS_MAX_LINES = 200  # per call
LOGS_DEFAULT_LINES = 50
LINE_MAX_CHARS = 500
HOOK_TIMEOUT_S = 10.0

# key=value / key: value secrets the redactor was not told about (a token pasted into a URL, a header)
_SECRETISH = re.compile(
    r"(?i)\b(token|bootstrap_token|device_token|password|passwd|secret|api[_-]?key|authorization|key)"
    r"(\"?\s*[:=]\s*\"?|\s+)(bearer\s+)?([A-Za-z0-9._~+/\-]{6,})"
)


def redact(text: str) -> str:
    text = REDACTOR.redact(text)
    return _SECRETISH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}[redacted]", text)


class LogTail(logging.Handler):
    """The last LOG_TAIL_LINES log lines of this process, redacted when read."""

    def __init__(self, lines: int = LOG_TAIL_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.addFilter(REDACTOR)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record)[:LINE_MAX_CHARS])
        except Exception:  # a logging handler never raises into the code that logged
            self.handleError(record)

    def tail(self, count: int) -> list[str]:
        return [redact(line) for line in list(self.lines)[-count:]]


MANIFEST = CapabilityManifest(
    name="edgeclaw",
    caps=("edgeclaw",),
    commands=("edgeclaw.logs",),
    needs_gateway_allowlist=("edgeclaw.logs",),
)


class SafeModeCapability(Capability):
    manifest = MANIFEST

    def __init__(
        self, reason: str, tail: LogTail, services: NodeServices, starts: list[dict[str, Any]]
    ) -> None:
        super().__init__(None, services)
        self.reason = reason
        self.tail = tail
        self.starts = starts  # the record that tripped safe mode: when, which pid, what became of it

    def handlers(self) -> dict[str, Handler]:
        return {"edgeclaw.logs": self._logs}

    async def _logs(self, ctx: InvokeContext) -> dict[str, Any]:
        count = ctx.params.get("lines", LOGS_DEFAULT_LINES)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvokeError("INVALID_REQUEST", "lines must be a positive integer")
        count = min(count, LOGS_MAX_LINES)
        return {
            "safeMode": True,
            "reason": self.reason,
            "starts": self.starts,
            # and the read-side layers of edgeclaw.logs (split, encoded, key-shaped secrets)
            "lines": Redactor(REDACTOR.known(), public=[self.services.node_id]).redact_lines(
                self.tail.tail(count)
            ),
        }


async def notify_owner(title: str, body: str, hook: list[str]) -> None:
    """One message to the owner: a journal entry at CRITICAL priority and the configured notify hook
    (system.notify_hook, e.g. a mail script or buzzer), bounded in time."""
    log.critical("%s: %s", title, body)
    if not hook:
        return
    # the same scrubbed environment and whole-tree kill as system.notify's hook: never the node's token
    from edgeclaw.capabilities.system.notify import HOOK_KILL_GRACE_S, hook_environment

    env = hook_environment(title, body, "timeSensitive")
    try:
        code, _, _ = await procgroup.communicate(
            hook, timeout=HOOK_TIMEOUT_S, grace=HOOK_KILL_GRACE_S, env=env, stdout=False
        )
    except OSError as exc:
        log.error("notify hook cannot start: %s", exc.strerror or exc)
        return
    except TimeoutError:
        log.error("notify hook did not finish within %.0f s; killed", HOOK_TIMEOUT_S)
        return
    if code != 0:
        log.error("notify hook exited %d", code)
