"""Recent starts of the node, kept across restarts in the state directory, to tell a crash loop.

A start counts as failed when its process died before running healthy for `healthy_after_s` (its entry
is still "running" at the next start) or exited with an error; a clean stop (SIGTERM) does not count,
and a run that stayed healthy long enough clears the record."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from edgeclaw.config import SafeModeConfig
from edgeclaw.platform.atomicfile import write_atomic

log = logging.getLogger("edgeclaw.daemon")

STARTS_FILE = "starts.json"
MAX_ENTRIES = 50  # bounded whatever the window: a file rewritten once per start must stay tiny
FAILED = ("running", "failed")


class StartHistory:
    def __init__(self, state_dir: Path, config: SafeModeConfig) -> None:
        self.path = Path(state_dir) / STARTS_FILE
        self.config = config
        self.entries: list[dict[str, Any]] = []
        self._this: dict[str, Any] | None = None

    def begin(self, now: float | None = None) -> list[dict[str, Any]]:
        """Record this start; returns the earlier failed starts within the window."""
        now = time.time() if now is None else now
        self.entries = [e for e in self._load() if now - e["at"] <= self.config.window_s][-MAX_ENTRIES:]
        failed = [e for e in self.entries if e.get("outcome") in FAILED]
        self._this = {"at": now, "pid": os.getpid(), "outcome": "running"}
        self.entries.append(self._this)
        self._save()
        return failed

    def crash_loop(self, failed: list[dict[str, Any]]) -> str | None:
        """Why this start should be in safe mode, or None."""
        if not self.config.enabled or len(failed) < self.config.failed_starts:
            return None
        span = time.time() - min(e["at"] for e in failed)
        return (
            f"the node failed to start {len(failed)} times in {span:.0f} s "
            f"(each died within {self.config.healthy_after_s:.0f} s of starting)"
        )

    def mark(self, outcome: str) -> None:
        """ "healthy" clears the earlier failures; "stopped" (clean) and "failed" close this entry."""
        if self._this is None:
            return
        self._this["outcome"] = outcome
        if outcome == "healthy":
            self.entries = [self._this]
        self._save()

    def _load(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable %s: %s", self.path, exc)
            return []
        starts = doc.get("starts") if isinstance(doc, dict) else None
        if not isinstance(starts, list):
            return []
        return [e for e in starts if isinstance(e, dict) and isinstance(e.get("at"), (int, float))]

    def _save(self) -> None:
        try:
            write_atomic(self.path, json.dumps({"starts": self.entries}) + "\n", mode=0o600)
        except OSError as exc:  # a full or read-only state dir: crash loops go undetected, the node runs
            log.warning("cannot record this start in %s (%s); crash-loop detection is off", self.path, exc)
