"""EdgeClaw next to OpenClaw's own node host (`openclaw node run`), both against the same real gateway on
loopback, in the same run; prints a Markdown table with the machine it ran on.

    bench/run.sh compare            # full run (≈ 15–25 min on a 2-core box)
    bench/run.sh compare --quick    # smoke: 3 starts, 15 s idle, 200 invokes, short leak run (≈ 5 min)

How each figure is taken (same method for both nodes):
- start → hello-ok: the node is already paired; spawn time (wall clock) to the `connectedAtMs` the gateway
  reports for it in `node.list`, read by an operator WebSocket client polling every 50 ms. Median of N.
- idle RSS / CPU: sum of VmRSS and of utime+stime over the node's whole process tree (/proc), both nodes
  connected and idle at the same time, RSS read after the idle window.
- round-trip: `node.invoke system.which {"bins":["sh"]}` from an operator WebSocket client, one at a time,
  alternating between the two nodes.
- throughput: the same invoke with 50 in flight from one operator connection.
- leak run (EdgeClaw): the node's link runs through a loopback proxy that cuts it after every batch of
  invokes; RSS of the tree after a warm-up vs after the run.
- node-side overhead (EdgeClaw): bench/_overhead.py — the node alone on one core, driven by the in-process
  fake gateway from another process; its own CPU time per invoke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nodes import (
    CutProxy,
    OpenClawNodeHost,
    loadavg,
    machine,
    tree_cpu_s,
    tree_rss_mb,
    wait_until,
)

from tests.support.gateway import Gateway, Operator, install_gateway, only_loopback
from tests.support.node import NodeProcess

WHICH = {"bins": ["sh"]}


@dataclass
class Figures:
    starts: list[float] = field(default_factory=list)
    idle_rss: float = 0.0
    procs: int = 0
    idle_cpu: float = 0.0
    rt: list[float] = field(default_factory=list)
    rt_errors: int = 0
    tput_invokes: int = 0
    tput_seconds: float = 0.0
    tput_errors: int = 0

    @property
    def tput(self) -> float:
        return self.tput_invokes / self.tput_seconds if self.tput_seconds else 0.0


@dataclass
class Contender:
    """One node under test: how to start/stop it, its node id, its process-tree root."""

    label: str
    start: Callable[[], None]
    stop: Callable[[], None]
    pid: Callable[[], int]
    node_id: str = ""
    figures: Figures = field(default_factory=Figures)


def setup_code(gw: Gateway) -> str:
    doc = gw.call(
        "device.pair.setupCode",
        {"bootstrapProfile": "node", "publicUrl": gw.url, "includeQr": False, "joinUrl": True},
    )
    return str(doc["setupCode"])


async def node_entry(op: Operator, node_id: str) -> dict[str, Any]:
    frame = await op.call("node.list", {})
    for entry in frame.get("payload", {}).get("nodes", []):
        if entry.get("nodeId") == node_id:
            return dict(entry)
    return {}


async def poll(pred: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if value := await pred():
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout} s")


async def invoke_ok(op: Operator, node_id: str, timeout: float = 60.0) -> None:
    """One successful invoke, retrying what the gateway calls retryable (e.g. PAIRING_CHANGED right after a
    connect) and 'not connected yet'."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await op.invoke(node_id, "system.which", WHICH, timeout_ms=10_000)
        if last.get("ok"):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no successful invoke within {timeout} s: {last}")


async def measure_starts(op: Operator, c: Contender, n: int, timeout: float) -> None:
    for _ in range(n):
        c.stop()
        await poll(lambda: _disconnected(op, c.node_id), 60, f"{c.label} seen disconnected")
        t0 = time.time()
        c.start()
        entry = await poll(partial(_connected_since, op, c.node_id, t0), timeout, f"{c.label} connected")
        c.figures.starts.append(entry["connectedAtMs"] / 1000 - t0)


async def _disconnected(op: Operator, node_id: str) -> bool:
    return not (await node_entry(op, node_id)).get("connected")


async def _connected_since(op: Operator, node_id: str, t0: float) -> dict[str, Any] | None:
    entry = await node_entry(op, node_id)
    if entry.get("connected") and entry.get("connectedAtMs", 0) / 1000 >= t0:
        return entry
    return None


async def measure_round_trips(op: Operator, contenders: list[Contender], sequential: int) -> None:
    """One invoke at a time, alternating between the nodes, so neither is measured against a colder or
    busier gateway (its JIT warms up as it goes)."""
    for c in contenders:
        await invoke_ok(op, c.node_id)
        for _ in range(20):  # warm-up
            await op.invoke(c.node_id, "system.which", WHICH)
    for _ in range(sequential):
        for c in contenders:
            t = time.perf_counter()
            frame = await op.invoke(c.node_id, "system.which", WHICH)
            c.figures.rt.append(time.perf_counter() - t)
            c.figures.rt_errors += not frame.get("ok")


async def measure_throughput(op: Operator, c: Contender, total: int, concurrency: int) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            frame = await op.invoke(c.node_id, "system.which", WHICH)
            c.figures.tput_errors += not frame.get("ok")

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    c.figures.tput_seconds += time.perf_counter() - t
    c.figures.tput_invokes += total


def paired_median_delta(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    """Median of a[i] - b[i] over invokes made back to back, and its 95 % bootstrap interval: whether two
    p50s a few hundredths of a millisecond apart differ at all."""
    deltas = [x - y for x, y in zip(a, b, strict=False)]
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(deltas, k=len(deltas))) for _ in range(resamples))
    return statistics.median(deltas), meds[int(resamples * 0.025)], meds[int(resamples * 0.975)]


async def leak_run(
    gw: Gateway, node: NodeProcess, invokes: int, reconnects: int, warmup: int
) -> dict[str, Any]:
    """EdgeClaw through a cutting proxy: `invokes` invokes in `reconnects` batches, the link cut after each."""
    proxy = CutProxy(gw.port)
    await proxy.start()
    node.stop()
    node.config["gateway"].update(
        {"url": f"ws://127.0.0.1:{proxy.port}", "backoff_initial_s": 0.05, "backoff_max_s": 0.5}
    )
    node.write_config()
    node.start()
    per_batch = max(1, invokes // reconnects)
    failed = 0
    try:
        async with Operator(gw) as op:

            async def batch() -> None:
                nonlocal failed
                await invoke_ok(op, node.node_id)
                frames = await asyncio.gather(
                    *(op.invoke(node.node_id, "system.which", WHICH) for _ in range(per_batch - 1))
                )
                failed += sum(1 for f in frames if not f.get("ok"))

            async def cycle(rounds: int) -> None:
                for _ in range(rounds):
                    await batch()
                    seen = proxy.accepted
                    proxy.cut()
                    await poll(partial(_more, proxy, seen), 30, "node reconnected", interval=0.01)

            # warm-up: first-time imports and pools, and the node's duplicate-invoke filter, which keeps the
            # last 2,048–4,096 invoke ids by design (≈ 0.38 MB when full) — growth is measured from its steady state
            await cycle(max(5, reconnects // 20))
            for _ in range(warmup // 50):
                await asyncio.gather(*(op.invoke(node.node_id, "system.which", WHICH) for _ in range(50)))
            await asyncio.sleep(2)
            before, _ = tree_rss_mb(node.pid)
            t0, accepted0 = time.monotonic(), proxy.accepted
            await cycle(reconnects)
            await batch()
            elapsed = time.monotonic() - t0
            await asyncio.sleep(2)
            after, _ = tree_rss_mb(node.pid)
            done_reconnects = proxy.accepted - accepted0
    finally:
        await proxy.stop()
    return {
        "before": before,
        "after": after,
        "invokes": per_batch * (reconnects + 1),
        "reconnects": done_reconnects,
        "failed": failed,
        "seconds": elapsed,
    }


async def _more(proxy: CutProxy, seen: int) -> bool:
    return proxy.accepted > seen


async def _id_by_name(op: Operator, name: str) -> str:
    frame = await op.call("node.list", {})
    for entry in frame.get("payload", {}).get("nodes", []):
        if entry.get("displayName") == name:
            return str(entry["nodeId"])
    return ""


async def _approved(op: Operator, node_id: str) -> bool:
    entry = await node_entry(op, node_id)
    return bool(entry.get("connected") and entry.get("approvalState") == "approved")


def _stop(node: NodeProcess) -> None:
    node.stop()


def overhead(invokes: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_overhead.py")), "--invokes", str(invokes)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))]


async def run(args: argparse.Namespace) -> None:
    load0 = loadavg()
    print(f"load average at start: {load0}", file=sys.stderr)
    over = overhead(args.overhead_invokes)
    print(f"overhead: {over}", file=sys.stderr)
    base = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    gw = Gateway(install_gateway(), base / "gw")
    gw.start()
    node = NodeProcess(base / "edgeclaw", gw, name="bench-edgeclaw")
    node.config["log"]["level"] = "info"
    code = node.base / "setup-code"
    code.write_text(setup_code(gw))
    node.config["gateway"]["setup_code_file"] = str(code)
    node.write_config()
    host = OpenClawNodeHost(base / "openclaw-node", gw)
    host.setup_code = setup_code(gw)
    ours = Contender("EdgeClaw", node.start, lambda: _stop(node), lambda: node.pid)
    theirs = Contender("OpenClaw node host", host.start, host.stop, lambda: host.pid)
    leak: dict[str, Any] = {}
    try:
        async with Operator(gw) as op:
            # first start pairs both through their setup codes
            node.start()
            host.start()
            ours.node_id = wait_until(
                lambda: (node.state_dir / "identity.json").exists() and node.node_id, 60
            )
            theirs.node_id = await poll(lambda: _id_by_name(op, host.name), 180, "node host paired", 0.5)
            for c in (ours, theirs):
                await poll(partial(_approved, op, c.node_id), 180, f"{c.label} paired and connected", 0.2)
                await invoke_ok(op, c.node_id)
            print("both paired", file=sys.stderr)
            for c in (ours, theirs):
                await measure_starts(op, c, args.starts, 180)
                await invoke_ok(op, c.node_id)
                print(f"{c.label} starts: {c.figures.starts}", file=sys.stderr)
            # both connected and idle together
            cpu0 = {c.label: tree_cpu_s(c.pid()) for c in (ours, theirs)}
            await asyncio.sleep(args.idle)
            for c in (ours, theirs):
                c.figures.idle_cpu = (tree_cpu_s(c.pid()) - cpu0[c.label]) / args.idle * 100
                c.figures.idle_rss, c.figures.procs = tree_rss_mb(c.pid())
            print(
                f"idle: {[(c.label, c.figures.idle_rss, c.figures.idle_cpu) for c in (ours, theirs)]}",
                file=sys.stderr,
            )
            await measure_round_trips(op, [ours, theirs], args.invokes)
            for c in (ours, theirs, theirs, ours):  # ABBA: neither meets only the colder gateway
                await measure_throughput(op, c, args.concurrent_total // 2, 50)
                print(
                    f"{c.label} p50 {statistics.median(c.figures.rt) * 1000:.2f} ms, {c.figures.tput:.0f}/s",
                    file=sys.stderr,
                )
        host.stop()
        leak = await leak_run(gw, node, args.leak_invokes, args.leak_reconnects, args.leak_warmup)
        print(f"leak: {leak}", file=sys.stderr)
    finally:
        node.stop()
        host.stop()
        gw.stop()
    report(args, machine(gw), load0, loadavg(), ours, theirs, leak, over)


def report(
    args: argparse.Namespace,
    where: str,
    load0: str,
    load1: str,
    ours: Contender,
    theirs: Contender,
    leak: dict[str, Any],
    over: dict[str, Any],
) -> None:
    a, b = ours.figures, theirs.figures

    def mark(ok: bool) -> str:
        return "✅" if ok else "❌"

    def start(f: Figures) -> str:
        return f"{statistics.median(f.starts):.2f} s ({min(f.starts):.2f}–{max(f.starts):.2f})"

    def rt(f: Figures) -> str:
        err = f", {f.rt_errors} failed" if f.rt_errors else ""
        return f"{statistics.median(f.rt) * 1000:.1f} / {pct(f.rt, 0.99) * 1000:.1f} ms{err}"

    def tput(f: Figures) -> str:
        return f"{f.tput:.0f} /s" + (f", {f.tput_errors} failed" if f.tput_errors else "")

    def rt_verdict() -> str:
        if statistics.median(a.rt) <= statistics.median(b.rt):
            return "p50 ≤ node host's ✅"
        delta, low, high = paired_median_delta(a.rt, b.rt)
        ms = f"paired Δ {delta * 1000:+.2f} ms, 95 % CI {low * 1000:+.2f}…{high * 1000:+.2f}"
        if low <= 0:
            return f"p50 ≤ node host's: equal within noise ({ms}) ≈"
        return f"p50 ≤ node host's ❌ ({ms})"

    growth = leak["after"] - leak["before"]
    cap = 1e6 / over["node_cpu_us_per_invoke"]
    rows = [
        (
            f"idle RSS, all processes of the node, after {args.idle:.0f} s connected",
            f"{a.idle_rss:.1f} MB ({a.procs} process{'es' * (a.procs > 1)})",
            f"{b.idle_rss:.1f} MB ({b.procs} process{'es' * (b.procs > 1)})",
            f"≤ 30 MB {mark(a.idle_rss <= 30)}",
        ),
        (
            f"start → hello-ok, already paired (median of {len(a.starts)}, min–max)",
            start(a),
            start(b),
            f"≤ 0.5 s {mark(statistics.median(a.starts) <= 0.5)}",
        ),
        (
            f"invoke round-trip `system.which` via the gateway, p50 / p99 ({len(a.rt)} sequential)",
            rt(a),
            rt(b),
            rt_verdict(),
        ),
        (f"throughput, 50 concurrent invokes ({args.concurrent_total} in all)", tput(a), tput(b), "—"),
        (
            f"idle CPU over {args.idle:.0f} s",
            f"{a.idle_cpu:.2f} % of a core",
            f"{b.idle_cpu:.2f} % of a core",
            "—",
        ),
        (
            f"RSS growth after {leak['invokes']:,} invokes and {leak['reconnects']:,} reconnects",
            f"{growth:+.2f} MB ({leak['before']:.1f} → {leak['after']:.1f} MB, {leak['failed']} failed, "
            f"{leak['seconds']:.0f} s)",
            "— (EdgeClaw only)",
            f"≤ 1 MB {mark(growth <= 1)}",
        ),
        (
            "node-side overhead per trivial invoke (in-process fake gateway; node's own CPU)",
            f"{over['node_cpu_us_per_invoke']:.0f} µs → {cap:,.0f} invokes/s per core "
            f"(measured {over['invokes_per_s']:,.0f}/s, {over['errors']} failed)",
            "— (EdgeClaw only)",
            f"≤ 500 µs {mark(over['node_cpu_us_per_invoke'] <= 500)}, ≥ 2,000/s {mark(cap >= 2000)}",
        ),
    ]
    print(f"\n**Machine:** {where}  ")
    print(
        f"**Load average** (1/5/15 min) at start {load0}, at end {load1}; gateway on loopback in a "
        f"network namespace; {'`--quick` smoke' if args.quick else 'full run'}.\n"
    )
    print("| figure | EdgeClaw | OpenClaw node host | target (EdgeClaw) |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer starts/invokes, short idle")
    parser.add_argument("--starts", type=int, default=None, help="starts per node (5; quick 3)")
    parser.add_argument("--idle", type=float, default=None, help="idle seconds (60; quick 15)")
    parser.add_argument("--invokes", type=int, default=None, help="sequential invokes (1000; quick 200)")
    parser.add_argument(
        "--concurrent-total", type=int, default=None, help="invokes at 50 in flight (2000; 400)"
    )
    parser.add_argument("--leak-invokes", type=int, default=None, help="leak run invokes (20000; quick 1000)")
    parser.add_argument(
        "--leak-reconnects", type=int, default=None, help="leak run reconnects (1000; quick 50)"
    )
    parser.add_argument(
        "--leak-warmup", type=int, default=None, help="invokes before the leak baseline (5000; 1000)"
    )
    parser.add_argument(
        "--overhead-invokes", type=int, default=None, help="fake-gateway invokes (20000; 3000)"
    )
    args = parser.parse_args()
    defaults = {
        "starts": (5, 3),
        "idle": (60.0, 15.0),
        "invokes": (1000, 200),
        "concurrent_total": (2000, 400),
        "leak_invokes": (20000, 1000),
        "leak_reconnects": (1000, 50),
        "leak_warmup": (5000, 1000),
        "overhead_invokes": (20000, 3000),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if not only_loopback():
        sys.exit(
            "run through bench/run.sh (a loopback-only network namespace): bench/run.sh compare [--quick]"
        )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
