"""Idle footprint of two checkouts side by side: both daemons against one in-process fake gateway on
loopback, connected and idle at the same time (same machine load), with GPIO on (one input, one output,
so its supervised loops run too). Prints idle RSS and CPU of each.

    PYTHONPATH=. python bench/idle_ab.py --before /path/to/other/checkout [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.node_core import cpu_seconds, machine, rss_mb
from tests.support.fakegateway import FakeGateway
from tests.support.node import NodeProcess

GPIO = {
    "enabled": True,
    "pins": {
        "button": {"pin": 22, "kind": "button", "on_edge": "agent"},
        "relay": {"pin": 17, "kind": "output", "safe_state": 0, "safe_on_failsafe": True},
    },
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="a checkout to compare with (e.g. the base commit)")
    parser.add_argument("--after", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    gw = FakeGateway()
    await gw.start()
    base = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    nodes: dict[str, NodeProcess] = {}
    try:
        for label, tree in (("before", args.before), ("after", args.after)):
            node = NodeProcess(base / label, None, url=gw.url, name=f"bench-{label}")
            (node.base / "gateway.token").write_text(gw.token + "\n")
            node.config["log"]["level"] = "info"
            node.config["telemetry"] = {"textfile": None}
            node.config["gpio"] = GPIO
            node.write_config()
            node.start(env={"PYTHONPATH": str(Path(tree).resolve())})
            nodes[label] = node
        await gw.wait_hello(2, timeout=60)
        await asyncio.sleep(5)  # settle: imports done, first host stats sent
        cpu0 = {label: cpu_seconds(n.pid) for label, n in nodes.items()}
        await asyncio.sleep(args.idle)
        print(f"\nidle footprint, {machine()}; fake gateway on loopback, GPIO simulated\n")
        print(f"| checkout | idle RSS after {args.idle + 5:.0f} s | idle CPU over {args.idle:.0f} s |")
        print("|---|---|---|")
        for label, node in nodes.items():
            cpu = (cpu_seconds(node.pid) - cpu0[label]) / args.idle * 100
            print(
                f"| {label} ({os.path.basename(str(Path(getattr(args, label)).resolve()))}) "
                f"| {rss_mb(node.pid):.1f} MB | {cpu:.3f} % of a core |"
            )
    finally:
        for node in nodes.values():
            node.stop()
        await gw.stop()


if __name__ == "__main__":
    asyncio.run(main())
