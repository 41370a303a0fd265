"""Benchmark a contained system.run next to the in-process one: spawn → exit p50/p99, and whether 20
concurrent contained runs keep answering while system.which stays prompt.

Run: PYTHONPATH=. python bench/contained_run.py [--runs 100]
Without a systemd here, the contained path is measured through a stand-in for edgeclaw-run.socket that
starts the real runhost per connection (as systemd does with Accept=yes, minus the unit's own start-up:
add systemd's fork+cgroup+sandbox setup, measured in tests/systemd/test_contained_run.py's round trip).
With --socket PATH it talks to a real edgeclaw-run.socket instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgeclaw.capabilities.base import InvokeContext
from edgeclaw.capabilities.shell.contained import run_contained
from edgeclaw.capabilities.shell.process import run_process
from edgeclaw.capabilities.system.which import handle_which

ROOT = Path(__file__).resolve().parents[1]


def stand_in(path: str, stop: threading.Event) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(0.2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": tempfile.gettempdir()}
    hosts: list[subprocess.Popen[bytes]] = []
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            cmd = [sys.executable, "-m", "edgeclaw.capabilities.shell.runhost"]
            hosts.append(subprocess.Popen(cmd, stdin=conn.fileno(), env=env))
        hosts = [h for h in hosts if h.poll() is None]
    server.close()
    for h in hosts:
        h.wait(10)


def pct(samples: list[float]) -> str:
    s = sorted(samples)
    return f"p50 {statistics.median(s) * 1000:.1f} ms, p99 {s[min(len(s) - 1, int(len(s) * 0.99))] * 1000:.1f} ms"


async def one(argv: list[str], sock: str | None) -> float:
    loop = asyncio.get_running_loop()
    kw = dict(cwd=None, env=dict(os.environ), timeout=None, deadline=loop.time() + 60, cap=200_000, grace=1.0)
    t = time.perf_counter()
    result = await (run_contained(argv, path=sock, **kw) if sock else run_process(argv, **kw))  # type: ignore[arg-type]
    assert result.exit_code == 0, result
    return time.perf_counter() - t


async def which_latency(stop: asyncio.Event) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    while not stop.is_set():
        t = time.perf_counter()
        await handle_which(InvokeContext("b", "system.which", {"bins": ["sh"]}, loop.time() + 5, 5000))
        out.append(time.perf_counter() - t)
        await asyncio.sleep(0.02)
    return out


async def main(runs: int, sock: str) -> None:
    inproc = [await one(["true"], None) for _ in range(runs)]
    print(f"in-process spawn -> exit `true`: {pct(inproc)} over {runs} runs")
    contained = [await one(["true"], sock) for _ in range(runs)]
    print(f"contained  spawn -> exit `true`: {pct(contained)} over {runs} runs")
    stop = asyncio.Event()
    probe = asyncio.ensure_future(which_latency(stop))
    t = time.perf_counter()
    took = await asyncio.gather(*(one(["sleep", "0.5"], sock) for _ in range(20)))
    wall = time.perf_counter() - t
    stop.set()
    lat = await probe
    print(
        f"20 concurrent contained `sleep 0.5`: all answered in {wall:.2f} s (each {pct(list(took))}); "
        f"system.which meanwhile {pct(lat)}, max {max(lat) * 1000:.1f} ms over {len(lat)} calls"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--socket", default=None, help="a real edgeclaw-run.socket (default: a stand-in)")
    args = parser.parse_args()
    if args.socket:
        asyncio.run(main(args.runs, args.socket))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "run.sock")
            stop = threading.Event()
            thread = threading.Thread(target=stand_in, args=(path, stop), daemon=True)
            thread.start()
            time.sleep(0.1)
            try:
                asyncio.run(main(args.runs, path))
            finally:
                stop.set()
                thread.join(15)
