"""Node-side cost of a trivial invoke (`system.which`): the real NodeRunner with the system capability
(tests/unit/nodeharness.py `running_node`) runs alone in a child interpreter pinned to one core, and the fake
gateway (tests/support/fakegateway.py) drives it from this process, on another core when there is one. The
child's own CPU time (/proc) over the run is the node-side cost: WebSocket framing, JSON, dispatch, handler,
result — everything the node does for one invoke, nothing the gateway does. Prints one JSON object; run by
bench/compare.py, or alone:

    PYTHONPATH=. python bench/_overhead.py --invokes 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nodes import tree_cpu_s

PARAMS = {"bins": ["sh"]}


async def until_results(gw: FakeGateway, count: int) -> None:
    loop = asyncio.get_running_loop()
    while len(gw.results) < count:
        waiter: asyncio.Future[None] = loop.create_future()
        gw._result_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, 30)
        finally:
            gw._result_waiters.remove(waiter)


async def pipelined(gw: FakeGateway, node_pid: int, n: int, window: int) -> tuple[float, float, int]:
    """n invokes with `window` in flight; returns (wall s, the node's CPU s, errors)."""
    gw.results.clear()
    wall0, cpu0 = time.perf_counter(), tree_cpu_s(node_pid)
    sent = 0
    while len(gw.results) < n:
        while sent < n and sent - len(gw.results) < window:
            await gw.invoke("system.which", PARAMS)
            sent += 1
        await until_results(gw, min(n, len(gw.results) + 1))
    wall, cpu = time.perf_counter() - wall0, tree_cpu_s(node_pid) - cpu0
    return wall, cpu, sum(1 for r in gw.results if not r.get("ok"))


async def sequential(gw: FakeGateway, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        gw.results.clear()
        t = time.perf_counter()
        await gw.invoke("system.which", PARAMS)
        await until_results(gw, 1)
        samples.append(time.perf_counter() - t)
        assert gw.results[0].get("ok"), gw.results[0]
    return samples


async def serve_node(port: int) -> None:
    """Child: the node in-process against the fake gateway on `port`, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with running_node(Path(tempfile.mkdtemp(prefix="bench-overhead-")), FakeGateway(port=port)):
        await stop.wait()


async def main(invokes: int, window: int, cores: list[int]) -> dict[str, Any]:
    gw = FakeGateway(tick_interval_ms=30_000)
    await gw.start()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-node", str(gw.port)], stdin=subprocess.DEVNULL
    )
    try:
        os.sched_setaffinity(child.pid, {cores[0]})
        await gw.wait_hello(1, timeout=60)
        await asyncio.sleep(0.5)  # let the post-hello publishing (plugin tools, skills) finish
        await pipelined(gw, child.pid, min(2000, invokes), window)  # warm-up
        wall, cpu, errors = await pipelined(gw, child.pid, invokes, window)
        seq = await sequential(gw, min(2000, invokes))
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
        await gw.stop()
    return {
        "invokes": invokes,
        "window": window,
        "node_cpu_us_per_invoke": cpu / invokes * 1e6,
        "invokes_per_s": invokes / wall,
        "errors": errors,
        "sequential_round_trip_p50_us": statistics.median(seq) * 1e6,
        "node_core": cores[0],
        "driver_core": cores[-1],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--invokes", type=int, default=20000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--serve-node", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_node is not None:
        asyncio.run(serve_node(args.serve_node))
    else:
        allowed = sorted(os.sched_getaffinity(0))
        cores = [allowed[0], allowed[-1]]  # node on the first core, the driver on another when there is one
        os.sched_setaffinity(0, {cores[-1]})
        print(json.dumps(asyncio.run(main(args.invokes, args.window, cores))))
