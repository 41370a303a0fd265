"""The daemon in-process against the fake gateway: a crash injected into each supervised child is
restarted, counted and shown in status.json and `edgeclaw status`; a child that keeps crashing makes
main() return EX_SOFTWARE (70), which the unit restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.cli import _print_status
from edgeclaw.node import surface
from edgeclaw.node.connection import ConnectionMixin
from edgeclaw.node.daemon import Daemon
from edgeclaw.platform.metrics import LoopLag
from edgeclaw.platform.supervisor import EX_SOFTWARE
from edgeclaw.platform.systemd import Notifier
from edgeclaw.platform.telemetry import Telemetry
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import make_config


def crash_once(target: Callable[..., Any], label: str) -> Callable[..., Any]:
    """`target`, except that its first call raises (the crash injected into one child)."""
    left = [RuntimeError(f"injected into {label}")]

    if asyncio.iscoroutinefunction(target):

        async def acall(*args: Any, **kwargs: Any) -> Any:
            if left:
                raise left.pop()
            return await target(*args, **kwargs)

        return acall

    def call(*args: Any, **kwargs: Any) -> Any:
        if left:
            raise left.pop()
        return target(*args, **kwargs)

    return call


@contextlib.asynccontextmanager
async def daemon_task(tmp_path: Path, gw: FakeGateway, **overrides: Any) -> AsyncIterator[tuple[Daemon, Any]]:
    config = make_config(tmp_path, gw.url, telemetry={"textfile": None}, **overrides)
    daemon = Daemon(config, None)
    daemon.supervisor.backoff_initial_s = 0.05
    daemon.supervisor.backoff_max_s = 0.2
    task = asyncio.get_running_loop().create_task(daemon.main())
    try:
        yield daemon, task
    finally:
        if not task.done():
            daemon._on_stop_signal()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_a_crash_in_each_child_is_restarted_counted_and_shown_in_status(
    tmp_path: Path,
    gw: FakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # the watchdog loop runs (every 0.1 s)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(Telemetry, "write_now", crash_once(Telemetry.write_now, "telemetry"))
    monkeypatch.setattr(LoopLag, "observe", crash_once(LoopLag.observe, "loop-lag"))
    monkeypatch.setattr(Notifier, "watchdog", crash_once(Notifier.watchdog, "watchdog"))
    monkeypatch.setattr(surface, "host_stats", crash_once(surface.host_stats, "host-stats"))
    monkeypatch.setattr(
        ConnectionMixin, "_one_connection", crash_once(ConnectionMixin._one_connection, "connection")
    )
    children = ["telemetry", "loop-lag", "watchdog", "connection", "node/host-stats"]
    status_file = tmp_path / "run" / "status.json"

    def restarted() -> dict[str, Any]:
        doc = json.loads(status_file.read_text()) if status_file.exists() else {}
        tasks = doc.get("tasks", {})
        return {c: tasks.get(f"edgeclaw/{c}", {}) for c in children} | {"total": doc.get("task_restarts")}

    async with daemon_task(tmp_path, gw) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        await until(lambda: all(v.get("restarts") == 1 for k, v in restarted().items() if k != "total"))
        state = restarted()
        assert state["total"] == 5
        for child in children:
            assert state[child]["state"] == "running"
            assert f"injected into {child.split('/')[-1]}" in state[child]["last_error"]
            assert any(f"edgeclaw/{child} failed: RuntimeError" in r.getMessage() for r in caplog.records), (
                child
            )
        assert not task.done()
        assert daemon.health() is None
        assert daemon.telemetry.metrics.child_restarts["edgeclaw/telemetry"] == 1
        assert 'edgeclaw_supervisor_restarts_total{child="edgeclaw/node/host-stats"} 1' in (
            daemon.telemetry.render()
        )
        _print_status(json.loads(status_file.read_text()))
        line = next(x for x in capsys.readouterr().out.splitlines() if "task restarts" in x)
        assert line.split()[2:4] == ["5:", "edgeclaw/connection"]
        assert "edgeclaw/loop-lag running ×1 (RuntimeError: injected into loop-lag)" in line
        rid = await gw.invoke("system.which", {"bins": ["sh"]})
        assert (await gw.result_for(rid))["ok"]
    assert task.result() == 0


async def test_a_child_in_backoff_is_unhealthy_and_in_the_status_line(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LoopLag, "observe", crash_once(LoopLag.observe, "loop-lag"))
    async with daemon_task(tmp_path, gw) as (daemon, _task):
        daemon.supervisor.backoff_initial_s = daemon.supervisor.backoff_max_s = 30.0
        await gw.wait_hello(1, timeout=10)
        await until(lambda: daemon.supervisor.children["loop-lag"].state == "backoff")
        reason = daemon.health()
        assert reason is not None and "loop-lag is down" in reason
        assert daemon.runner is not None
        await until(lambda: "task down: edgeclaw/loop-lag" in daemon.runner.status.line())


async def test_past_the_restart_intensity_the_daemon_exits_70(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def always(self: LoopLag, lag_s: float, now: float | None = None) -> None:
        raise RuntimeError("the lag monitor is broken")

    monkeypatch.setattr(LoopLag, "observe", always)
    async with daemon_task(tmp_path, gw) as (daemon, task):
        daemon.supervisor.backoff_max_s = 0.05
        code = await asyncio.wait_for(task, 15)
    assert code == EX_SOFTWARE == 70
    assert daemon.supervisor.children["loop-lag"].restarts == daemon.supervisor.intensity
    assert any("supervisor edgeclaw gives up" in r.getMessage() for r in caplog.records)


async def test_a_capability_that_fails_to_start_is_retried_and_joins_the_surface(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeclaw.capabilities.device import DeviceCapability

    monkeypatch.setattr(DeviceCapability, "start", crash_once(DeviceCapability.start, "device start"))
    async with daemon_task(tmp_path, gw) as (daemon, _task):
        daemon.cap_starts.backoff_initial_s = 0.5
        await gw.wait_hello(1, timeout=10)
        assert "device.info" not in gw.connects[0]["commands"]
        await gw.wait_hello(2, timeout=10)  # the late start widened the surface: a reconnect declares it
        assert "device.info" in gw.connects[-1]["commands"]
        assert "device" in daemon.caps
        assert daemon.health() is None


async def test_a_stop_finishes_its_work_before_main_returns(tmp_path: Path, gw: FakeGateway) -> None:
    """main() waits for stop() once the connection child is done (it used to race it): an output at 1
    with a safe state is at 0 when main() returns."""
    gpio = {"enabled": True, "pins": {"relay": {"pin": 17, "kind": "output", "safe_state": 0}}}
    async with daemon_task(tmp_path, gw, gpio=gpio) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        relay = daemon.caps["gpio"].pins["relay"]
        relay.write(1)
        mock_pin = relay.device.pin
        assert mock_pin.state == 1
        daemon._on_stop_signal()
        assert await asyncio.wait_for(task, 10) == 0
        assert mock_pin.state == 0
