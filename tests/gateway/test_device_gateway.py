"""device.info / device.status through the real gateway, and the node's telemetry (textfile + /metrics)
after those invokes, parsed with a Prometheus text-format parser; then `edgeclaw doctor` on that node."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeclaw import __version__
from tests.support.gateway import Gateway, Operator, invoke_payload, wait_for

pytestmark = pytest.mark.gateway


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_prom(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        return series(path.read_text())
    except (OSError, ValueError):
        return {}


async def test_device_commands_and_telemetry(gateway: Gateway, node_factory: Any, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "edgeclaw.prom"
    prom.parent.mkdir()
    port = free_port()
    node = node_factory(
        gateway,
        name="device-node",
        extra={
            "telemetry": {
                "textfile": str(prom),
                "textfile_interval_s": 1,
                "metrics_listen": f"127.0.0.1:{port}",
            }
        },
    )
    node_id = node.node_id
    async with Operator(gateway) as op:
        info = invoke_payload(await op.invoke(node_id, "device.info"))
        statuses = [invoke_payload(await op.invoke(node_id, "device.status")) for _ in range(3)]
        bad = await op.invoke(node_id, "system.which", {"bins": "not-a-list"})
    assert not bad["ok"] and "INVALID_REQUEST" in json.dumps(bad["error"])

    assert info["edgeclaw_version"] == __version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"device", "system"} <= set(info["capabilities"])
    assert info["uptime_s"] > 0 and info["boot_time"] > 1_600_000_000 and info["kernel"]

    first, last = statuses[0], statuses[-1]
    node_part = last["node"]
    assert node_part["connection"] == "connected" and node_part["pairing"] == "approved"
    assert node_part["reconnects"] == 0
    assert node_part["invokes"] == first["node"]["invokes"] + 2  # the two device.status calls in between
    assert 5_000_000 < node_part["rss_bytes"] < 200_000_000
    assert node_part["uptime_s"] >= 0
    assert set(last["disks"]) == {"root", "state_dir"} and last["disks"]["state_dir"]["path"] == str(
        node.state_dir
    )
    assert last["memory"]["total_bytes"] > last["memory"]["available_bytes"] > 0
    assert len(last["load"]) == 3
    assert "throttling" not in last  # this test host is no Raspberry Pi: absent, not zero

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        s = read_prom(prom)
        key = ("edgeclaw_invokes_total", (("command", "device.status"), ("outcome", "ok")))
        return s if s.get(key) == 3 else {}

    s = wait_for(counted, 15, what="textfile with 3 device.status invokes")
    assert s[("edgeclaw_invokes_total", (("command", "device.info"), ("outcome", "ok")))] == 1
    assert s[("edgeclaw_invokes_total", (("command", "system.which"), ("outcome", "error")))] == 1
    assert (
        s[("edgeclaw_invoke_errors_total", (("code", "INVALID_REQUEST"), ("command", "system.which")))] == 1
    )
    dur = (("command", "device.status"), ("outcome", "ok"))
    assert s[("edgeclaw_invoke_duration_seconds_count", dur)] == 3
    assert s[("edgeclaw_invoke_duration_seconds_bucket", tuple(sorted((*dur, ("le", "+Inf")))))] == 3
    assert 0 < s[("edgeclaw_invoke_duration_seconds_sum", dur)] < 3
    assert s[("edgeclaw_connected", ())] == 1
    assert s[("edgeclaw_reconnects_total", ())] == 0
    assert s[("edgeclaw_last_hello_ok_timestamp_seconds", ())] > 1_600_000_000
    assert s[("edgeclaw_pairing_state", (("state", "approved"),))] == 1
    assert s[("edgeclaw_withheld_commands", ())] == 0
    assert 5_000_000 < s[("edgeclaw_resident_memory_bytes", ())] < 200_000_000
    assert ("edgeclaw_event_loop_lag_seconds", ()) in s

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        live = series(resp.read().decode())
    assert live[("edgeclaw_invokes_total", dur)] == 3

    # the doctor, run against this live node, finds it paired, approved and allowed
    out = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "--config", str(node.config_path), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = {c["id"]: c for c in json.loads(out.stdout)["checks"]}
    assert report["gateway"]["status"] == "pass"
    assert report["pairing"]["status"] == "pass" and "running node" in report["pairing"]["detail"]
    assert report["withheld"]["status"] == "pass"

    # stopping: the last textfile write records the node as disconnected
    assert node.stop() == 0
    assert read_prom(prom)[("edgeclaw_connected", ())] == 0


async def test_withheld_device_commands_are_reported(gateway_factory: Any, node_factory: Any) -> None:
    """The allowlist footgun: a gateway without device.* in commands.allow hides them silently; the node
    notices (plugin-tool echo) and the doctor names the exact fix."""
    gw = gateway_factory(allow=[])
    # diagnostics off: this test is about device.* (its commands would be withheld here too)
    node = node_factory(gw, name="withheld-node", extra={"diagnostics": {"enabled": False}})
    wait_for(lambda: node.live_status().get("withheld_commands"), 30, what="withheld commands noticed")
    assert set(node.live_status()["withheld_commands"]) == {"device.info", "device.status"}
    async with Operator(gw) as op:
        frame = await op.invoke(node.node_id, "device.status")
    assert not frame["ok"] and "allowlist" in json.dumps(frame["error"])
    out = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "--config", str(node.config_path), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    withheld = {c["id"]: c for c in json.loads(out.stdout)["checks"]}["withheld"]
    assert withheld["status"] == "fail"
    assert (
        'openclaw config set gateway.nodes.commands.allow \'["device.info", "device.status"]\''
        in withheld["fix"]
    )
