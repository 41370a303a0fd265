"""Invoke deadlines are enforced by the dispatcher: an overrun handler is cancelled and answered
TIMEOUT, a pulse ends at its invoke's deadline with the pin back at rest, and the watchdog only
calls the node stuck when a handler ignores the cancel. Real NodeRunner/Dispatcher, fake gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler, InvokeContext
from edgeclaw.capabilities.gpio import create
from edgeclaw.node.dispatch import DEADLINE_GRACE_S
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node
from tests.unit.test_gpio_capability import gpio_config

pytestmark = pytest.mark.timeout(60)

WATCHDOG_GRACE = 30.0  # what NodeRunner.health() gives a cancelled handler


async def _settled(node: Any) -> None:
    """The result reaches the gateway a loop turn before the invoke's task is gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while node.dispatcher.in_flight:
        assert loop.time() < deadline, "the invoke task is still running after its answer"
        await asyncio.sleep(0.01)


class Sleeper(Capability):
    """slow.sleep sleeps `s` seconds; slow.stubborn also swallows the first cancel."""

    manifest = CapabilityManifest(name="slow", caps=("slow",), commands=("slow.sleep", "slow.stubborn"))

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self.release = asyncio.Event()
        self.cancels = 0

    def handlers(self) -> dict[str, Handler]:
        async def sleep(ctx: InvokeContext) -> dict[str, Any]:
            await asyncio.sleep(ctx.params["s"])
            return {"slept": True}

        async def stubborn(ctx: InvokeContext) -> dict[str, Any]:
            try:
                await asyncio.sleep(ctx.params["s"])
            except asyncio.CancelledError:
                self.cancels += 1
                await self.release.wait()  # a handler that does not let go
            return {"slept": False}

        return {"slow.sleep": sleep, "slow.stubborn": stubborn}


async def test_overrun_handler_is_cancelled_answered_timeout_and_the_node_stays_healthy(
    tmp_path: Path, gw: FakeGateway
) -> None:
    cap = Sleeper()
    async with running_node(tmp_path, gw, extra_caps=[cap]) as node:
        await gw.wait_hello(1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rid = await gw.invoke("slow.sleep", {"s": 120}, timeout_ms=300)
        result = await gw.result_for(rid, timeout=5)
        took = loop.time() - t0
        assert result["ok"] is False and result["error"]["code"] == "TIMEOUT", result
        assert "300 ms" in result["error"]["message"]
        assert took < 0.3 + DEADLINE_GRACE_S + 1.0, f"answered after {took:.1f} s"
        await _settled(node)
        # the watchdog's view past its grace: nothing is stuck
        assert node.health(loop.time() + WATCHDOG_GRACE + 5) is None
        assert node.dispatcher.oldest_overdue(loop.time() + 600, grace=WATCHDOG_GRACE) is None
        ok = await gw.result_for(await gw.invoke("slow.sleep", {"s": 0.01}, timeout_ms=2000))
        assert ok["ok"] is True


async def test_a_handler_that_ignores_the_cancel_is_what_the_watchdog_sees(
    tmp_path: Path, gw: FakeGateway
) -> None:
    cap = Sleeper()
    async with running_node(tmp_path, gw, extra_caps=[cap]) as node:
        await gw.wait_hello(1)
        loop = asyncio.get_running_loop()
        rid = await gw.invoke("slow.stubborn", {"s": 120}, timeout_ms=200)
        deadline = loop.time() + 5
        while cap.cancels == 0:
            if loop.time() > deadline:
                cap.release.set()
                node.dispatcher.on_invoke_cancel({"invokeId": rid})  # do not leave it running
                pytest.fail("the dispatcher never cancelled the overrun handler")
            await asyncio.sleep(0.02)
        now = loop.time()
        assert node.dispatcher.oldest_overdue(now, grace=WATCHDOG_GRACE) is None  # just cancelled
        stuck = node.health(now + WATCHDOG_GRACE + 1)
        assert stuck is not None and rid in stuck and "stuck" in stuck
        cap.release.set()
        await gw.result_for(rid, timeout=5)
        await _settled(node)
        assert node.dispatcher.oldest_overdue(loop.time() + 600, grace=WATCHDOG_GRACE) is None


async def test_pulse_past_its_deadline_ends_at_the_deadline_with_the_pin_at_rest(
    tmp_path: Path, gw: FakeGateway
) -> None:
    pins = {"relay": {"pin": "GPIO17", "kind": "output", "safe_state": 0, "max_pulse_ms": 120_000}}
    caps: list[Any] = []

    def gpio(runner: Any) -> list[Capability]:
        caps.append(create(gpio_config(pins), runner))
        return caps

    async with running_node(tmp_path, gw, started_caps=gpio) as node:
        await gw.wait_hello(1)
        relay = caps[0].pins["relay"].device.pin
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # the review's case, scaled down 60×: ms=120000, timeoutMs=30000
        rid = await gw.invoke("gpio.pulse", {"name": "relay", "ms": 2000}, timeout_ms=500)
        await asyncio.sleep(0.2)
        assert relay.state == 1  # pulsing
        result = await gw.result_for(rid, timeout=5)
        took = loop.time() - t0
        assert result["ok"] is False and result["error"]["code"] == "TIMEOUT", result
        assert took < 0.5 + DEADLINE_GRACE_S, f"answered after {took:.1f} s"
        assert relay.state == 0  # back at rest at the deadline, not 1.5 s later
        await asyncio.sleep(2.0)
        assert [s.state for s in relay.states] == [False, True, False]  # no late second restore
        assert node.health(loop.time()) is None
        await _settled(node)


async def test_gateway_cancel_ends_a_pulse_at_once(tmp_path: Path, gw: FakeGateway) -> None:
    pins = {"relay": {"pin": "GPIO17", "kind": "output", "safe_state": 0, "max_pulse_ms": 60_000}}
    caps: list[Any] = []

    def gpio(runner: Any) -> list[Capability]:
        caps.append(create(gpio_config(pins), runner))
        return caps

    async with running_node(tmp_path, gw, started_caps=gpio):
        await gw.wait_hello(1)
        relay = caps[0].pins["relay"].device.pin
        rid = await gw.invoke("gpio.pulse", {"name": "relay", "ms": 30_000}, timeout_ms=40_000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while relay.state != 1:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        await gw.send_event("node.invoke.cancel", {"invokeId": rid, "nodeId": "n"})
        deadline = loop.time() + 2
        while relay.state != 0:
            assert loop.time() < deadline, "a cancelled pulse kept the relay on"
            await asyncio.sleep(0.02)
