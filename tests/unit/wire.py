"""Load the frames captured between the real gateway (openclaw 2026.9.6) and real nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WIRE = Path(__file__).resolve().parents[1] / "fixtures" / "wire"


def records(name: str | None = None) -> list[dict[str, Any]]:
    files = [WIRE / name] if name else sorted(WIRE.glob("*.jsonl"))
    out = []
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                rec["_file"] = path.name
                out.append(rec)
    return out


def frames(name: str | None = None, direction: str | None = None) -> list[dict[str, Any]]:
    return [
        r["frame"]
        for r in records(name)
        if "frame" in r
        and (direction is None or r["dir"].endswith(direction) or r["dir"].startswith(direction))
    ]


def connect_params() -> list[dict[str, Any]]:
    return [f["params"] for f in frames() if f.get("type") == "req" and f.get("method") == "connect"]
