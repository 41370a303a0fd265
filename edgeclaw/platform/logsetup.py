"""Logging that fits the journal (syslog priority prefixes, no timestamps of our own under systemd) and
never prints a secret: every registered secret is masked in every record, at every level."""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from dataclasses import dataclass

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class SecretRedactor(logging.Filter):
    """Masks registered secrets in the final message text (args included) before any handler sees it."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def known(self) -> list[str]:
        """The registered secrets (for redaction of text read back from the journal)."""
        with self._lock:
            return list(self._secrets)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, secret[:3] + "…[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACTOR = SecretRedactor()

RING_LINES = 1000  # what `edgeclaw.logs` can return without a journal (its per-call cap too)
RING_MESSAGE_CHARS = 2000  # longer messages (tracebacks) are cut: the ring stays ~2 MB at most


@dataclass(frozen=True)
class LogEntry:
    ts: float  # time.time()
    level: int
    logger: str
    message: str  # with the traceback, if any; registered secrets already masked


class LogRing(logging.Handler):
    """The last RING_LINES records of this process, for `edgeclaw.logs` when there is no journal to read
    (a laptop, the demo, a container). Bounded in lines and characters; thread-safe (records arrive from
    gpiozero and worker threads)."""

    def __init__(self, lines: int = RING_LINES) -> None:
        super().__init__(logging.DEBUG)
        self.entries: collections.deque[LogEntry] = collections.deque(maxlen=lines)
        self.addFilter(REDACTOR)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                message = f"{message}\n{REDACTOR.redact(record.exc_text)}"
            entry = LogEntry(record.created, record.levelno, record.name, message[:RING_MESSAGE_CHARS])
            with self.lock or threading.Lock():
                self.entries.append(entry)
        except Exception:  # a logging handler never raises into the code that logged
            self.handleError(record)

    def snapshot(self) -> list[LogEntry]:
        with self.lock or threading.Lock():
            return list(self.entries)


RING = LogRing()


class JournalFormatter(logging.Formatter):
    """`<prio>logger: message`: journald turns the prefix into the entry's priority and adds the time."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def setup_logging(level: str = "info", *, stream: object = None) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    root.addHandler(RING)  # kept across setups: the ring is the process's memory of its own log
    set_level(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
