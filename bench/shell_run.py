"""Benchmark the shell capability's process runner: spawn overhead, capture of large outputs, memory.

Run: PYTHONPATH=. python bench/shell_run.py [--runs 200]
Prints p50/p99 wall time for `true`, the time to swallow 10 MB and 100 MB of output (capped at 200 kB),
and the process's peak RSS growth during those captures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time

from edgeclaw.capabilities.shell.process import run_process


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def one(argv: list[str]) -> float:
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    await run_process(
        argv, cwd=None, env=dict(os.environ), timeout=None, deadline=loop.time() + 120, cap=200_000, grace=1.0
    )
    return time.perf_counter() - t


async def main(runs: int) -> None:
    samples = sorted([await one(["true"]) for _ in range(runs)])
    p50 = statistics.median(samples) * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    print(f"spawn+reap `true`: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {runs} runs")
    concurrent = time.perf_counter()
    await asyncio.gather(*(one(["sleep", "0.2"]) for _ in range(20)))
    print(f"20 x `sleep 0.2` at once (no limiter here): {time.perf_counter() - concurrent:.2f} s")
    base = peak_rss_kb()
    for mb in (10, 100):
        took = await one(["sh", "-c", f"head -c {mb * 1_000_000} /dev/zero"])
        print(f"{mb} MB of stdout captured (200 kB kept): {took:.2f} s, peak RSS +{peak_rss_kb() - base} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
