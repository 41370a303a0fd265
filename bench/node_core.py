"""Node-core benchmark against the real gateway on loopback: start → hello-ok (already paired, median of
5), idle RSS and CPU of the connected daemon. Prints a Markdown table. Run: bench/run.sh node_core."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.gateway import Gateway, install_gateway, only_loopback, wait_for
from tests.support.node import NodeProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=60.0, help="seconds connected before measuring RSS/CPU")
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    assert only_loopback(), "run through bench/run.sh (loopback-only namespace)"
    base = Path(tempfile.mkdtemp(prefix="bench-core-"))
    gw = Gateway(install_gateway(), base / "gw")
    gw.start()
    node = NodeProcess(base / "node", gw, name="bench-node")
    node.config["log"]["level"] = "info"
    code_file = node.base / "setup-code"
    code_file.write_text(
        gw.call(
            "device.pair.setupCode",
            {"bootstrapProfile": "node", "publicUrl": gw.url, "includeQr": False, "joinUrl": True},
        )["setupCode"]
    )
    node.config["gateway"]["setup_code_file"] = str(code_file)
    node.write_config()
    try:
        node.start()
        wait_for(lambda: node.live_status().get("pairing") == "approved", 60)
        node.stop()
        starts = []
        for _ in range(args.starts):
            (node.runtime_dir / "status.json").unlink(missing_ok=True)
            t0 = time.time()
            node.start()
            wait_for(lambda: node.live_status().get("connection") == "connected", 30, interval=0.005)
            starts.append(node.live_status()["since"] - t0)
            node.stop()
        node.start()
        wait_for(lambda: node.live_status().get("connection") == "connected", 30)
        cpu0 = cpu_seconds(node.pid)
        time.sleep(args.idle)
        rss = rss_mb(node.pid)
        cpu = (cpu_seconds(node.pid) - cpu0) / args.idle * 100
        print(f"\nEdgeClaw node core — {machine()}; gateway openclaw 2026.9.6 on loopback\n")
        print("| figure | EdgeClaw | target |")
        print("|---|---|---|")
        print(
            f"| start → hello-ok, already paired (median of {len(starts)}) | {statistics.median(starts):.3f} s "
            f"(min {min(starts):.3f}, max {max(starts):.3f}) | ≤ 0.5 s |"
        )
        print(f"| idle RSS after {args.idle:.0f} s connected | {rss:.1f} MB | ≤ 30 MB |")
        print(f"| idle CPU over {args.idle:.0f} s | {cpu:.2f} % of a core | — |")
    finally:
        node.stop()
        gw.stop()


if __name__ == "__main__":
    main()
