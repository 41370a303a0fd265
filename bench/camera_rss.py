#!/usr/bin/env python3
"""Daemon RSS before and after 100 camera snaps, through the real gateway, on a simulated board whose
camera really encodes JPEG with ffmpeg. The claim to check: capture memory lives and dies in the
capture process, so the daemon ends within 2 MB of where it started.

    python bench/camera_rss.py [--snaps 100] [--max-width 1600]

Needs the gateway install (scripts/install-gateway.sh) and ffmpeg; re-runs itself in a loopback-only
network namespace with a private /tmp (root, like the gateway test tier) when it is not in one already.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.gateway import Gateway, Operator, install_gateway, invoke_payload, only_loopback, wait_for  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402

LIMIT_MB = 2.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle_rss(pid: int, seconds: float = 3.0) -> int:
    """RSS after the daemon has been idle a moment (lets freed result buffers go back first)."""
    time.sleep(seconds)
    return rss_kb(pid)


async def snaps(gw: Gateway, node_id: str, n: int, max_width: int, quality: float) -> tuple[int, float]:
    total = 0
    started = time.monotonic()
    async with Operator(gw) as op:
        for _ in range(n):
            frame = await op.invoke(
                node_id,
                "camera.snap",
                {"maxWidth": max_width, "quality": quality, "delayMs": 0},
                timeout_ms=30000,
            )
            total += len(invoke_payload(frame)["base64"])
    return total, time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snaps", type=int, default=100)
    ap.add_argument("--max-width", type=int, default=1600)
    ap.add_argument("--quality", type=float, default=0.9)
    args = ap.parse_args()
    if not only_loopback():
        cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
        return subprocess.call(
            [
                "unshare",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'ip link set lo up && mount -t tmpfs -o mode=1777 tmpfs /tmp && exec "$@"',
                "sh",
                *cmd,
            ]
        )
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (scripts/install-test-deps.sh)", file=sys.stderr)
        return 2
    os.environ["PYTHONPATH"] = str(ROOT)  # the daemon under test is this checkout
    base = Path(tempfile.mkdtemp(prefix="edgeclaw-bench-"))
    gw = Gateway(install_gateway(), base / "gw")
    node: NodeProcess | None = None
    try:
        gw.start()
        node = NodeProcess(
            base / "node", gw, name="bench-cam", extra={"camera": {"enabled": True}, "log": {"level": "info"}}
        )
        code = gw.call(
            "device.pair.setupCode", {"bootstrapProfile": "node", "publicUrl": gw.url, "includeQr": False}
        )
        (node.base / "setup-code").write_text(code["setupCode"])
        (node.base / "setup-code").chmod(0o600)
        node.config["gateway"]["setup_code_file"] = str(node.base / "setup-code")
        node.write_config()
        node.start()
        try:
            wait_for(
                lambda: node.live_status().get("pairing") == "approved" or node._dead(),
                90,
                what="paired node",
            )
        except TimeoutError:
            print(node.log()[-3000:], file=sys.stderr)
            raise
        node_id = node.node_id
        rows: list[tuple[str, int]] = [("idle, before any snap", settle_rss(node.pid))]
        asyncio.run(snaps(gw, node_id, 1, args.max_width, args.quality))
        rows.append(("after the first snap", settle_rss(node.pid)))
        total, secs = asyncio.run(snaps(gw, node_id, args.snaps, args.max_width, args.quality))
        rows.append((f"after {args.snaps} more snaps", settle_rss(node.pid)))
        before = rows[0][1]
        print(
            f"camera.snap RSS benchmark: {args.snaps} snaps at maxWidth {args.max_width} quality {args.quality}, simulated camera, "
            f"real gateway; {total / args.snaps / 1e3:.0f} kB base64 a snap, {secs / args.snaps * 1000:.0f} ms a snap"
        )
        print(f"{'phase':<28} {'RSS MB':>8} {'Δ MB':>7}")
        for label, kb in rows:
            print(f"{label:<28} {kb / 1024:8.2f} {(kb - before) / 1024:+7.2f}")
        delta = (rows[-1][1] - before) / 1024
        ok = delta <= LIMIT_MB
        print(
            f"result: {'PASS' if ok else 'FAIL'} (after {args.snaps} snaps {delta:+.2f} MB vs before; limit {LIMIT_MB} MB)"
        )
        return 0 if ok else 1
    finally:
        if node is not None:
            node.stop()
        gw.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
