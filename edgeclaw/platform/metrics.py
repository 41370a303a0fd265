"""Bus events → Prometheus series, rendered in the text exposition format (0.0.4) by hand.

No client library: prometheus_client costs several MB of RSS for what is a few dicts and a string join.
Label values that come from the gateway (command names, error codes) are capped so a flood of bogus
commands cannot grow the series without bound.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeclaw.platform import events

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
MAX_LABEL_VALUES = 64
OVERFLOW_LABEL = "other"
PAIRING_STATES = ("unknown", "device-pending", "surface-pending", "approved")


@dataclass
class _Histogram:
    bounds: tuple[float, ...] = DURATION_BUCKETS
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1


class LoopLag:
    """Event-loop lag samples (how late a timer fired): the last one, a cumulative histogram for
    Prometheus (the distribution over any window is the difference of two scrapes) and the last `keep`
    samples for the quantiles `edgeclaw status` shows."""

    def __init__(self, keep: int = 600) -> None:
        self.last = 0.0
        self.max = 0.0
        self.hist = _Histogram(bounds=LAG_BUCKETS)
        self.recent: deque[float] = deque(maxlen=keep)
        self._recent_since: deque[float] = deque(maxlen=keep)

    def observe(self, lag_s: float, now: float | None = None) -> None:
        lag_s = max(0.0, lag_s)
        self.last = lag_s
        self.max = max(self.max, lag_s)
        self.hist.observe(lag_s)
        self.recent.append(lag_s)
        self._recent_since.append(time.monotonic() if now is None else now)

    def summary(self) -> dict[str, float]:
        """Quantiles over the recent samples, in milliseconds (nearest-rank)."""
        if not self.recent:
            return {}
        ordered = sorted(self.recent)
        n = len(ordered)

        def rank(q: float) -> float:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

        return {
            "last_ms": round(1000 * self.last, 2),
            "p50_ms": round(1000 * rank(0.50), 2),
            "p99_ms": round(1000 * rank(0.99), 2),
            "max_ms": round(1000 * ordered[-1], 2),
            "samples": n,
            "window_s": round(self._recent_since[-1] - self._recent_since[0], 1),
        }


@dataclass
class Snapshot:
    """What the collector cannot learn from events: read at render time."""

    pairing: str = "unknown"
    invokes_in_flight: int = 0
    withheld_commands: int = 0
    rss_bytes: int | None = None
    loop_lag_s: float | None = None
    loop_lag: LoopLag | None = None
    triggers: dict[str, Any] | None = None  # the triggers capability's status report


class Metrics:
    """A bus subscriber that keeps the node's counters; `render()` gives the exposition text."""

    def __init__(self, *, node_id: str, version: str, started_at: float | None = None) -> None:
        self.node_id = node_id
        self.version = version
        self.started_at = time.time() if started_at is None else started_at
        self.invokes: dict[tuple[str, str], int] = {}
        self.durations: dict[tuple[str, ...], _Histogram] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.exceptions: dict[str, int] = {}
        self.connect_attempts = 0
        self.reconnects = 0
        self.connected = 0
        self.last_hello_ok: float | None = None
        self.loop_lag_events = 0
        self.child_restarts: dict[str, int] = {}  # by supervised child (our own names: bounded)
        self._labels: dict[str, set[str]] = {"command": set(), "code": set()}

    def _label(self, kind: str, value: Any) -> str:
        text = value if isinstance(value, str) and value else "?"
        seen = self._labels[kind]
        if text in seen:
            return text
        if len(seen) >= MAX_LABEL_VALUES:
            return OVERFLOW_LABEL
        seen.add(text)
        return text

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        if name == events.INVOKE_STOP:
            command = self._label("command", fields.get("command"))
            outcome = str(fields.get("outcome") or "ok")
            key = (command, outcome)
            self.invokes[key] = self.invokes.get(key, 0) + 1
            duration = fields.get("duration_s")
            if isinstance(duration, (int, float)) and math.isfinite(duration):
                self.durations.setdefault(key, _Histogram()).observe(max(0.0, float(duration)))
            if outcome == "error":
                ekey = (command, self._label("code", fields.get("code") or "UNKNOWN"))
                self.errors[ekey] = self.errors.get(ekey, 0) + 1
        elif name == events.INVOKE_EXCEPTION:
            command = self._label("command", fields.get("command"))
            self.exceptions[command] = self.exceptions.get(command, 0) + 1
        elif name == events.CONNECT:
            self.connect_attempts += 1
        elif name == events.HELLO_OK:
            self.connected = 1
            self.last_hello_ok = time.time()
        elif name == events.DISCONNECT:
            self.connected = 0
            self.reconnects += 1
        elif name == events.LOOP_LAG:
            self.loop_lag_events += 1
        elif name == events.CHILD_RESTART:
            child = str(fields.get("child") or "?")
            self.child_restarts[child] = self.child_restarts.get(child, 0) + 1

    def render(self, snap: Snapshot) -> str:
        out: list[str] = []
        info = {"version": self.version, "node_id": self.node_id}
        _family(out, "edgeclaw_info", "gauge", "EdgeClaw node identity; always 1.", [(info, 1)])
        _family(
            out,
            "edgeclaw_start_time_seconds",
            "gauge",
            "When the node process started (Unix time).",
            [({}, self.started_at)],
        )
        _family(
            out,
            "edgeclaw_connected",
            "gauge",
            "1 while a gateway session is up (after hello-ok).",
            [({}, self.connected)],
        )
        _family(
            out,
            "edgeclaw_connect_attempts_total",
            "counter",
            "Connection attempts to the gateway.",
            [({}, self.connect_attempts)],
        )
        _family(
            out,
            "edgeclaw_reconnects_total",
            "counter",
            "Gateway sessions that ended (each is followed by a reconnect unless the node stops).",
            [({}, self.reconnects)],
        )
        if self.last_hello_ok is not None:
            _family(
                out,
                "edgeclaw_last_hello_ok_timestamp_seconds",
                "gauge",
                "When the last gateway session was established (Unix time).",
                [({}, self.last_hello_ok)],
            )
        pairing = snap.pairing if snap.pairing in PAIRING_STATES else "unknown"
        _family(
            out,
            "edgeclaw_pairing_state",
            "gauge",
            "Pairing state: 1 for the current state, else 0.",
            [({"state": s}, int(s == pairing)) for s in PAIRING_STATES],
        )
        _family(
            out,
            "edgeclaw_withheld_commands",
            "gauge",
            "Declared commands the gateway withholds (not in gateway.nodes.commands.allow).",
            [({}, snap.withheld_commands)],
        )
        _family(
            out, "edgeclaw_invokes_in_flight", "gauge", "Invokes running now.", [({}, snap.invokes_in_flight)]
        )
        _family(
            out,
            "edgeclaw_invokes_total",
            "counter",
            "Finished invokes by command and outcome (ok, error, cancelled).",
            [({"command": c, "outcome": o}, n) for (c, o), n in sorted(self.invokes.items())],
        )
        _histograms(
            out,
            self.durations,
            "edgeclaw_invoke_duration_seconds",
            "Invoke duration from request to result, by command and outcome.",
            ("command", "outcome"),
        )
        _family(
            out,
            "edgeclaw_invoke_errors_total",
            "counter",
            "Invokes that failed, by command and error code.",
            [({"command": c, "code": k}, n) for (c, k), n in sorted(self.errors.items())],
        )
        _family(
            out,
            "edgeclaw_invoke_exceptions_total",
            "counter",
            "Handler crashes (INTERNAL_ERROR) by command.",
            [({"command": c}, n) for c, n in sorted(self.exceptions.items())],
        )
        if snap.rss_bytes is not None:
            _family(
                out,
                "edgeclaw_resident_memory_bytes",
                "gauge",
                "Resident memory of the node process.",
                [({}, snap.rss_bytes)],
            )
        if snap.loop_lag_s is not None:
            _family(
                out,
                "edgeclaw_event_loop_lag_seconds",
                "gauge",
                "Event-loop lag at the last sample.",
                [({}, snap.loop_lag_s)],
            )
        if snap.loop_lag is not None:
            _histograms(
                out,
                {(): snap.loop_lag.hist},
                "edgeclaw_event_loop_lag_observed_seconds",
                "Event-loop lag samples (every 0.5 s; every 50 ms while invokes run).",
                (),
            )
        _family(
            out,
            "edgeclaw_event_loop_lag_events_total",
            "counter",
            "Event-loop stalls longer than 1 s.",
            [({}, self.loop_lag_events)],
        )
        _family(
            out,
            "edgeclaw_supervisor_restarts_total",
            "counter",
            "Restarts of a supervised long-lived task after it failed.",
            [({"child": c}, n) for c, n in sorted(self.child_restarts.items())],
        )
        if snap.triggers:
            _trigger_families(out, snap.triggers)
        return "\n".join(out) + "\n"


def _trigger_families(out: list[str], report: dict[str, Any]) -> None:
    """Per trigger (names come from the config: bounded): fires, suppressions, last and next fire; and
    the spool's depth and drops."""
    rows = report.get("triggers") or {}
    for metric, key, kind, help_text in (
        ("edgeclaw_trigger_fires_total", "fired", "counter", "Trigger fires admitted (since start)."),
        (
            "edgeclaw_trigger_suppressed_total",
            "suppressed",
            "counter",
            "Trigger fires suppressed by cooldown or rate limit (since start).",
        ),
        (
            "edgeclaw_trigger_last_fire_timestamp_seconds",
            "last_fire_ts",
            "gauge",
            "When the trigger last fired (Unix time).",
        ),
        (
            "edgeclaw_trigger_next_fire_timestamp_seconds",
            "next_fire_ts",
            "gauge",
            "When a schedule trigger fires next (Unix time).",
        ),
    ):
        samples = [
            ({"trigger": name}, row[key])
            for name, row in sorted(rows.items())
            if isinstance(row, dict) and isinstance(row.get(key), (int, float))
        ]
        if samples:
            _family(out, metric, kind, help_text, samples)
    spool = report.get("spool") or {}
    if spool:
        _family(
            out,
            "edgeclaw_trigger_spool_pending",
            "gauge",
            "agent.requests waiting in the on-disk trigger spool.",
            [({}, int(spool.get("pending", 0)))],
        )
        _family(
            out,
            "edgeclaw_trigger_spool_dropped_total",
            "counter",
            "Spooled agent.requests dropped, by reason.",
            [
                ({"reason": reason}, int(spool.get(f"dropped_{reason}", 0)))
                for reason in ("expired", "overflow", "rejected")
            ]
            + [({"reason": "quarantined"}, int(spool.get("quarantined", 0)))],
        )


def _histograms(
    out: list[str],
    histograms: dict[tuple[str, ...], _Histogram],
    name: str,
    help_text: str,
    label_names: tuple[str, ...],
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} histogram")
    for key, hist in sorted(histograms.items()):
        labels = dict(zip(label_names, key, strict=True))
        for bound, count in zip(hist.bounds, hist.buckets, strict=True):
            out.append(f"{name}_bucket{_labels({**labels, 'le': _num(bound)})} {count}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {hist.count}")
        out.append(f"{name}_sum{_labels(labels)} {_num(hist.total)}")
        out.append(f"{name}_count{_labels(labels)} {hist.count}")


def _family(
    out: list[str], name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{_labels(labels)} {_num(value)}")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))
