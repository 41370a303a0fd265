#!/usr/bin/env python3
"""The node's memory on the arm64 card itself: VmRSS and Pss of the edgeclaw process, idle and
connected to a real gateway, with and without GPIO and the camera, on the built SD-card image booted
under `qemu-system-aarch64 -M virt` (TCG). One boot per configuration.

    python bench/arm64_rss.py [--image-out build/image] [--configs none,camera,gpio,gpio+camera] [--idle 45]

The card is the built image plus Debian's ffmpeg (tests/image/camera_card.py), booted with the vivid
V4L2 test driver loaded (`modules-load=vivid`), the node configured by edgeclaw.yaml on its FAT
partition (a setup code for the gateway, an SSH key made for this run). The guest's only network path
is QEMU user networking with `restrict=on`: one guestfwd to the gateway on the host's loopback and one
hostfwd from the host's loopback to the guest's SSH, over which /proc/<pid>/status and smaps_rollup
are read. The node's own `device.status` answer (through the gateway) is printed beside it.
Re-runs itself in a loopback-only network namespace (root) when not in one already. Not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.image.camera_card import camera_card  # noqa: E402
from tests.image.vivid_boot import connected_node  # noqa: E402
from tests.support.gateway import Operator, free_port, invoke_payload, only_loopback  # noqa: E402

X86_PEER_MB = 29.5  # README, "Benchmarks": idle RSS after 60 s connected, x86_64, Python 3.11
CAMERA = {"enabled": True, "backend": "v4l2"}
# -M virt's GPIO controller is a PL061 with 8 lines (gpiochip0): two of them as BCM 4 and 5
GPIO = {
    "enabled": True,
    "pins": {
        "relay": {"pin": "GPIO4", "kind": "output", "safe_state": 0},
        "button": {"pin": "GPIO5", "kind": "button"},
    },
}
CONFIGS: dict[str, dict[str, Any]] = {
    "none": {},
    "camera": {"camera": CAMERA},
    "gpio": {"gpio": GPIO},
    "gpio+camera": {"gpio": GPIO, "camera": CAMERA},
}
PROBE = (
    "pid=$(systemctl show -p MainPID --value edgeclaw.service); echo pid=$pid; "
    "grep -E '^(VmRSS|VmHWM|Threads):' /proc/$pid/status; grep -E '^(Rss|Pss|Pss_Anon|Pss_File):' "
    "/proc/$pid/smaps_rollup; echo children=$(cat /proc/$pid/task/*/children | wc -w); "
    "echo python=$(/opt/edgeclaw/venv/bin/python -c 'import sys; print(sys.version.split()[0])'); "
    "echo kernel=$(uname -r); echo cpus=$(nproc); ls /dev/video* /dev/gpiochip* 2>/dev/null | tr '\\n' ' '; echo"
)


def ssh(port: int, key: Path, command: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"ssh: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def parse_probe(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("/dev"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        elif line.startswith("/dev"):
            out["devices"] = line.strip()
    return out


async def node_view(gw: Any, node_id: str) -> dict[str, Any]:
    async with Operator(gw) as op:
        status = invoke_payload(await op.invoke(node_id, "device.status", {}, timeout_ms=30000))
        listed = await op.invoke(node_id, "camera.list", {}, timeout_ms=30000)
        gpio = await op.invoke(node_id, "gpio.list", {}, timeout_ms=30000)
    return {"status": status, "camera_list": listed, "gpio_list": gpio}


def measure(name: str, disk: Path, work: Path, idle: float, key: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"config": name}
    port = free_port()
    config = {**CONFIGS[name], "log": {"level": "info"}}
    with connected_node(
        disk, work, f"RSS {name}", config, ssh_key=key.with_suffix(".pub").read_text().strip(), ssh_port=port,
        result=result,
    ) as (gw, node_id, _guest):  # fmt: skip
        time.sleep(idle)
        result["probe"] = parse_probe(ssh(port, key, PROBE))
        view = asyncio.run(node_view(gw, node_id))
        result["node_rss_kb"] = (view["status"].get("node") or {}).get("rss_bytes", 0) // 1024 or None
        result["camera_ok"] = bool(view["camera_list"].get("ok"))
        result["gpio_ok"] = bool(view["gpio_list"].get("ok"))
        result["camera_devices"] = (
            len(invoke_payload(view["camera_list"]).get("devices", [])) if result["camera_ok"] else 0
        )
        result["errors"] = {
            k: (view[k].get("error") or {}).get("message", "")[:120]
            for k in ("camera_list", "gpio_list")
            if not view[k].get("ok")
        }
    return result


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def table(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [
        machine,
        "",
        "| config | VmRSS | Pss (anon / file) | device.status RSS | camera.list | gpio.list | boot→connected |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("probe", {})
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:150]} | | | | | |")
            continue
        mb = lambda v: f"{int(str(v).split()[0]) / 1024:.1f} MB" if v else "?"  # noqa: E731
        cam = (
            f"ok ({r['camera_devices']} dev)" if r["camera_ok"] else r["errors"].get("camera_list", "-")[:60]
        )
        gpio = "ok" if r["gpio_ok"] else r["errors"].get("gpio_list", "-")[:60]
        node = f"{r['node_rss_kb'] / 1024:.1f} MB" if r.get("node_rss_kb") else "?"
        lines.append(
            f"| {r['config']} | {mb(p.get('VmRSS'))} | {mb(p.get('Pss'))} ({mb(p.get('Pss_Anon'))} / "
            f"{mb(p.get('Pss_File'))}) | {node} | {cam} | {gpio} | {r.get('boot_to_connected_s')} s |"
        )
    lines += [
        "",
        f"x86_64 peer (README, Benchmarks): idle VmRSS {X86_PEER_MB} MB after 60 s connected, no gpio/camera.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-out", type=Path, default=ROOT / "build/image", help="image/build.sh --out DIR")
    ap.add_argument("--configs", default="none,gpio+camera")
    ap.add_argument("--idle", type=float, default=45.0, help="seconds connected before reading")
    ap.add_argument("--smp", type=int, default=2)
    args = ap.parse_args()
    if not only_loopback():
        priv = tempfile.mkdtemp()
        cmd = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
               'ip link set lo up && mkdir -p /tmp/openclaw && mount --bind "$0" /tmp/openclaw && exec "$@"',
               priv, sys.executable, *sys.argv]  # fmt: skip
        return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False).returncode
    out = args.image_out.resolve()
    image = next(p for p in out.glob("edgeclaw-*.img") if p.suffix == ".img")
    manifest = json.loads(next(out.glob("edgeclaw-*.manifest.json")).read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="arm64-rss-") as tmp:
        work = Path(tmp)
        key = work / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "arm64-rss", "-f", str(key)], check=True
        )
        print(f"preparing the camera card from {image.name} ...", file=sys.stderr)
        card = camera_card(image, out / "work/rootfs", manifest, work / "card")
        for name in args.configs.split(","):
            run_dir = work / name.replace("+", "-")
            run_dir.mkdir()
            disk = run_dir / "disk.img"
            subprocess.run(["cp", "--sparse=always", str(card), str(disk)], check=True)
            try:
                rows.append(measure(name, disk, run_dir, args.idle, key))
            except Exception as exc:  # one failed configuration still leaves the others' rows
                rows.append({"config": name, "error": f"{type(exc).__name__}: {exc}"})
            disk.unlink()
            print(json.dumps({k: v for k, v in rows[-1].items() if "tail" not in k})[:1500], file=sys.stderr)
    probe = next((r["probe"] for r in rows if "probe" in r), {})
    machine = (
        f"{time.strftime('%Y-%m-%d')}; host {host_cpu()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"guest qemu-system-aarch64 -M virt -cpu cortex-a72 -smp {args.smp} (TCG), kernel {probe.get('kernel', '?')}, "
        f"Python {probe.get('python', '?')}, card {manifest.get('suite')} {manifest.get('edgeclaw')}"
    )
    print(table(rows, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
