"""Boot the card under `qemu-system-aarch64 -M virt` with one network path only: a QEMU user-mode NIC
(`restrict=on`: no route anywhere) whose single `guestfwd` leads to a real OpenClaw gateway on the
host's loopback. Run inside a loopback-only network namespace (`unshare --net`); the gateway, the
setup code the card pairs with and the QEMU process all live and die here.

    python -m tests.image.vivid_boot camera DISK WORKDIR   (the vivid camera test: list, snap, clip)

Prints one JSON object (what it saw); progress goes to stderr. Used by tests/image/test_vivid.py and,
as a library, by bench/arm64_rss.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.image.raspi_qemu import fat, sh
from tests.support.gateway import Gateway, Operator, install_gateway, invoke_payload, only_loopback, wait_for

GUEST_GATEWAY = "10.0.2.100"  # the guestfwd address: the guest's only reachable peer
KERNEL_EXTRA = "modules-load=vivid systemd.journald.forward_to_console=1"


def say(msg: str) -> None:
    print(f"[vivid {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def card_root_spec(disk: Path) -> str:
    """The card's own root= (and rootfstype=, if any) from its cmdline.txt: the test boots what a Pi would."""
    cmdline = sh("mtype", "-i", fat(disk), "::cmdline.txt")
    spec = [w for w in cmdline.split() if w.startswith(("root=", "rootfstype="))]
    if not any(w.startswith("root=") for w in spec):
        raise RuntimeError(f"no root= in the card's cmdline.txt: {cmdline!r}")
    return " ".join(spec)


def boot_files(disk: Path, dest: Path) -> tuple[Path, Path]:
    """The kernel and initrd from the card's FAT partition (QEMU -M virt boots them directly)."""
    names = [n.split("/")[-1] for n in sh("mdir", "-b", "-i", fat(disk), "::").split()]
    kernel = next(n for n in names if n.startswith("vmlinuz-"))
    initrd = next(n for n in names if n.startswith("initrd.img-"))
    for name in (kernel, initrd):
        sh("mcopy", "-o", "-i", fat(disk), f"::{name}", str(dest / name))
    return dest / kernel, dest / initrd


@dataclass
class Guest:
    disk: Path
    work: Path
    gateway_port: int
    ssh_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    console: Path = field(init=False)

    def __post_init__(self) -> None:
        self.console = self.work / "console.log"

    def start(self, smp: int = 2, memory_mb: int = 1024) -> None:
        kernel, initrd = boot_files(self.disk, self.work)
        relay = f"{sys.executable} {Path(__file__).with_name('guestfwd_relay.py')} {self.gateway_port}"
        netdev = f"user,id=n0,restrict=on,guestfwd=tcp:{GUEST_GATEWAY}:{self.gateway_port}-cmd:{relay}"
        if self.ssh_port is not None:
            netdev += f",hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        cmd = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", str(smp), "-m", str(memory_mb),
            "-display", "none", "-no-reboot", "-serial", f"file:{self.console}",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"{card_root_spec(self.disk)} rw rootwait console=ttyAMA0 {KERNEL_EXTRA}",
            "-drive", f"file={self.disk},format=raw,if=virtio",
        ]  # fmt: skip
        with open(self.work / "qemu.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


def write_settings(disk: Path, work: Path, settings: dict[str, Any]) -> None:
    path = work / "edgeclaw.yaml"
    path.write_text("# written by tests/image/vivid_boot.py\n" + yaml.safe_dump(settings, sort_keys=False))
    sh("mcopy", "-o", "-i", fat(disk), str(path), "::edgeclaw.yaml")


@contextlib.contextmanager
def connected_node(
    disk: Path, work: Path, name: str, config: dict[str, Any], *, ssh_key: str | None = None, ssh_port: int | None = None,
    result: dict[str, Any],
) -> Iterator[tuple[Gateway, str, Guest]]:  # fmt: skip
    """A real gateway, the card configured by its edgeclaw.yaml (setup code + `config`), booted, paired."""
    if not only_loopback():
        raise SystemExit("run me in a loopback-only network namespace (unshare --net)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    gw = Gateway(install_gateway(), work / "gateway")
    guest: Guest | None = None
    try:
        result["gateway_start_s"] = round(gw.start(), 1)
        public = f"ws://{GUEST_GATEWAY}:{gw.port}"
        code = gw.call(
            "device.pair.setupCode",
            {"bootstrapProfile": "node", "publicUrl": public, "includeQr": False},
        )["setupCode"]
        settings: dict[str, Any] = {"gateway": {"setup_code": code}, "node": {"display_name": name}}
        if ssh_key:
            settings["ssh"] = {"authorized_keys": [ssh_key]}
        write_settings(disk, work, {**settings, **config})
        guest = Guest(disk, work, gw.port, ssh_port)
        t0 = time.monotonic()
        guest.start()
        say(f"guest booting; gateway {gw.url} reachable from the guest as {public}")

        def paired() -> str | None:
            if not guest.alive():
                raise RuntimeError(f"qemu exited: {(work / 'qemu.log').read_text(errors='replace')[-2000:]}")
            for node in gw.nodes_status():
                if (
                    node.get("displayName") == name
                    and node.get("connected")
                    and node.get("approvalState") == "approved"
                ):
                    return str(node.get("nodeId"))
            return None

        node_id = wait_for(paired, 600, interval=3, what="the card's node connected to the gateway")
        result["boot_to_connected_s"] = round(time.monotonic() - t0, 1)
        say(f"node {node_id} connected after {result['boot_to_connected_s']} s")
        yield gw, node_id, guest
    finally:
        if guest is not None:
            guest.stop()
            text = guest.console_text()
            result["console_tail"] = text[-6000:]
            result["console_camera"] = [
                line for line in text.splitlines() if re.search(r"vivid|camera|video4linux|ffmpeg", line)
            ][-40:]
        result["gateway_tail"] = gw.tail(3000)
        gw.stop()


async def camera_session(
    gw: Gateway, node_id: str, work: Path, snap_width: int, clip_ms: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Operator(gw) as op:
        out["list"] = invoke_payload(await op.invoke(node_id, "camera.list", {}, timeout_ms=30000))
        t = time.monotonic()
        frame = await op.invoke(
            node_id,
            "camera.snap",
            {"maxWidth": snap_width, "quality": 0.9, "delayMs": 500},
            timeout_ms=120000,
        )
        out["snap_s"] = round(time.monotonic() - t, 1)
        if not frame.get("ok"):
            out["snap_error"] = frame.get("error")
        else:
            snap = invoke_payload(frame)
            (work / "snap.jpg").write_bytes(base64.b64decode(snap.pop("base64")))
            out["snap"] = snap
        t = time.monotonic()
        frame = await op.invoke(
            node_id, "camera.clip", {"durationMs": clip_ms, "includeAudio": False}, timeout_ms=180000
        )
        out["clip_s"] = round(time.monotonic() - t, 1)
        if not frame.get("ok"):
            out["clip_error"] = frame.get("error")
        else:
            clip = invoke_payload(frame)
            (work / "clip.mp4").write_bytes(base64.b64decode(clip.pop("base64")))
            out["clip"] = clip
    return out


CAMERA_CONFIG = {"camera": {"enabled": True, "backend": "v4l2"}, "log": {"level": "debug"}}


def main() -> int:
    mode, disk, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        if mode != "camera":
            raise SystemExit(f"unknown mode {mode}")
        with connected_node(disk, work, "Vivid Pi", CAMERA_CONFIG, result=result) as (gw, node_id, _guest):
            result.update(asyncio.run(camera_session(gw, node_id, work, snap_width=640, clip_ms=2000)))
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["total_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
