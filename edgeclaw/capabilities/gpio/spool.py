"""A bounded on-disk spool of agent.requests: every request goes through it (so order holds and a crash
between edge and delivery loses nothing), it is sent in order whenever the gateway takes it, and what
has to be dropped (too old, spool full, refused) is counted on disk and told to the agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw.platform.atomicfile import write_atomic

log = logging.getLogger("edgeclaw.gpio.spool")

SPOOL_FILE = "gpio-spool.json"


@dataclass
class SpoolEntry:
    id: int
    ts: float  # when the edge happened (wall clock)
    pin: str
    message: str
    session_key: str
    time_in_message: bool = True  # else the original time is appended when delivery is late

    @classmethod
    def from_json(cls, doc: Any) -> SpoolEntry:
        """An entry read back from disk, type-checked: the file may be old, hand-edited or damaged, and
        one bad entry must not stop the pump (a `"ts": "yesterday"` used to kill it)."""
        if not isinstance(doc, dict):
            raise ValueError(f"entry is a {type(doc).__name__}, not an object")
        ts = doc.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise ValueError(f"ts {ts!r} is not a time")
        for key in ("pin", "message", "session_key"):
            if not isinstance(doc.get(key), str):
                raise ValueError(f"{key} {doc.get(key)!r} is not a string")
        ident, in_message = doc.get("id"), doc.get("time_in_message", True)
        if not isinstance(ident, int) or isinstance(ident, bool) or not isinstance(in_message, bool):
            raise ValueError("id or time_in_message has the wrong type")
        return cls(ident, float(ts), doc["pin"], doc["message"], doc["session_key"], in_message)


@dataclass
class SpoolCounters:
    sent: int = 0
    dropped_expired: int = 0
    dropped_overflow: int = 0
    dropped_rejected: int = 0
    unreported_drops: int = 0  # drops not yet mentioned to the agent
    quarantined: int = 0  # malformed entries set aside in <spool>.quarantine, never sent


@dataclass
class Spool:
    path: Path
    max_entries: int
    max_age: float
    entries: list[SpoolEntry] = field(default_factory=list)
    counters: SpoolCounters = field(default_factory=SpoolCounters)
    next_id: int = 1

    @classmethod
    def open(cls, state_dir: Path, max_entries: int, max_age: float) -> Spool:
        spool = cls(state_dir / SPOOL_FILE, max_entries, max_age)
        spool._load()
        return spool

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "gpio spool %s is unreadable (%s); kept as %s and starting empty", self.path, exc, broken
            )
            with contextlib.suppress(OSError):
                self.path.rename(broken)
            return
        try:
            raw_entries = doc.get("entries", [])
            if not isinstance(raw_entries, list):
                raise TypeError("entries is not a list")
            self.counters = SpoolCounters(**doc.get("counters", {}))
            self.next_id = int(doc.get("next_id", 1))
        except (TypeError, ValueError, AttributeError) as exc:
            log.error("gpio spool %s has an unknown layout (%s); starting empty", self.path, exc)
            self.entries = []
            return
        for raw in raw_entries:
            try:
                self.entries.append(SpoolEntry.from_json(raw))
            except ValueError as exc:
                self.quarantine(raw, str(exc))
        if self.entries:
            log.info("gpio spool holds %d agent request(s) from before the restart", len(self.entries))
            self.next_id = max(self.next_id, self.entries[-1].id + 1)

    def save(self) -> None:
        doc = {
            "version": 1,
            "next_id": self.next_id,
            "entries": [asdict(e) for e in self.entries],
            "counters": asdict(self.counters),
        }
        try:
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")) + "\n", mode=0o600)
        except OSError as exc:
            log.error("cannot write the gpio spool %s: %s", self.path, exc)

    def add(
        self, ts: float, pin: str, message: str, session_key: str, *, time_in_message: bool = True
    ) -> SpoolEntry:
        entry = SpoolEntry(self.next_id, ts, pin, message, session_key, time_in_message)
        self.next_id += 1
        self.entries.append(entry)
        overflow = len(self.entries) - self.max_entries
        if overflow > 0:
            del self.entries[:overflow]
            self.counters.dropped_overflow += overflow
            self.counters.unreported_drops += overflow
            log.warning(
                "gpio spool full (%d): dropped the %d oldest agent request(s)", self.max_entries, overflow
            )
        self.save()
        return entry

    def expire(self, now: float) -> int:
        """Drop entries older than max_age; returns how many."""
        keep = [e for e in self.entries if now - e.ts <= self.max_age]
        dropped = len(self.entries) - len(keep)
        if dropped:
            self.entries = keep
            self.counters.dropped_expired += dropped
            self.counters.unreported_drops += dropped
            log.warning("dropped %d spooled agent request(s) older than %.0f s", dropped, self.max_age)
            self.save()
        return dropped

    def quarantine(self, raw: Any, why: str) -> None:
        """Set a malformed entry aside (appended to <spool>.quarantine for a human) and carry on."""
        self.counters.quarantined += 1
        self.counters.unreported_drops += 1
        path = self.path.with_name(f"{self.path.name}.quarantine")
        try:
            kept = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
            kept = kept if isinstance(kept, list) else []
            kept.append(raw)
            write_atomic(path, json.dumps(kept, separators=(",", ":")) + "\n", mode=0o600)
        except (OSError, ValueError) as exc:
            log.warning("cannot write %s: %s", path, exc)
        log.error("gpio spool: malformed agent request quarantined in %s (%s): %.200r", path, why, raw)
        self.save()

    def head(self) -> SpoolEntry | None:
        return self.entries[0] if self.entries else None

    def done(self, entry: SpoolEntry, *, delivered: bool) -> None:
        if self.entries and self.entries[0].id == entry.id:
            self.entries.pop(0)
        if delivered:
            self.counters.sent += 1
        else:
            self.counters.dropped_rejected += 1
            self.counters.unreported_drops += 1
        self.save()

    def drops_reported(self) -> None:
        if self.counters.unreported_drops:
            self.counters.unreported_drops = 0
            self.save()

    def stats(self) -> dict[str, Any]:
        return {
            "pending": len(self.entries),
            "max": self.max_entries,
            "max_age_s": self.max_age,
            **asdict(self.counters),
        }
