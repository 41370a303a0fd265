#!/usr/bin/env python3
"""What camera motion detection costs: the worker process (CPU %, RSS), the capture under it (ffmpeg on
the simulated camera: reading and scaling the scene picture, a stand-in for a real camera's decode), and
the daemon side (the watcher parsing the worker's lines on the event loop, in this process), for a
window of wall time with the simulated scene changing every few seconds. Also the detector's own Python
time per frame, measured without processes.

    python bench/motion.py [--seconds 20]

Needs ffmpeg. Prints a table; state the CPU with it (printed at the top).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeclaw.capabilities.camera import Config  # noqa: E402
from edgeclaw.capabilities.camera.motion import MotionError, MotionSettings, MotionWatcher, rss_bytes  # noqa: E402
from edgeclaw.capabilities.camera.motion_worker import Detector  # noqa: E402

CASES = ((160, 120, 2.0), (320, 240, 5.0))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def detector_ms(w: int, h: int, frames: int = 100) -> float:
    det = Detector(w, h, sensitivity=0.1, min_area=0.02, fps=2.0)
    table = bytes(100 + b % 25 - 12 for b in range(256))
    pics = [random.randbytes(w * h).translate(table) for _ in range(8)]
    for p in pics:
        det.feed(p)
    t = time.perf_counter()
    for i in range(frames):
        det.feed(pics[i % len(pics)])
    return (time.perf_counter() - t) / frames * 1000


async def move_walker(runtime: Path, x: float) -> None:
    """Change the scene from another process, so its rendering is not counted as the daemon's CPU."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        "-m",
        "edgeclaw.capabilities.camera.simscene",
        str(runtime),
        "place",
        "walker",
        f"{x}",
        "0.2",
        "0.3",
        "0.6",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    await asyncio.wait_for(proc.wait(), 10)


async def measure(w: int, h: int, fps: float, seconds: float, runtime: Path) -> dict[str, float]:
    events: list[object] = []
    settings = MotionSettings(width=w, height=h, fps=fps, cooldown_s=0.0, heartbeat_s=5.0)
    camera = Config(enabled=True, simulated_width=640, simulated_height=480)
    watcher = MotionWatcher(settings, camera, events.append, simulated=True, runtime_dir=str(runtime))
    task = asyncio.ensure_future(watcher.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while watcher.stats()["frames"] < fps * 3 and loop.time() < end and not task.done():
        await asyncio.sleep(0.1)
    stats = watcher.stats()
    worker, capture = stats["worker_pid"], stats["capture_pid"]
    if task.done() or worker is None or capture is None:
        raise SystemExit(f"the motion worker did not start: {task.exception() if task.done() else stats}")
    w0, c0, d0, f0, t0 = cpu_s(worker), cpu_s(capture), time.process_time(), stats["frames"], time.monotonic()
    changes = 0
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(3.0)
        changes += 1
        x = 0.1 + 0.5 * (changes % 2)
        await move_walker(runtime, x)
    wall = time.monotonic() - t0
    w1, c1, d1 = cpu_s(worker), cpu_s(capture), time.process_time()
    stats = watcher.stats()
    out = {
        "frames": stats["frames"] - f0,
        "worker_cpu": (w1 - w0) / wall * 100,
        "worker_rss": (rss_bytes(worker) or 0) / 2**20,
        "capture_cpu": (c1 - c0) / wall * 100,
        "capture_rss": (rss_bytes(capture) or 0) / 2**20,
        "daemon_cpu": (d1 - d0) / wall * 100,
        "detections": len(events),
        "changes": changes,
    }
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, MotionError):
        await task
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; {args.seconds:g} s each"
    )
    print("CPU % is of one core. capture = ffmpeg streaming the simulated scene (640x480 picture, scaled).")
    print("daemon = this process: the watcher reading and parsing the worker's lines on the event loop.\n")
    head = (
        f"{'analysis':>13} | {'py ms/frame':>11} | {'frames':>6} | {'worker CPU':>10} | {'worker RSS':>10} | "
        f"{'capture CPU':>11} | {'capture RSS':>11} | {'daemon CPU':>10} | {'detections':>10}"
    )
    print(head)
    print("-" * len(head))
    for w, h, fps in CASES:
        with tempfile.TemporaryDirectory(prefix="edgeclaw-motion-bench-") as tmp:
            r = await measure(w, h, fps, args.seconds, Path(tmp))
        print(
            f"{f'{w}x{h}@{fps:g}':>13} | {detector_ms(w, h):>11.2f} | {r['frames']:>6} | "
            f"{r['worker_cpu']:>9.2f}% | {r['worker_rss']:>7.1f} MB | {r['capture_cpu']:>10.2f}% | "
            f"{r['capture_rss']:>8.1f} MB | {r['daemon_cpu']:>9.3f}% | "
            f"{r['detections']:>3} of {r['changes']:<3}"
        )


if __name__ == "__main__":
    asyncio.run(main())
