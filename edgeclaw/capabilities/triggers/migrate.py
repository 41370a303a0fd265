"""One spool: an existing `gpio-spool.json` (from before triggers) is moved into the triggers spool on
start, entries kept in order, its drop counters carried over, the old file renamed `.migrated`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.triggers.spool import Spool

log = logging.getLogger("edgeclaw.triggers.migrate")

LEGACY_FILE = "gpio-spool.json"


def migrate_gpio_spool(state_dir: Path, spool: Spool) -> int:
    """Returns how many entries were moved; malformed ones are quarantined like any other."""
    path = state_dir / LEGACY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.error("old gpio spool %s is unreadable (%s); left in place", path, exc)
        return 0
    raw_entries = doc.get("entries", []) if isinstance(doc, dict) else []
    counters = doc.get("counters", {}) if isinstance(doc, dict) else {}
    moved = 0
    for raw in raw_entries if isinstance(raw_entries, list) else []:
        try:
            ts, pin, message, key, in_message = _legacy(raw)
        except ValueError as exc:
            spool.quarantine(raw, f"old gpio spool entry: {exc}")
            continue
        spool.add(ts, pin, message, key, time_in_message=in_message, save=False)
        moved += 1
    if isinstance(counters, dict):
        unreported = counters.get("unreported_drops", 0)
        if isinstance(unreported, int) and not isinstance(unreported, bool) and unreported > 0:
            spool.counters.unreported_drops += unreported
    spool.entries.sort(key=lambda e: e.ts)  # older than anything new: first
    spool.save()
    with contextlib.suppress(OSError):
        path.rename(path.with_name(f"{LEGACY_FILE}.migrated"))
    log.info("moved %d agent request(s) from %s into the trigger spool", moved, path)
    return moved


def _legacy(doc: Any) -> tuple[float, str, str, str, bool]:
    if not isinstance(doc, dict):
        raise ValueError(f"entry is a {type(doc).__name__}, not an object")
    ts = doc.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise ValueError(f"ts {ts!r} is not a time")
    for key in ("pin", "message", "session_key"):
        if not isinstance(doc.get(key), str):
            raise ValueError(f"{key} {doc.get(key)!r} is not a string")
    in_message = doc.get("time_in_message", True)
    if not isinstance(in_message, bool):
        raise ValueError("time_in_message is not true/false")
    return float(ts), doc["pin"], doc["message"], doc["session_key"], in_message
