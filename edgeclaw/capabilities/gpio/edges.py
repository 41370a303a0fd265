"""Edges: debounced in the event loop, timestamped, and kept in a bounded ring the node serves itself
(the gateway keeps nothing of a custom node.event, so edge history lives here)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass
class Edge:
    seq: int
    name: str
    active: bool
    state: str
    ts: float  # wall clock, seconds

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["value"] = int(self.active)
        doc["time"] = iso_time(self.ts)
        doc["ts_ms"] = int(self.ts * 1000)
        del doc["ts"]
        return doc


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


class Debouncer:
    """Leading edge + settle: the first change is reported at once, changes during the next
    `bounce_time` are held back, and when that window ends the settled level is reported if it differs.
    So a clean press costs no latency and a bouncing contact yields one edge per real transition."""

    def __init__(self, bounce_time: float, emit: Callable[[bool, float], None], initial: bool) -> None:
        self.bounce_time = bounce_time
        self._emit = emit
        self.reported = initial
        self.raw = initial
        self._raw_ts = time.time()
        self._timer: asyncio.TimerHandle | None = None

    def feed(self, active: bool, ts: float) -> None:
        self.raw = active
        self._raw_ts = ts
        if self._timer is not None:
            return  # inside the settle window: the window's end decides
        if active != self.reported:
            self._report(active, ts)

    def _report(self, active: bool, ts: float) -> None:
        self.reported = active
        if self.bounce_time > 0:
            self._timer = asyncio.get_running_loop().call_later(self.bounce_time, self._settled)
        self._emit(active, ts)

    def _settled(self) -> None:
        self._timer = None
        if self.raw != self.reported:
            self._report(self.raw, self._raw_ts)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class EdgeRing:
    """The last `size` edges with a sequence number that survives wrap-around (not restarts: the
    answer carries `boot` so a client can tell its `since` belongs to an earlier run)."""

    def __init__(self, size: int) -> None:
        self._ring: collections.deque[Edge] = collections.deque(maxlen=size)
        self.seq = 0
        self.boot = int(time.time() * 1000)

    def resize(self, size: int) -> None:
        if size != self._ring.maxlen:
            self._ring = collections.deque(self._ring, maxlen=size)

    def add(self, name: str, active: bool, state: str, ts: float) -> Edge:
        self.seq += 1
        edge = Edge(self.seq, name, active, state, ts)
        self._ring.append(edge)
        return edge

    def since(self, seq: int, *, name: str | None = None, limit: int = 100) -> dict[str, Any]:
        reset = seq > self.seq  # a `since` from an earlier run of the node: start over
        if reset:
            seq = 0
        items = [e for e in self._ring if e.seq > seq and (name is None or e.name == name)]
        oldest = self._ring[0].seq if self._ring else self.seq + 1
        lost = max(0, oldest - seq - 1) if self._ring else 0
        truncated = len(items) > limit
        items = items[:limit]
        return {
            "events": [e.to_json() for e in items],
            "latest_seq": self.seq,
            "next_since": items[-1].seq if truncated else self.seq,
            "more": truncated,
            "missed": lost,  # edges between `since` and the oldest kept one, pushed out of the ring
            "boot": self.boot,
            "reset": reset,
        }
