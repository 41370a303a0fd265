"""An EdgeClaw daemon as a child process for tests: config in a temp dir, logs captured, stop by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import Gateway, wait_for

ROOT = Path(__file__).resolve().parents[2]


class NodeProcess:
    def __init__(
        self,
        base: Path,
        gateway: Gateway | None,
        *,
        name: str = "test-node",
        extra: dict[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.state_dir = base / "state"
        self.runtime_dir = base / "run"
        self.config_path = base / "config.yaml"
        self.log_path = base / "node.log"
        self.name = name
        self.gateway = gateway
        self.proc: subprocess.Popen[bytes] | None = None
        token_file = base / "gateway.token"
        if gateway is not None:
            token_file.write_text(gateway.token + "\n")
            token_file.chmod(0o600)
        self.config: dict[str, Any] = {
            "gateway": {
                "url": url or (gateway.url if gateway else "ws://127.0.0.1:9"),
                "token_file": str(token_file),
                "pairing_retry_s": 2,
            },
            "node": {
                "display_name": name,
                "state_dir": str(self.state_dir),
                "runtime_dir": str(self.runtime_dir),
                "hardware": "simulated",
            },
            "log": {"level": "debug"},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key].update(value)
            else:
                self.config[key] = value
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeclaw", "--config", str(self.config_path), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.base,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 30.0, *, after: int = 0) -> None:
        wait_for(lambda: needle in self.log()[after:] or self._dead(), timeout, what=f"log line {needle!r}")
        if needle not in self.log()[after:]:
            raise AssertionError(f"node exited before logging {needle!r}:\n{self.log()[-3000:]}")

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "edgeclaw", "--config", str(self.config_path), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return dict(json.loads(out.stdout))

    def live_status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.runtime_dir / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def identity(self) -> dict[str, Any]:
        doc = json.loads((self.state_dir / "identity.json").read_text())
        return dict(doc)

    @property
    def node_id(self) -> str:
        return str(self.identity()["deviceId"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return int(code)


def pair_and_approve(gateway: Gateway, node: NodeProcess, timeout: float = 90.0) -> str:
    """Drive both approvals from the operator side, as a user would; returns the node id."""
    node_id = wait_for(
        lambda: node.state_dir.joinpath("identity.json").exists() and node.node_id, 30, what="identity"
    )
    pending = wait_for(
        lambda: [p for p in gateway.pending_devices() if p.get("deviceId") == node_id],
        timeout,
        interval=1,
        what="pending device pairing",
    )
    gateway.approve_device(pending[0]["requestId"])
    wait_for(lambda: node.live_status().get("connection") == "connected", timeout, what="node connected")
    surface = wait_for(
        lambda: [p for p in gateway.pending_nodes() if p.get("nodeId") == node_id],
        timeout,
        interval=1,
        what="pending node surface",
    )
    gateway.approve_node(surface[0]["requestId"])
    wait_for(lambda: node.live_status().get("pairing") == "approved", timeout, what="surface approved")
    return str(node_id)


def wait_connected(node: NodeProcess, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    wait_for(
        lambda: node.live_status().get("connection") == "connected" or node._dead(), timeout, what="connected"
    )
    if node._dead():
        raise AssertionError(f"node died:\n{node.log()[-3000:]}")
    _ = t0


def child_pids(pid: int) -> list[int]:
    """A process's direct children (from every thread: a child belongs to the thread that forked it)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids
