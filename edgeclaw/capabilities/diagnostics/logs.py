"""`edgeclaw.logs`: a bounded, redacted tail of the node's own log.

Under systemd the unit's journal is read (`journalctl -u <unit> -o json`, bounded in time and bytes: a
hung or chatty journalctl is killed, garbage lines are skipped and counted); elsewhere (a laptop, the
demo) the in-memory ring that logsetup attaches to the root logger. Either way every line is redacted
(edgeclaw.platform.redact) before it leaves the board, and the answer is capped in lines and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.platform import procgroup
from edgeclaw.platform.logsetup import RING, LogRing
from edgeclaw.platform.redact import Redactor

MAX_LINES = 1000
DEFAULT_LINES = 100
MAX_BYTES = 64 * 1024
LINE_MAX_CHARS = 2000
JOURNAL_READ_CAP = 4 * 1024 * 1024  # raw journalctl output read at most (JSON is ~5x the message text)
MAX_SINCE_S = 90 * 86400
KILL_GRACE_S = 1.0

# journald priorities (syslog): a level filter keeps this priority and the more severe ones
LEVELS = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "error": 3, "critical": 2}
_PRIORITY_NAME = {
    7: "DEBUG",
    6: "INFO",
    5: "NOTICE",
    4: "WARNING",
    3: "ERROR",
    2: "CRITICAL",
    1: "ALERT",
    0: "EMERG",
}
_RELATIVE = re.compile(r"^(\d{1,7})\s*([smhd])$")
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@\\-]{1,200}\.service$")


@dataclass(frozen=True)
class LogsRequest:
    lines: int = DEFAULT_LINES
    since: float | None = None  # epoch seconds
    level: str | None = None


@dataclass
class Line:
    ts: float
    priority: int
    message: str


@dataclass
class Tail:
    source: str  # journal | memory
    lines: list[Line]
    skipped: int = 0  # unreadable journal lines
    notes: list[str] = field(default_factory=list)
    unit: str | None = None


def parse_request(params: dict[str, Any], now: float) -> LogsRequest:
    """Bad input gets INVALID_REQUEST with what is allowed; nothing is silently clamped."""
    unknown = set(params) - {"lines", "since", "level"}
    if unknown:
        raise InvokeError("INVALID_REQUEST", f"unknown parameter(s) {', '.join(sorted(unknown))}")
    lines = params.get("lines", DEFAULT_LINES)
    if lines is None:
        lines = DEFAULT_LINES
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
        raise InvokeError("INVALID_REQUEST", f"'lines' must be an integer from 1 to {MAX_LINES}")
    level = params.get("level")
    if level is not None and (not isinstance(level, str) or level.lower() not in LEVELS):
        raise InvokeError("INVALID_REQUEST", f"'level' must be one of {', '.join(LEVELS)}")
    return LogsRequest(lines, _parse_since(params.get("since"), now), level.lower() if level else None)


def _parse_since(value: Any, now: float) -> float | None:
    """`since`: seconds ago (a number), `15m`/`2h`/`1d`, or an ISO 8601 time (naive = UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvokeError("INVALID_REQUEST", "'since' must be seconds ago, like '15m', or an ISO 8601 time")
    if isinstance(value, (int, float)):
        if not 0 < value <= MAX_SINCE_S or value != value:
            raise InvokeError("INVALID_REQUEST", f"'since' in seconds must be from 1 to {MAX_SINCE_S}")
        return now - float(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvokeError("INVALID_REQUEST", "'since' must be seconds ago, like '15m', or an ISO 8601 time")
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return _parse_since(seconds, now)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvokeError(
            "INVALID_REQUEST", f"'since' {text!r} is neither seconds ago, like '15m', nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ts = when.timestamp()
    if ts > now + 60:
        raise InvokeError("INVALID_REQUEST", "'since' is in the future")
    return max(ts, now - MAX_SINCE_S)


# where the log is ---------------------------------------------------------------------------------------
def own_unit(cgroup_file: Path = Path("/proc/self/cgroup")) -> str | None:
    """The systemd unit this process runs in (`0::/system.slice/edgeclaw.service` → edgeclaw.service)."""
    try:
        text = cgroup_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        path = line.rpartition(":")[2]
        for part in reversed(path.split("/")):
            if part.endswith(".service") and _UNIT_RE.match(part):
                return part
    return None


def journal_unit(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The unit whose journal to read, or None to use the in-memory ring: only under systemd (systemd
    sets INVOCATION_ID for every unit it starts) and only when journalctl exists."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if not environ.get("INVOCATION_ID") or shutil.which("journalctl", path=environ.get("PATH")) is None:
        return None
    return configured or own_unit() or "edgeclaw.service"


# reading ---------------------------------------------------------------------------------------------
def read_ring(req: LogsRequest, ring: LogRing = RING) -> Tail:
    threshold = LEVELS.get(req.level or "debug", 7)
    picked: list[Line] = []
    for entry in ring.snapshot():
        priority = _python_priority(entry.level)
        if priority > threshold or (req.since is not None and entry.ts < req.since):
            continue
        picked.append(Line(entry.ts, priority, f"{entry.logger}: {entry.message}"))
    return Tail("memory", picked[-req.lines :])


def _python_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


JOURNAL_GROUPS = ("systemd-journal", "adm", "wheel")  # journald lets these read the system journal


def journal_denied() -> str | None:
    """Why this process cannot read the system journal, or None. journalctl run by a user outside the
    journal's groups silently shows only that user's own journal: for a system unit, nothing at all
    (found under the real hardened unit: 0 lines). Reading the journal is an opt-in for the operator
    (`SupplementaryGroups=systemd-journal`), because that group can read every service's logs."""
    if os.geteuid() == 0:
        return None
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    if names & set(JOURNAL_GROUPS):
        return None
    return (
        f"the journal is not readable by this user (not in group {JOURNAL_GROUPS[0]}; "
        "see 'Remote diagnostics' in the README to allow it)"
    )


async def read_journal(unit: str, req: LogsRequest, timeout: float) -> Tail:
    """journalctl's JSON export of the unit, newest `lines` entries; raises OSError/TimeoutError when
    journalctl cannot give an answer in time (the caller falls back to the ring)."""
    argv = ["journalctl", "-u", unit, "-o", "json", "--no-pager", "-q", "-n", str(req.lines)]
    if req.level:
        argv += ["-p", str(LEVELS[req.level])]
    if req.since is not None:
        argv += ["--since", f"@{int(req.since)}"]
    out, capped = await _run_capped(argv, timeout)
    tail = Tail("journal", [], unit=unit)
    if capped:
        tail.notes.append(f"journalctl printed more than {JOURNAL_READ_CAP} bytes; the rest was not read")
    for raw in out.splitlines():
        line = _journal_line(raw)
        if line is None:
            tail.skipped += bool(raw.strip())
            continue
        tail.lines.append(line)
    tail.lines = tail.lines[-req.lines :]
    return tail


def _journal_line(raw: bytes) -> Line | None:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    message = doc.get("MESSAGE")
    if isinstance(message, list):  # journald exports non-UTF-8 messages as a byte array
        try:
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
                "utf-8", "replace"
            )
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    try:
        ts = int(str(doc.get("__REALTIME_TIMESTAMP", "0"))) / 1_000_000
        priority = int(str(doc.get("PRIORITY", "6")))
    except ValueError:
        return None
    return Line(ts, priority if 0 <= priority <= 7 else 6, message)


async def _run_capped(argv: list[str], timeout: float) -> tuple[bytes, bool]:
    """Run argv with a deadline and a cap on what is read; the whole tree is killed either way."""
    child, out_fd, _ = await procgroup.start(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = bytearray()
    capped = asyncio.Event()

    def sink(data: bytes) -> None:
        room = JOURNAL_READ_CAP - len(buf)
        if room > 0:
            buf.extend(data[:room])
        if len(data) > room:
            capped.set()

    assert out_fd is not None
    pump = asyncio.ensure_future(procgroup.read_fd(out_fd, sink))
    exited = asyncio.ensure_future(child.wait())
    cap_hit = asyncio.ensure_future(capped.wait())
    try:
        done, _ = await asyncio.wait({exited, cap_hit}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise TimeoutError(f"journalctl did not finish within {timeout:g} s")
        if exited in done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), 2.0)
    finally:
        for task in (exited, cap_hit):
            task.cancel()
        if child.alive():
            await procgroup.kill_tree(child, KILL_GRACE_S)
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        procgroup.finish(child)
    return bytes(buf), capped.is_set()


# answering ---------------------------------------------------------------------------------------------
def render(tail: Tail, redactor: Redactor, req: LogsRequest) -> dict[str, Any]:
    """Redact, then keep the newest lines that fit MAX_BYTES (UTF-8)."""
    messages = [ln.message[:LINE_MAX_CHARS] for ln in tail.lines]
    clean = redactor.redact_lines(messages)
    texts = [
        f"{_iso(ln.ts)} {_PRIORITY_NAME.get(ln.priority, 'INFO')} {msg}"
        for ln, msg in zip(tail.lines, clean, strict=True)
    ]
    kept: list[str] = []
    size = 0
    for text in reversed(texts):
        n = len(text.encode("utf-8")) + 1
        if size + n > MAX_BYTES:
            break
        kept.append(text)
        size += n
    kept.reverse()
    doc: dict[str, Any] = {
        "source": tail.source,
        "lines": kept,
        "count": len(kept),
        "truncated": len(kept) < len(texts),
        "limits": {"lines": req.lines, "bytes": MAX_BYTES},
    }
    if tail.unit:
        doc["unit"] = tail.unit
    if req.level:
        doc["level"] = req.level
    if req.since is not None:
        doc["since"] = _iso(req.since)
    if tail.skipped:
        doc["skipped"] = tail.skipped
    if tail.notes:
        doc["notes"] = [redactor.redact(n) for n in tail.notes]
    return doc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def logs(
    params: dict[str, Any],
    redactor: Redactor,
    *,
    unit: str | None,
    timeout: float,
    ring: LogRing = RING,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    req = parse_request(params, now())
    tail: Tail | None = None
    note: str | None = None
    if unit is not None and (denied := journal_denied()) is not None:
        note = f"{denied}; this is the node's in-memory log (since it started) instead"
    elif unit is not None:
        try:
            tail = await read_journal(unit, req, timeout)
        except (OSError, TimeoutError) as exc:
            note = f"the journal could not be read ({exc}); this is the node's in-memory log instead"
    if tail is None:
        tail = read_ring(req, ring)
        if note:
            tail.notes.append(note)
    return render(tail, redactor, req)
