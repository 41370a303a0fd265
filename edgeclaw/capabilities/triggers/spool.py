"""The one on-disk spool of agent.requests (triggers and gpio `on_edge: agent`).

Every request goes through it, so order holds and a crash between the event and its delivery loses
nothing. The index (`triggers-spool.json`) is rewritten atomically; photos are files beside it
(`triggers-spool.d/`), written before the index names them and deleted after it no longer does, so
memory holds at most the request being sent. Bounded by count and age; what has to be dropped (too old,
spool full, refused, malformed) is counted on disk and told to the agent once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw.platform.atomicfile import write_atomic

log = logging.getLogger("edgeclaw.triggers.spool")

SPOOL_FILE = "triggers-spool.json"
MEDIA_DIR = "triggers-spool.d"


@dataclass
class Attachment:
    file: str  # name inside MEDIA_DIR
    file_name: str  # what the gateway is told
    mime_type: str
    size: int

    @classmethod
    def from_json(cls, doc: Any) -> Attachment:
        if not isinstance(doc, dict):
            raise ValueError("attachment is not an object")
        file, name, mime, size = doc.get("file"), doc.get("file_name"), doc.get("mime_type"), doc.get("size")
        if not all(isinstance(v, str) and v for v in (file, name, mime)):
            raise ValueError("attachment file/file_name/mime_type must be strings")
        if "/" in str(file) or str(file).startswith("."):
            raise ValueError(f"attachment file {file!r} is not a plain name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("attachment size is not a byte count")
        return cls(str(file), str(name), str(mime), size)


@dataclass
class SpoolEntry:
    id: int
    ts: float  # when the event happened (wall clock)
    trigger: str
    message: str
    session_key: str
    time_in_message: bool = True  # else the original time is added when delivery is late
    deliver: bool = False
    channel: str | None = None
    to: str | None = None
    attachments: list[Attachment] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: Any) -> SpoolEntry:
        """Type-checked: the file may be old, hand-edited or damaged; one bad entry must not stop the pump."""
        if not isinstance(doc, dict):
            raise ValueError(f"entry is a {type(doc).__name__}, not an object")
        ts = doc.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise ValueError(f"ts {ts!r} is not a time")
        for key in ("trigger", "message", "session_key"):
            if not isinstance(doc.get(key), str):
                raise ValueError(f"{key} {doc.get(key)!r} is not a string")
        ident = doc.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool):
            raise ValueError("id is not an integer")
        for key in ("time_in_message", "deliver"):
            if not isinstance(doc.get(key, False), bool):
                raise ValueError(f"{key} is not true/false")
        for key in ("channel", "to"):
            if doc.get(key) is not None and not isinstance(doc.get(key), str):
                raise ValueError(f"{key} is not a string")
        raw_att = doc.get("attachments", [])
        if not isinstance(raw_att, list):
            raise ValueError("attachments is not a list")
        return cls(
            ident,
            float(ts),
            doc["trigger"],
            doc["message"],
            doc["session_key"],
            doc.get("time_in_message", True),
            doc.get("deliver", False),
            doc.get("channel"),
            doc.get("to"),
            [Attachment.from_json(a) for a in raw_att],
        )


@dataclass
class SpoolCounters:
    sent: int = 0  # entries delivered (a batch of n counts n)
    requests: int = 0  # agent.requests sent
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
        spool.media_dir.mkdir(mode=0o700, exist_ok=True)
        spool._load()
        spool._remove_orphans()
        return spool

    @property
    def media_dir(self) -> Path:
        return self.path.with_name(MEDIA_DIR)

    # persistence ----------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "trigger spool %s is unreadable (%s); kept as %s, starting empty", self.path, exc, broken
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
            log.error("trigger spool %s has an unknown layout (%s); starting empty", self.path, exc)
            return
        for raw in raw_entries:
            try:
                self.entries.append(SpoolEntry.from_json(raw))
            except ValueError as exc:
                self.quarantine(raw, str(exc))
        if self.entries:
            log.info("trigger spool holds %d agent request(s) from before the restart", len(self.entries))
            self.next_id = max(self.next_id, max(e.id for e in self.entries) + 1)

    def _remove_orphans(self) -> None:
        """Photos no entry names (a crash between writing the photo and the index): deleted."""
        named = {a.file for e in self.entries for a in e.attachments}
        with contextlib.suppress(OSError):
            for path in self.media_dir.iterdir():
                if path.name not in named:
                    with contextlib.suppress(OSError):
                        path.unlink()

    def save(self) -> None:
        doc = {
            "version": 2,
            "next_id": self.next_id,
            "entries": [asdict(e) for e in self.entries],
            "counters": asdict(self.counters),
        }
        try:
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")) + "\n", mode=0o600)
        except OSError as exc:
            log.error("cannot write the trigger spool %s: %s", self.path, exc)

    # changes --------------------------------------------------------------------------------------
    def add(
        self,
        ts: float,
        trigger: str,
        message: str,
        session_key: str,
        *,
        time_in_message: bool = True,
        deliver: bool = False,
        channel: str | None = None,
        to: str | None = None,
        photos: list[tuple[bytes, str, str]] | None = None,
        save: bool = True,
    ) -> SpoolEntry:
        """`photos`: (data, file_name, mime_type); each is written to disk before the index names it."""
        ident = self.next_id
        self.next_id += 1
        attachments = []
        for n, (data, file_name, mime) in enumerate(photos or []):
            name = f"{ident:08d}-{n}.bin"
            write_atomic(self.media_dir / name, data, mode=0o600)
            attachments.append(Attachment(name, file_name, mime, len(data)))
        entry = SpoolEntry(
            ident, ts, trigger, message, session_key, time_in_message, deliver, channel, to, attachments
        )
        self.entries.append(entry)
        overflow = len(self.entries) - self.max_entries
        if overflow > 0:
            gone = self.entries[:overflow]
            del self.entries[:overflow]
            self.counters.dropped_overflow += overflow
            self.counters.unreported_drops += overflow
            log.warning(
                "trigger spool full (%d): dropped the %d oldest request(s)", self.max_entries, overflow
            )
            self._delete_media(gone)
        if save:
            self.save()
        return entry

    def expire(self, now: float) -> int:
        """Drop entries older than max_age; returns how many."""
        keep = [e for e in self.entries if now - e.ts <= self.max_age]
        gone = [e for e in self.entries if now - e.ts > self.max_age]
        if gone:
            self.entries = keep
            self.counters.dropped_expired += len(gone)
            self.counters.unreported_drops += len(gone)
            log.warning("dropped %d spooled agent request(s) older than %.0f s", len(gone), self.max_age)
            self.save()
            self._delete_media(gone)
        return len(gone)

    def quarantine(self, raw: Any, why: str) -> None:
        """Set a malformed entry aside (appended to <spool>.quarantine for a human) and carry on."""
        self.counters.quarantined += 1
        self.counters.unreported_drops += 1
        path = self.path.with_name(f"{self.path.name}.quarantine")
        try:
            kept = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
            kept = kept if isinstance(kept, list) else []
            kept.append(raw)
            write_atomic(path, json.dumps(kept, separators=(",", ":"), default=str) + "\n", mode=0o600)
        except (OSError, ValueError) as exc:
            log.warning("cannot write %s: %s", path, exc)
        log.error("trigger spool: malformed agent request quarantined in %s (%s): %.200r", path, why, raw)
        self.save()

    def remove(self, done: list[SpoolEntry], *, delivered: bool) -> None:
        ids = {e.id for e in done}
        self.entries = [e for e in self.entries if e.id not in ids]
        if delivered:
            self.counters.sent += len(done)
            self.counters.requests += 1
        else:
            self.counters.dropped_rejected += len(done)
            self.counters.unreported_drops += len(done)
        self.save()
        self._delete_media(done)

    def drops_reported(self, count: int) -> None:
        if count:
            self.counters.unreported_drops = max(0, self.counters.unreported_drops - count)
            self.save()

    def read_media(self, attachment: Attachment) -> bytes | None:
        try:
            return (self.media_dir / attachment.file).read_bytes()
        except OSError as exc:
            log.warning("spooled photo %s is gone: %s", attachment.file, exc)
            return None

    def _delete_media(self, entries: list[SpoolEntry]) -> None:
        for entry in entries:
            for att in entry.attachments:
                with contextlib.suppress(OSError):
                    os.unlink(self.media_dir / att.file)

    # reading --------------------------------------------------------------------------------------
    def head(self) -> SpoolEntry | None:
        return self.entries[0] if self.entries else None

    def stats(self) -> dict[str, Any]:
        return {
            "pending": len(self.entries),
            "max": self.max_entries,
            "max_age_s": self.max_age,
            **asdict(self.counters),
        }
