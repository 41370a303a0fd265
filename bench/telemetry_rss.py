"""What telemetry costs in resident memory: each variant runs in a fresh interpreter that imports the
daemon's modules, then (optionally) telemetry, renders a realistic set of series, and reports VmRSS.

    python bench/telemetry_rss.py            # median of 5 runs per variant, in MB

Variants: the daemon without telemetry; with EdgeClaw's hand-written exposition (+ /metrics server);
and, for comparison, with prometheus_client doing the same job (install it to see that row).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASE = """
import edgeclaw.node.daemon, edgeclaw.capabilities.registry
edgeclaw.capabilities.registry.load_capability_modules()
"""
OURS = (
    BASE
    + """
import edgeclaw.platform.telemetry as t, edgeclaw.platform.metrics_http
from edgeclaw.config import TelemetryConfig
from edgeclaw.platform.events import EventBus
bus = EventBus()
tel = t.Telemetry(TelemetryConfig(textfile=None), bus, node_id="n", version="v",
                  snapshot=lambda: {"pairing": "approved"}, loop_lag=lambda: 0.0)
for i in range(2000):
    bus.emit("invoke_stop", command=f"cmd.{i % 12}", invoke_id=str(i), duration_s=i / 1000,
             outcome="ok" if i % 7 else "error", code="X")
text = tel.render()
"""
)
PROM = (
    BASE
    + """
import prometheus_client as pc
reg = pc.CollectorRegistry()
inv = pc.Counter("edgeclaw_invokes", "x", ["command", "outcome"], registry=reg)
dur = pc.Histogram("edgeclaw_invoke_duration_seconds", "x", ["command", "outcome"], registry=reg)
for i in range(2000):
    o = "ok" if i % 7 else "error"
    inv.labels(f"cmd.{i % 12}", o).inc(); dur.labels(f"cmd.{i % 12}", o).observe(i / 1000)
text = pc.generate_latest(reg)
"""
)
REPORT = """
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]))
"""


def rss_kb(code: str) -> int | None:
    out = subprocess.run(
        [sys.executable, "-c", code + REPORT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    if out.returncode != 0:
        return None
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    runs = 5
    base = None
    for name, code in (
        ("daemon modules, no telemetry", BASE),
        ("+ edgeclaw telemetry", OURS),
        ("+ prometheus_client instead", PROM),
    ):
        samples = [rss_kb(code) for _ in range(runs)]
        if any(s is None for s in samples):
            print(f"{name:32} (not available)")
            continue
        median = statistics.median(s for s in samples if s is not None)
        base = base if base is not None else median
        print(f"{name:32} {median / 1024:6.1f} MB  (+{(median - base) / 1024:.2f} MB)")


if __name__ == "__main__":
    main()
