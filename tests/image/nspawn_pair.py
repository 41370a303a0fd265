"""Boot the image's root filesystem with systemd-nspawn (arm64 through qemu-user) next to a real
OpenClaw gateway, both in the caller's loopback-only network namespace; first boot consumes an
edgeclaw.yaml holding a setup code; the node must pair and answer an operator's invoke.

Run only inside `unshare --net --mount` (tests/image/test_image.py does that):
    python -m tests.image.nspawn_pair ROOTFS WORKDIR
Prints one JSON object with what it observed; progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.gateway import Gateway, Operator, install_gateway, invoke_payload, only_loopback, wait_for

CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def say(msg: str) -> None:
    print(f"[nspawn {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Container:
    """systemd-nspawn --boot on an overlay of the image's root (the image tree itself stays untouched)."""

    def __init__(self, rootfs: Path, work: Path) -> None:
        self.lower = rootfs
        self.work = work
        self.merged = work / "merged"
        self.cgroups = [
            base / f"edgeclaw-image-{uuid.uuid4().hex[:10]}" for base in CGROUP_ROOTS if base.is_dir()
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.console = work / "console.log"

    def mount(self) -> None:
        for d in ("upper", "ovl-work", "merged"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.lower},upperdir={self.work / 'upper'},workdir={self.work / 'ovl-work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)], check=True, timeout=30
        )

    def _enter_cgroup(self) -> None:
        # Our own cgroup, so nspawn's payload/ and supervisor/ never mix with another test's container.
        for cg in self.cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    def boot(self) -> None:
        for cg in self.cgroups:
            cg.mkdir(exist_ok=True)
        cmd = [
            "systemd-nspawn", "-D", str(self.merged), "--boot", "--register=no", "--keep-unit",
            "--console=read-only", "--machine=edgeclaw-image",
        ]  # fmt: skip
        with open(self.console, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._enter_cgroup,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """One SIGTERM = orderly halt; a second one if it dawdles; then kill what is left by cgroup."""
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 60), (signal.SIGTERM, 15)):
                if self.proc.poll() is not None:
                    break
                self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(wait)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        for cg in reversed(self.cgroups):
            kill = cg / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
            else:
                for procs in cg.rglob("cgroup.procs"):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
        for cg in self.cgroups:
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()

    def unmount(self) -> None:
        for _ in range(10):
            if subprocess.run(["umount", str(self.merged)], check=False, capture_output=True).returncode == 0:
                return
            time.sleep(1)
        subprocess.run(["umount", "-l", str(self.merged)], check=False)

    def journal(self, *args: str) -> str:
        proc = subprocess.run(
            ["journalctl", "--directory", str(self.merged / "var/log/journal"), "--no-pager", "-o", "short-monotonic",
             *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return proc.stdout + proc.stderr


async def invoke(gw: Gateway, node_id: str) -> dict[str, Any]:
    async with Operator(gw) as op:
        frame = await op.invoke(node_id, "device.info", {}, timeout_ms=60000)
    return dict(invoke_payload(frame))


def main() -> int:
    rootfs, work = Path(sys.argv[1]), Path(sys.argv[2])
    if not only_loopback():
        raise SystemExit("run me in a loopback-only network namespace (unshare --net)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    gw = Gateway(install_gateway(), work / "gateway")
    container = Container(rootfs, work / "container")
    try:
        result["gateway_start_s"] = round(gw.start(), 1)
        say(f"gateway up at {gw.url}")
        code = gw.call(
            "device.pair.setupCode",
            {"bootstrapProfile": "node", "publicUrl": gw.url, "includeQr": False, "joinUrl": True},
        )["setupCode"]
        container.mount()
        fat = container.merged / "boot/firmware"
        (fat / "edgeclaw.yaml").write_text(
            "# written by the image test\n"
            f'gateway:\n  setup_code: "{code}"\n'
            "node:\n  display_name: Image Nspawn\n"
            "log:\n  level: debug\n"
        )
        t_boot = time.monotonic()
        container.boot()
        say("container booting (arm64 under qemu-user)")

        def paired_node() -> str | None:
            if not container.alive():
                raise RuntimeError("systemd-nspawn exited")
            for node in gw.nodes_status():
                if (
                    node.get("displayName") == "Image Nspawn"
                    and node.get("connected")
                    and node.get("approvalState") == "approved"
                ):
                    return str(node.get("nodeId"))
            return None

        node_id = wait_for(paired_node, 420, interval=3, what="the image's node connected to the gateway")
        result["boot_to_connected_s"] = round(time.monotonic() - t_boot, 1)
        say(f"node {node_id} connected after {result['boot_to_connected_s']} s")
        t_inv = time.monotonic()
        payload = asyncio.run(invoke(gw, node_id))
        result["invoke_s"] = round(time.monotonic() - t_inv, 1)
        result["node_id"] = node_id
        result["device_info"] = payload
        root = container.merged
        result["fat_files"] = sorted(p.name for p in fat.iterdir())
        report = fat / "edgeclaw-firstboot.txt"
        result["firstboot_report"] = report.read_text() if report.exists() else None
        result["setup_code_in_fat"] = any(
            code in p.read_text(errors="replace") for p in fat.iterdir() if p.is_file()
        )
        etc = root / "etc/edgeclaw"
        result["etc_edgeclaw"] = (
            {p.name: oct(p.stat().st_mode & 0o777) for p in etc.iterdir()} if etc.exists() else {}
        )
        result["state_dir_mode"] = oct((root / "var/lib/edgeclaw").stat().st_mode & 0o777)
        result["setup_code_left"] = (root / "var/lib/edgeclaw/setup-code").exists()
        result["hostname"] = (root / "etc/hostname").read_text().strip()
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        container.stop()
        result["journal_firstboot"] = container.journal("-u", "edgeclaw-firstboot.service")[-4000:]
        result["journal_edgeclaw"] = container.journal("-u", "edgeclaw.service")[-6000:]
        result["console_tail"] = (
            container.console.read_text(errors="replace")[-4000:] if container.console.exists() else ""
        )
        container.unmount()
        gw.stop()
        result["total_s"] = round(time.monotonic() - t0, 1)
        shutil.rmtree(work / "container", ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
