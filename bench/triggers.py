#!/usr/bin/env python3
"""What triggers cost and how fast they are, on a simulated board (gpiozero MockFactory driven over the
simulation socket, the simulated camera really encoding JPEGs with ffmpeg):

1. press → gateway: the time from a simulated button press to the gateway receiving the agent.request,
   for a text-only trigger and for one that snaps a photo first (median / p95 over N presses). The
   gateway is tests/support/fakegateway.py in this process (timing only: it answers at once and never
   runs an agent; interoperability is tested against the real gateway in tests/gateway).
2. idle cost over a window of wall time: the daemon's RSS and CPU % with (i) a gpio trigger and a
   schedule trigger, (ii) a camera_motion trigger, whose worker process and the capture under it
   (ffmpeg reading the simulated scene) are reported separately from the daemon.

    PYTHONPATH=. python bench/triggers.py [--presses 20] [--seconds 20]

Prints a table, with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._nodes import _stat_fields, rss_kb, tree_pids  # noqa: E402
from edgeclaw.capabilities.gpio.simctl import sim_request  # noqa: E402
from tests.support.fakegateway import FakeGateway  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PINS = {"doorbell": {"pin": "GPIO22", "kind": "button", "bounce_time": 0.02}}


class TimedGateway(FakeGateway):
    """The fake gateway, noting when each agent.request arrives (wall clock, as the press is)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, dict[str, Any]]] = []

    async def _on_message(self, ws: Any, message: Any) -> None:
        now = time.time()
        frame = json.loads(message)
        params = frame.get("params") or {}
        if frame.get("method") == "node.event" and params.get("event") == "agent.request":
            self.arrivals.append((now, json.loads(params.get("payloadJSON") or "{}")))
        await super()._on_message(ws, message)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_ticks(pid: int) -> int:
    try:
        fields = _stat_fields(pid)
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def role(pid: int, daemon: int) -> str:
    if pid == daemon:
        return "daemon"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = b" ".join(argv)
    if b"motion_worker" in text:
        return "motion worker"
    if b"ffmpeg" in argv[0] or b"rpicam" in argv[0]:
        return "capture (ffmpeg)"
    return "other child"


def start_node(base: Path, gw: FakeGateway, sections: dict[str, Any]) -> NodeProcess:
    node = NodeProcess(
        base, None, name="bench-triggers", url=gw.url, extra={**sections, "log": {"level": "info"}}
    )
    token = Path(node.config["gateway"]["token_file"])
    token.write_text(gw.token + "\n")
    token.chmod(0o600)
    node.start()
    return node


async def until(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def connected(node: NodeProcess) -> bool:
    return node.live_status().get("connection") == "connected"


async def press_latency(base: Path, presses: int, snap: bool) -> list[float]:
    gw = TimedGateway()
    await gw.start()
    rule: dict[str, Any] = {
        "source": {"gpio": {"pin": "doorbell"}},
        "message": "ring {seq}",
        "session_key": "bench",
    }
    if snap:
        rule["actions"] = [{"snap": {"max_width": 640, "quality": 80}}]
    sections = {
        "gpio": {"enabled": True, "pins": PINS},
        "camera": {"enabled": True, "default_delay_ms": 0},
        "triggers": {"rules": {"doorbell": rule}},
    }
    node = start_node(base, gw, sections)
    try:
        await until(lambda: connected(node), 60, "the node connected")
        await asyncio.sleep(2)
        pressed: list[float] = []
        for _ in range(presses):
            before = len(gw.arrivals)
            pressed.append(time.time())
            await asyncio.to_thread(
                sim_request, node.runtime_dir, {"op": "drive", "name": "doorbell", "active": True}
            )
            await asyncio.to_thread(
                sim_request, node.runtime_dir, {"op": "drive", "name": "doorbell", "active": False}
            )
            await until(lambda b=before: len(gw.arrivals) > b, 30, "the agent.request")
            await asyncio.sleep(0.3)
        got = [(t, p) for t, p in gw.arrivals]
        if len(got) != presses or any("attachments" in p for _, p in got) != snap:
            raise RuntimeError(f"expected {presses} single requests (photos: {snap}), got {len(got)}")
        return [(t - p0) * 1000 for (t, _), p0 in zip(got, pressed, strict=True)]
    finally:
        node.stop()
        await gw.stop()


async def idle_cost(base: Path, sections: dict[str, Any], seconds: float, *, motion: bool) -> dict[str, Any]:
    gw = TimedGateway()
    await gw.start()
    node = start_node(base, gw, sections)
    try:
        await until(lambda: connected(node), 60, "the node connected")
        if motion:
            await until(
                lambda: any(role(p, node.pid) == "motion worker" for p in tree_pids(node.pid)), 30, "worker"
            )
        await asyncio.sleep(5)  # start-up settles (imports, first frames, first status writes)
        pids = tree_pids(node.pid)
        start = {p: cpu_ticks(p) for p in pids}
        t0 = time.monotonic()
        rss: dict[str, list[float]] = {}
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(1.0)
            sample: dict[str, float] = {}
            for p in tree_pids(node.pid):
                r = role(p, node.pid)
                sample[r] = sample.get(r, 0.0) + rss_kb(p) / 1024
            for r, mb in sample.items():
                rss.setdefault(r, []).append(mb)
        wall = time.monotonic() - t0
        cpu: dict[str, float] = {}
        for p in tree_pids(node.pid):
            r = role(p, node.pid)
            cpu[r] = cpu.get(r, 0.0) + (cpu_ticks(p) - start.get(p, 0)) / TICK
        status = node.live_status().get("capabilities", {}).get("triggers", {})
        return {
            "cpu_pct": {r: 100 * s / wall for r, s in cpu.items()},
            "rss_mb": {r: statistics.median(v) for r, v in rss.items()},
            "status": status,
            "wall": wall,
        }
    finally:
        node.stop()
        await gw.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presses", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_model()}; load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
        f"Python {platform.python_version()}"
    )
    print(
        "gateway: tests/support/fakegateway.py in this process (timing only; the real gateway is in tests/gateway)"
    )
    with tempfile.TemporaryDirectory(prefix="edgeclaw-bench-triggers-") as tmp:
        base = Path(tmp)
        print(f"\n1. simulated press → gateway receives agent.request ({args.presses} presses each)")
        print(f"   {'trigger':<34} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
        for snap in (False, True):
            lat = await press_latency(base / f"press-{snap}", args.presses, snap)
            label = "gpio → text only" if not snap else "gpio → camera.snap 640 px → photo"
            print(f"   {label:<34} {statistics.median(lat):>10.1f} {pct(lat, 0.95):>8.1f} {max(lat):>8.1f}")

        gpio_sched = {
            "gpio": {"enabled": True, "pins": PINS},
            "camera": {"enabled": True},
            "triggers": {
                "rules": {
                    "doorbell": {"source": {"gpio": {"pin": "doorbell"}}, "message": "ring"},
                    "hourly": {"source": {"schedule": {"every_s": 3600}}, "message": "hourly check"},
                }
            },
        }
        motion = {
            "camera": {"enabled": True},
            "triggers": {
                "rules": {
                    "porch": {
                        "source": {"camera_motion": {"width": 160, "height": 120, "fps": 2}},
                        "actions": [{"snap": {"max_width": 640}}],
                        "message": "motion on the porch",
                    }
                }
            },
        }
        print(f"\n2. idle over {args.seconds:.0f} s (median RSS of 1 s samples; CPU % of one core)")
        print(f"   {'case':<40} {'process':<18} {'RSS MB':>7} {'CPU %':>6}")
        for label, sections, is_motion in (
            ("(i) gpio + schedule triggers", gpio_sched, False),
            ("(ii) camera_motion 160x120 @ 2 fps", motion, True),
        ):
            res = await idle_cost(base / label[:4].strip("() "), sections, args.seconds, motion=is_motion)
            for r in ("daemon", "motion worker", "capture (ffmpeg)", "other child"):
                if r in res["rss_mb"] or r in res["cpu_pct"]:
                    print(
                        f"   {label:<40} {r:<18} {res['rss_mb'].get(r, 0.0):>7.1f} {res['cpu_pct'].get(r, 0.0):>6.2f}"
                    )
                    label = ""
            if is_motion:
                m = next(iter((res["status"].get("motion") or {}).values()), {})
                print(f"   {'':<40} (watcher: {m.get('frames')} frames, {m.get('detections')} detections)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
