"""GPIO through the real gateway on a simulated board (MockFactory in the daemon, driven via its
simulation socket): commands, edges, agent.request, plugin tools, allowlist detection, spool restart."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edgeclaw.capabilities.gpio.simctl import sim_request
from tests.support.gateway import Operator, invoke_payload, wait_for

pytestmark = pytest.mark.gateway

PINS: dict[str, Any] = {
    "relay": {"pin": "GPIO17", "kind": "output", "description": "door strike relay", "safe_state": 0},
    "fan": {"pin": 13, "kind": "pwm"},
    "button": {
        "pin": "GPIO22",
        "kind": "button",
        "bounce_time": 0.02,
        "on_edge": "agent",
        "message": "{name} went {state} at {time} (#{seq})",
    },
    "door": {"pin": "GPIO23", "kind": "input", "pull": "down", "bounce_time": 0},
}


def gpio_section(pins: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"gpio": {"enabled": True, "pins": pins or PINS, **extra}}


def probe(node: Any, name: str) -> dict[str, Any]:
    return sim_request(node.runtime_dir, {"op": "probe", "name": name})


def press(node: Any, name: str, active: bool) -> None:
    answer = sim_request(node.runtime_dir, {"op": "drive", "name": name, "active": active})
    assert answer["ok"], answer


def node_error(frame: dict[str, Any]) -> str:
    assert not frame.get("ok"), frame
    return str(frame["error"]["details"]["nodeError"]["code"])


async def session_row(op: Operator, key: str) -> dict[str, Any] | None:
    res = await op.call("sessions.list", {})
    rows = [r for r in res["payload"]["sessions"] if r.get("key") == key]
    return rows[0] if rows else None


async def wait_run(op: Operator, key: str, timeout: float = 30.0) -> dict[str, Any]:
    """The session's row once an agent run has started in it (bounded wait)."""
    row: dict[str, Any] = {}
    for _ in range(int(timeout / 0.2)):
        row = await session_row(op, key) or {}
        if row.get("startedAt"):
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"no agent run in {key} within {timeout} s: {row}")


async def test_gpio_commands_tools_and_agent_wakeup(gateway: Any, node_factory: Any) -> None:
    node = node_factory(gateway, name="gpio-board", extra=gpio_section())
    node_id = node.node_id
    async with Operator(gateway) as op:
        # gpio.write changes the mock pin in the daemon
        assert probe(node, "relay")["state"] == 0
        assert (
            invoke_payload(await op.invoke(node_id, "gpio.write", {"name": "relay", "value": 1}))["value"]
            == 1
        )
        assert probe(node, "relay")["state"] == 1
        await op.invoke(node_id, "gpio.pwm", {"name": "fan", "value": 0.4, "frequency": 500})
        assert probe(node, "fan")["state"] == pytest.approx(0.4) and probe(node, "fan")["frequency"] == 500
        # gpio.read reads a driven input
        press(node, "door", True)
        assert invoke_payload(await op.invoke(node_id, "gpio.read", {"name": "door"}))["value"] == 1
        press(node, "door", False)
        assert invoke_payload(await op.invoke(node_id, "gpio.read", {"name": "door"}))["value"] == 0
        # gpio.events returns the driven edges, timestamped, in order
        got = invoke_payload(await op.invoke(node_id, "gpio.events", {"name": "door"}))
        assert [(e["name"], e["value"]) for e in got["events"]] == [("door", 1), ("door", 0)]
        assert got["events"][0]["ts_ms"] <= got["events"][1]["ts_ms"]
        # refusals keep their codes through the gateway
        assert (
            node_error(await op.invoke(node_id, "gpio.write", {"name": "GPIO4", "value": 1}))
            == "GPIO_PIN_NOT_ALLOWED"
        )
        assert node_error(await op.invoke(node_id, "gpio.read", {"name": "nope"})) == "GPIO_PIN_NOT_ALLOWED"
        assert (
            node_error(await op.invoke(node_id, "gpio.write", {"name": "door", "value": 1}))
            == "INVALID_REQUEST"
        )
        assert (
            node_error(await op.invoke(node_id, "gpio.pwm", {"name": "relay", "value": 0.5}))
            == "INVALID_REQUEST"
        )

        # a press on the agent-configured button starts an agent run (no model: the run fails)
        key = "agent:main:edgeclaw-gpio-board"
        assert await session_row(op, key) is None
        press(node, "button", True)
        await wait_run(op, key)
        node.wait_log("agent.request sent: 1 event(s)", 10)

        # the published tools reach the agent, and tools.invoke of the write tool drives the pin
        eff = await op.call("tools.effective", {"sessionKey": key})
        assert eff.get("ok"), eff
        tools = {t["id"]: t for g in eff["payload"]["groups"] for t in g.get("tools", [])}
        assert {"gpio_relay_write", "gpio_relay_pulse", "gpio_fan_pwm", "gpio_door_read", "gpio_list"} <= set(
            tools
        )
        assert "(node: gpio-board)" in tools["gpio_relay_write"]["rawDescription"]
        res = await op.call(
            "tools.invoke",
            {
                "name": "gpio_relay_write",
                "args": {"name": "relay", "value": 0},
                "sessionKey": key,
                "idempotencyKey": "gpio-tool-1",
            },
        )
        assert res.get("ok") and res["payload"]["ok"], res
        assert probe(node, "relay")["state"] == 0 and probe(node, "relay")["changes"] == 2

    # SIGTERM: outputs marked so go to their safe state before exit
    node.stop()
    assert "gpio safe stop: relay = 0" in node.log()


async def test_withheld_gpio_commands_are_detected_and_reported(
    gateway_factory: Any, node_factory: Any
) -> None:
    gw = gateway_factory(allow=["gpio.list", "gpio.read", "gpio.events"])
    node = node_factory(gw, name="gpio-withheld", extra=gpio_section())
    wait_for(lambda: node.live_status().get("withheld_commands"), 30, what="withheld commands in status")
    withheld = set(node.live_status()["withheld_commands"])
    assert {"gpio.write", "gpio.pwm", "gpio.pulse"} <= withheld
    assert not withheld & {"gpio.read", "gpio.list", "gpio.events"}
    assert "openclaw config set gateway.nodes.commands.allow" in node.log()
    status = node.status()
    assert set(status["withheld_commands"]) == withheld
    import subprocess
    import sys

    text = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "--config", str(node.config_path), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "withheld by gateway" in text and "gpio.write" in text
    # what is allowed still works
    async with Operator(gw) as op:
        assert invoke_payload(await op.invoke(node.node_id, "gpio.read", {"name": "relay"}))["value"] == 0
        frame = await op.invoke(node.node_id, "gpio.write", {"name": "relay", "value": 1})
        assert not frame["ok"] and "allowlist" in frame["error"]["message"]
    assert probe(node, "relay")["state"] == 0


async def test_spooled_agent_requests_survive_a_restart_in_order(gateway: Any, tmp_path: Any) -> None:
    from tests.gateway.conftest import setup_code
    from tests.support.node import NodeProcess

    pins = {
        "button": {
            "pin": 22,
            "kind": "button",
            "bounce_time": 0,
            "on_edge": "agent",
            "message": "press {seq} of {name}",
        }
    }
    node = NodeProcess(tmp_path / "spool", None, name="gpio-spool", extra=gpio_section(pins))
    del node.config["gateway"]["token_file"]  # first run: no gateway at all (port 9)
    node.write_config()
    try:
        node.start()  # gateway unreachable (port 9)
        wait_for(lambda: (node.runtime_dir / "gpio-sim.sock").exists() or node._dead(), 30, what="sim socket")
        assert not node._dead(), node.log()[-3000:]
        for _ in range(3):
            press(node, "button", True)
            press(node, "button", False)
        spool_file = node.state_dir / "triggers-spool.json"
        wait_for(
            lambda: spool_file.exists() and len(json.loads(spool_file.read_text())["entries"]) == 3,
            10,
            what="3 spooled requests",
        )
        assert node.stop() == 0
        assert [e["message"] for e in json.loads(spool_file.read_text())["entries"]] == [
            "press 1 of button",
            "press 3 of button",
            "press 5 of button",
        ]
        # back with a gateway: pair (setup code) and deliver
        token = tmp_path / "spool" / "gateway.token"
        token.write_text(gateway.token + "\n")
        token.chmod(0o600)
        code = tmp_path / "spool" / "setup-code"
        code.write_text(setup_code(gateway))
        code.chmod(0o600)
        node.config["gateway"].update(
            {"url": gateway.url, "token_file": str(token), "setup_code_file": str(code)}
        )
        node.write_config()
        node.start()
        wait_for(
            lambda: not json.loads(spool_file.read_text())["entries"] or node._dead(),
            90,
            what="spool drained",
        )
        sent = [line for line in node.log().splitlines() if "agent.request sent" in line]
        # the backlog for one session goes out as ONE request, oldest first: the gateway runs separate
        # agent.requests concurrently, so three requests could reach the agent out of order
        assert len(sent) == 1 and sent[0].endswith("3 event(s), 0 photo(s) (spool #1,#2,#3)"), sent
        async with Operator(gateway) as op:
            await wait_run(op, "agent:main:edgeclaw-gpio-spool")
    finally:
        node.stop()


async def test_pulse_past_its_deadline_ends_at_the_deadline_through_the_gateway(
    gateway: Any, node_factory: Any
) -> None:
    """The review's case (gpio.pulse ms=120000, timeoutMs=30000; here 3000): the caller gets TIMEOUT,
    the relay is back at rest at the deadline, not two minutes later, and the node keeps serving."""
    pins = {"relay": {**PINS["relay"], "max_pulse_ms": 120_000}}
    node = node_factory(gateway, name="gpio-deadline", extra=gpio_section(pins))
    async with Operator(gateway) as op:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending = asyncio.ensure_future(
            op.invoke(node.node_id, "gpio.pulse", {"name": "relay", "ms": 120_000}, timeout_ms=3000)
        )
        await asyncio.to_thread(wait_for, lambda: probe(node, "relay")["state"] == 1, 10, 0.05, "pulsing")
        frame = await asyncio.wait_for(pending, 30)
        assert not frame.get("ok") and "TIMEOUT" in json.dumps(frame["error"]), frame
        await asyncio.to_thread(wait_for, lambda: probe(node, "relay")["state"] == 0, 5, 0.05, "at rest")
        rest_after = loop.time() - t0
        assert rest_after < 3 + 2, f"relay at rest only after {rest_after:.1f} s"
        assert "pulse cut" in node.log()
        assert node.live_status().get("connection") == "connected"
        read = await op.invoke(node.node_id, "gpio.read", {"name": "relay"})
        assert invoke_payload(read)["value"] == 0
    print(f"\n[figure] gpio.pulse 120 s with a 3 s deadline: relay at rest after {rest_after:.1f} s")
