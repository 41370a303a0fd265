"""The supervisor: a crashing child is restarted (logged, counted, visible), a child that keeps crashing
escalates, and the root's escalation is what makes the process exit with EX_SOFTWARE."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.supervisor import EX_SOFTWARE, Escalated, Restart, Supervisor


def fast(**kw: Any) -> Supervisor:
    kw.setdefault("backoff_initial_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return Supervisor("root", **kw)


async def until(cond: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_a_crashed_child_is_restarted_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[dict[str, Any]] = []
    bus.subscribe(lambda name, f: seen.append(f) if name == events.CHILD_RESTART else None)
    sup = fast(bus=bus)
    runs = 0

    async def pump() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise TypeError("'<' not supported between 'str' and 'float'")
        await asyncio.sleep(3600)

    sup.start_child("pump", pump)
    await until(lambda: runs == 2)
    snap = sup.snapshot()["root/pump"]
    assert snap["state"] == "running" and snap["restarts"] == 1
    assert "TypeError" in snap["last_error"]
    assert seen == [{"child": "root/pump", "error": snap["last_error"]}]
    assert any("root/pump failed: TypeError" in r.getMessage() for r in caplog.records)
    assert sup.health() is None
    await sup.stop()


async def test_a_child_in_backoff_makes_the_supervisor_unhealthy() -> None:
    sup = fast(backoff_initial_s=5, backoff_max_s=5)

    async def crash() -> None:
        raise RuntimeError("boom")

    sup.start_child("edge-watcher", crash)
    await until(lambda: sup.children["edge-watcher"].state == "backoff")
    reason = sup.health()
    assert reason is not None and "edge-watcher is down" in reason and "boom" in reason
    await sup.stop()


async def test_past_the_intensity_the_root_escalates() -> None:
    sup = fast(intensity=3, period_s=10)

    async def crash() -> None:
        raise OSError("always")

    sup.start_child("conn", crash)
    with pytest.raises(Escalated) as info:
        await asyncio.wait_for(sup.join("conn"), 3)
    assert "failed 4 times" in info.value.reason
    assert sup.children["conn"].restarts == 3
    assert EX_SOFTWARE == 70
    await sup.stop()


async def test_a_transient_child_that_returns_is_done_and_a_permanent_one_restarts() -> None:
    sup = fast()
    calls = {"job": 0, "loop": 0}

    async def job() -> None:
        calls["job"] += 1

    async def loop() -> None:
        calls["loop"] += 1
        if calls["loop"] > 2:
            await asyncio.sleep(3600)

    sup.start_child("job", job, restart=Restart.TRANSIENT)
    sup.start_child("loop", loop)
    await asyncio.wait_for(sup.join("job"), 2)
    await until(lambda: calls["loop"] == 3)
    assert calls["job"] == 1 and sup.children["job"].state == "done"
    assert sup.children["loop"].restarts == 2
    await sup.stop()


async def test_a_fatal_error_is_not_retried_but_escalates_at_once() -> None:
    class Fatal(Exception):
        pass

    sup = fast(fatal=(Fatal,))
    node = sup.child_supervisor("node")

    async def run() -> None:
        raise Fatal("credentials refused")

    node.start_child("connection", run, restart=Restart.TRANSIENT)
    with pytest.raises(Escalated) as info:
        await asyncio.wait_for(node.join("connection"), 2)
    assert isinstance(info.value.cause, Fatal)
    assert node.children["connection"].restarts == 0
    await sup.stop()


async def test_a_nested_supervisor_that_gives_up_is_restarted_whole_by_its_parent() -> None:
    root = fast(intensity=5, period_s=10)
    gpio = root.child_supervisor("gpio", intensity=1, period_s=10, backoff_initial_s=0.01)
    starts = {"spool": 0, "failsafe": 0}

    async def spool() -> None:
        starts["spool"] += 1
        if starts["spool"] <= 2:
            raise ValueError("bad entry")
        await asyncio.sleep(3600)

    async def failsafe() -> None:
        starts["failsafe"] += 1
        await asyncio.sleep(3600)

    gpio.start_child("spool", spool)
    gpio.start_child("failsafe", failsafe)
    await until(lambda: starts["spool"] == 3)
    # the second crash exceeded gpio's intensity (1): the whole subtree was restarted by the root
    assert starts["failsafe"] == 2
    assert root.total_restarts() >= 3
    assert set(root.snapshot()) == {"root/gpio/spool", "root/gpio/failsafe"}
    await until(lambda: root.health() is None)
    await root.stop()


async def test_short_tasks_are_logged_not_restarted_and_cancelled_on_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    sup = fast()

    async def once() -> None:
        raise KeyError("x")

    failed = sup.spawn(once(), "reconnect-close")
    await asyncio.wait({failed}, timeout=1)
    await asyncio.sleep(0)
    assert any("reconnect-close failed" in r.getMessage() for r in caplog.records)
    hanging = sup.spawn(asyncio.sleep(3600), "after-connect")
    await sup.stop()
    assert hanging.cancelled()


async def test_stop_child_and_start_child_are_idempotent() -> None:
    sup = fast()
    starts = 0

    async def timer() -> None:
        nonlocal starts
        starts += 1
        await asyncio.sleep(3600)

    first = sup.start_child("failsafe", timer, restart=Restart.TRANSIENT)
    assert sup.start_child("failsafe", timer, restart=Restart.TRANSIENT) is first
    await asyncio.sleep(0.01)
    assert starts == 1 and sup.is_active("failsafe")
    await sup.stop_child("failsafe")
    assert not sup.is_active("failsafe")
    await sup.stop_child("failsafe")
    await sup.stop()
