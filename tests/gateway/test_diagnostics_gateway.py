"""Diagnostics through the real gateway (allowlisted): edgeclaw.logs never returns the node's real device
token, the gateway token or a setup code, in any form; edgeclaw.doctor answers its checks; device.identify
blinks a fake LED and restores it, also when the node gets SIGTERM mid-blink; the three are published as
agent tools; and the GPIO skill is no longer dropped (skills.status lists it)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.platform.redact import PIECE
from tests.gateway.conftest import setup_code
from tests.support.gateway import Operator, invoke_payload

pytestmark = pytest.mark.gateway


def fake_led(base: Path) -> Path:
    led = base / "leds" / "ACT"
    led.mkdir(parents=True)
    (led / "trigger").write_text("none [mmc0] timer heartbeat\n")
    (led / "brightness").write_text("0\n")
    (led / "max_brightness").write_text("1\n")
    return led


def led_state(led: Path) -> tuple[str, str]:
    return (led / "trigger").read_text().strip(), (led / "brightness").read_text().strip()


def leaked(text: str, secret: str) -> list[str]:
    return [secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1) if secret[i : i + PIECE] in text]


async def sample_led(led: Path, seconds: float) -> set[tuple[str, str]]:
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(led_state(led))
        await asyncio.sleep(0.02)
    return seen


async def test_diagnostics_commands_tools_and_gpio_skill(
    gateway: Any, node_factory: Any, tmp_path: Path
) -> None:
    led = fake_led(tmp_path)
    extra = {
        "diagnostics": {"leds_dir": str(tmp_path / "leds")},
        "gpio": {"enabled": True, "pins": {"relay": {"pin": "GPIO17", "kind": "output"}}},
    }
    # INVOCATION_ID empty: never the journal of whatever unit runs these tests
    node = node_factory(gateway, name="diag-board", extra=extra, env={"INVOCATION_ID": ""})
    device_token = json.loads((node.state_dir / "device-token.json").read_text())["token"]
    spare_code = setup_code(gateway)  # a real, unused setup code
    async with Operator(gateway) as op:
        nid = node.node_id
        # seed the node's own log with its secrets, whole and in pieces and encodings
        half = len(device_token) // 2
        b64_token = base64.b64encode(device_token.encode()).decode()
        for body in (
            f"device token {device_token}",
            f"gateway token {gateway.token} url {urllib.parse.quote(gateway.url + '?token=' + gateway.token)}",
            f"pair with {spare_code}",
            f"Authorization: Bearer {device_token}",
            f"first half {device_token[:half]}",
            f"{device_token[half:]} second half",
            f"b64 {b64_token}",
        ):
            res = await op.invoke(nid, "system.notify", {"title": "seed", "body": body})
            assert res.get("ok"), res
        out = invoke_payload(await op.invoke(nid, "edgeclaw.logs", {"lines": 1000}))
        text = json.dumps(out)
        assert out["source"] == "memory" and "notification [active]: seed" in text and "second half" in text
        for secret in (device_token, gateway.token, spare_code.removeprefix("oc-pair://"), b64_token):
            assert not leaked(text, secret), secret
        assert nid in text or out["count"] > 0
        bad = await op.invoke(nid, "edgeclaw.logs", {"lines": 5000})
        assert not bad["ok"] and bad["error"]["details"]["nodeError"]["code"] == "INVALID_REQUEST"

        # the doctor, run by the node itself, reaches this gateway and shows board health
        doc = invoke_payload(await op.invoke(nid, "edgeclaw.doctor", {}, timeout_ms=90000))
        checks = {c["id"]: c for c in doc["checks"]}
        assert checks["gateway"]["status"] == "pass" and checks["withheld"]["status"] == "pass", checks
        assert "board" in checks and gateway.token not in json.dumps(doc)

        # device.identify blinks the (fake) activity LED and gives it back its trigger
        task = asyncio.ensure_future(op.invoke(nid, "device.identify", {"seconds": 2}))
        seen = await sample_led(led, 1.5)
        res = invoke_payload(await task)
        assert {("none", "1"), ("none", "0")} <= seen and res["restored"] is True
        assert led_state(led)[0] == "mmc0"

        # the agent sees the three tools and the GPIO skill (the gateway no longer drops it)
        status = await op.call("skills.status", {})
        assert status.get("ok"), status
        names = json.dumps(status["payload"])
        assert "gpio-diag-board" in names, names[:2000]
        made = await op.call("sessions.create", {"key": "agent:main:diag-tools"})
        assert made.get("ok"), made
        key = made["payload"].get("key", "agent:main:diag-tools")
        eff = await op.call("tools.effective", {"sessionKey": key})
        assert eff.get("ok"), eff
        tools = {t["id"] for g in eff["payload"]["groups"] for t in g.get("tools", [])}
        assert {"edgeclaw_logs", "edgeclaw_doctor", "device_identify", "gpio_relay_write"} <= tools, tools
        assert "dropped node skill" not in gateway.log_text()

        # SIGTERM mid-blink: the node stops promptly and the LED is restored
        task = asyncio.ensure_future(op.invoke(nid, "device.identify", {"seconds": 25}))
        for _ in range(200):  # the operator's loop must run meanwhile: an async, bounded wait
            if led_state(led)[0] == "none":
                break
            await asyncio.sleep(0.05)
        assert led_state(led)[0] == "none", "not blinking within 10 s"
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert node.stop() == 0
        assert time.monotonic() - t0 < 10
        assert led_state(led)[0] == "mmc0"
        assert "identify: ACT back to trigger mmc0" in node.log()
        frame = await asyncio.wait_for(task, 20)
        assert frame.get("ok") is False or invoke_payload(frame)["cut_short"] == "node stopping"
