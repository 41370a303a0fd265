"""Node core against the REAL OpenClaw gateway: pairing (both approvals), token reuse, invokes, restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import setup_code
from tests.support.gateway import ROOT, Gateway, Operator, invoke_payload, wait_for
from tests.support.node import NodeProcess

pytestmark = pytest.mark.timeout(400)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _pair_cli(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeclaw", "--config", str(config), "pair", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )


def test_fresh_node_pairs_through_both_approvals_and_serves(gateway: Gateway, tmp_path: Path) -> None:
    """`edgeclaw pair` → pending device (with our display name) → approve → connects by itself → pending
    surface → approve → `nodes status` connected+approved → `nodes invoke system.which` returns real paths."""
    token_file = tmp_path / "gw.token"
    token_file.write_text(gateway.token)
    config = tmp_path / "config.yaml"
    output: list[str] = []
    proc = _pair_cli(
        config,
        "--display-name",
        "Garage Pi",
        "--gateway",
        gateway.url,
        "--token-file",
        str(token_file),
        "--state-dir",
        str(tmp_path / "state"),
        "--runtime-dir",
        str(tmp_path / "run"),
        "--hardware",
        "simulated",
        "--wait",
        "240",
    )
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        device_id = wait_for(
            lambda: next((line.split()[-1] for line in output if line.startswith("device id:")), None),
            30,
            what="device id printed",
        )
        pending = wait_for(
            lambda: [p for p in gateway.pending_devices() if p.get("deviceId") == device_id],
            60,
            interval=1,
            what="pending device",
        )
        assert pending[0].get("displayName") == "Garage Pi"
        rid = pending[0]["requestId"]
        wait_for(
            lambda: any(f"openclaw devices approve {rid}" in line for line in output), 30, what="device hint"
        )
        gateway.approve_device(rid)
        surface = wait_for(
            lambda: [p for p in gateway.pending_nodes() if p.get("nodeId") == device_id],
            60,
            interval=1,
            what="pending surface (the node connected by itself)",
        )
        srid = surface[0]["requestId"]
        wait_for(
            lambda: any(f"openclaw nodes approve {srid}" in line for line in output), 60, what="surface hint"
        )
        gateway.approve_node(srid)
        assert proc.wait(60) == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = "".join(output)
    assert "paired and approved" in text
    state = tmp_path / "state"
    assert oct((state / "identity.json").stat().st_mode & 0o777) == "0o600"
    assert oct((state / "device-token.json").stat().st_mode & 0o777) == "0o600"
    assert gateway.token not in (state / "device-token.json").read_text()

    # the daemon now starts already paired: no new pairing request, straight to serving
    node = NodeProcess.__new__(NodeProcess)
    node.__init__(tmp_path / "daemon", gateway, name="Garage Pi")  # type: ignore[misc]
    node.config_path = config
    node.state_dir, node.runtime_dir = state, tmp_path / "run"
    node.start()
    try:
        wait_for(
            lambda: node.live_status().get("pairing") == "approved", 60, what="daemon connected+approved"
        )
        assert "pairing required" not in node.log()
        assert not [p for p in gateway.pending_devices() if p.get("deviceId") == device_id]
        status = next(n for n in gateway.nodes_status() if n.get("nodeId") == device_id)
        assert status["connected"] is True and status["approvalState"] == "approved"
        assert status["displayName"] == "Garage Pi" and "system.which" in status["commands"]
        out = gateway.cli_json(
            "nodes",
            "invoke",
            "--node",
            device_id,
            "--command",
            "system.which",
            "--params",
            json.dumps({"bins": ["sh", "no-such-binary-xyz"]}),
        )
        bins = (out.get("payload") or json.loads(out["payloadJSON"]))["bins"]
        assert set(bins) == {"sh"} and Path(bins["sh"]).is_file()
        cli_status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "edgeclaw", "--config", str(config), "status", "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                env=_env(),
            ).stdout
        )
        assert cli_status["source"] == "daemon" and cli_status["connection"] == "connected"
        assert cli_status["pairing"] == "approved" and cli_status["device_id"] == device_id
        # restart: the stored device token is reused, no new pairing
        node.stop()
        node.start()
        wait_for(
            lambda: node.live_status().get("connection") == "connected", 60, what="reconnected after restart"
        )
        assert not [p for p in gateway.pending_devices() if p.get("deviceId") == device_id]
        assert not [p for p in gateway.pending_nodes() if p.get("nodeId") == device_id]
    finally:
        node.stop()


def test_setup_code_pairs_without_any_operator_step(gateway: Gateway, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeclaw",
            "--config",
            str(config),
            "pair",
            "--display-name",
            "Shed Pi",
            "--setup-code",
            setup_code(gateway),
            "--state-dir",
            str(tmp_path / "state"),
            "--runtime-dir",
            str(tmp_path / "run"),
            "--hardware",
            "simulated",
            "--wait",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "paired and approved" in proc.stdout
    assert "--setup-code-file" in proc.stderr  # the code was on argv: warned, with the better form
    assert (tmp_path / "state" / "device-token.json").exists()
    assert not (tmp_path / "state" / "setup-code").exists()  # single-use secret removed after use
    device_id = json.loads((tmp_path / "state" / "identity.json").read_text())["deviceId"]
    assert (
        next(n for n in gateway.nodes_status() if n.get("nodeId") == device_id)["approvalState"] == "approved"
    )


def test_setup_code_file_pairs_keeps_the_code_out_of_argv_and_removes_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    code = setup_code(gateway)
    code_file = tmp_path / "code.txt"
    code_file.write_text(code + "\n")
    code_file.chmod(0o600)
    proc = _pair_cli(
        tmp_path / "config.yaml",
        *("--display-name", "Barn Pi", "--setup-code-file", str(code_file), "--hardware", "simulated"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run"), "--wait", "60"),
    )
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    assert code not in cmdline and "oc-pair" not in cmdline
    assert "paired and approved" in out and "warning" not in out
    assert not code_file.exists(), "the used setup code was left behind"
    assert not (tmp_path / "state" / "setup-code").exists()
    device_id = json.loads((tmp_path / "state" / "identity.json").read_text())["deviceId"]
    assert (
        next(n for n in gateway.nodes_status() if n.get("nodeId") == device_id)["approvalState"] == "approved"
    )


async def test_unknown_command_and_bad_params_reach_the_operator_as_coded_errors(
    gateway: Gateway, node_factory: Any
) -> None:
    node = node_factory(gateway, name="coded-errors")
    async with Operator(gateway) as op:
        unknown = await op.invoke(node.node_id, "system.teleport", {})
        assert unknown["ok"] is False and unknown["error"]["code"] == "INVALID_REQUEST"
        assert "system.teleport" in unknown["error"]["message"]
        bad = await op.invoke(node.node_id, "system.notify", {"title": ""})
        assert bad["ok"] is False
        assert bad["error"]["details"]["nodeError"]["code"] == "INVALID_REQUEST"
        assert bad["error"]["message"].startswith("INVALID_REQUEST: ")
        ok = invoke_payload(
            await op.invoke(node.node_id, "system.notify", {"title": "hi", "priority": "passive"})
        )
        assert ok == {"ok": True}
    assert "notification [passive]: hi" in node.log()


def test_gateway_restart_node_serves_again_quickly(gateway_factory: Any, node_factory: Any) -> None:
    gw = gateway_factory()
    node = node_factory(gw, name="restart-node")
    reconnects_before = node.live_status()["reconnects"]
    gw.stop()
    wait_for(lambda: node.live_status().get("connection") != "connected", 30, what="node noticed")
    gw.start()
    ready_at = time.monotonic()
    wait_for(
        lambda: node.live_status().get("connection") == "connected", 60, interval=0.05, what="reconnected"
    )
    elapsed = time.monotonic() - ready_at
    print(f"\n[figure] gateway /readyz → node reconnected: {elapsed:.2f} s")
    assert node.live_status()["reconnects"] == reconnects_before + 1
    assert elapsed < 2.0, f"node took {elapsed:.2f} s after the gateway was ready"
    out = gw.cli_json(
        "nodes",
        "invoke",
        "--node",
        node.node_id,
        "--command",
        "system.which",
        "--params",
        json.dumps({"bins": ["sh"]}),
    )
    assert "sh" in (out.get("payload") or json.loads(out["payloadJSON"]))["bins"]
