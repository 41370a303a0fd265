"""Helpers for bench/compare.py: process-tree RSS/CPU from /proc, the machine description, OpenClaw's own
node host (`openclaw node run`) as a child process, and a loopback TCP proxy that can cut every connection
through it (to make a node reconnect on demand against the real gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.gateway import Gateway

CLK_TCK = os.sysconf("SC_CLK_TCK")


# /proc ----------------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    # the comm field may hold spaces or ')' — split after the last ')'
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (walks /proc once for the parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            ppid = int(_stat_fields(int(entry))[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_mb(root: int) -> tuple[float, int]:
    """(sum of VmRSS over the process tree in MB, number of processes)."""
    pids = tree_pids(root)
    return sum(rss_kb(p) for p in pids) / 1024, len(pids)


def tree_cpu_s(root: int) -> float:
    """user+system CPU seconds of the live processes of the tree."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine(gw: Gateway) -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    node = subprocess.run(
        [str(gw.node_bin / "node"), "--version"], capture_output=True, text=True, timeout=30
    )
    pkg = gw.install_dir / "openclaw" / "node_modules" / "openclaw" / "package.json"
    version = json.loads(pkg.read_text()).get("version", "?")
    mem = Path("/proc/meminfo").read_text().split()[1]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {model}, {int(mem) / 1024 / 1024:.1f} GB RAM, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"Node {node.stdout.strip()}, openclaw {version}"
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# OpenClaw's node host ------------------------------------------------------------------------------------
class OpenClawNodeHost:
    """`openclaw node run` from the gateway's npm install, with its own HOME / state / config (not the
    gateway's), paired through a setup code with `--pair-if-needed` (later starts reuse the device token)."""

    def __init__(self, base: Path, gw: Gateway, *, name: str = "bench-openclaw") -> None:
        self.base, self.gw, self.name = base, gw, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.setup_code = ""
        for d in ("home", "state", "tmp"):
            (base / d).mkdir(parents=True, exist_ok=True)
        # a user's node machine: nothing but "don't self-update" (the namespace has no route anyway)
        (base / "openclaw.json").write_text(json.dumps({"nodeHost": {"autoUpdate": {"enabled": False}}}))

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.gw.node_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.base / "home"),
            "TMPDIR": str(self.base / "tmp"),
            "OPENCLAW_STATE_DIR": str(self.base / "state"),
            "OPENCLAW_CONFIG_PATH": str(self.base / "openclaw.json"),
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "NO_COLOR": "1",
            "LANG": "C.UTF-8",
        }

    def start(self) -> None:
        assert self.setup_code, "mint a setup code first"
        log = open(self.base / "node.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(self.gw.openclaw),
                "node",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gw.port),
                "--display-name",
                self.name,
                "--pair-if-needed",
                self.setup_code,
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.base,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def node_id(self) -> str:
        out = subprocess.run(
            [str(self.gw.openclaw), "node", "identity", "--json"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return str(json.loads(out.stdout[out.stdout.find("{") :])["deviceId"])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group we started, SIGKILL if it lingers."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def log(self) -> str:
        try:
            return (self.base / "node.log").read_text(errors="replace")
        except OSError:
            return ""


# a proxy that can drop every connection ---------------------------------------------------------------
class CutProxy:
    """127.0.0.1:port → the gateway. cut() closes both sides of every live connection (a normal close, as
    when the gateway or the link goes away), so the node reconnects; `accepted` counts connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.accepted += 1
        pair = {writer, up_writer}
        self._writers |= pair

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in pair:
                    w.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the loop is shutting down; the writers are closed by pump's finally
        finally:
            self._writers -= pair

    def cut(self) -> None:
        for w in list(self._writers):
            w.close()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def wait_until(pred: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout} s")
