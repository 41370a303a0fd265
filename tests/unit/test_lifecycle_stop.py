"""SIGTERM/SIGINT: outputs reach their safe state before main() returns, even with a second signal
mid-stop (under systemd the unit's ExecStopPost= would hide the bug; here nothing rescues it)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakegateway import FakeGateway
from tests.unit.daemonharness import RELAY, running_daemon, wait_until, write_config


def relay_pin(daemon: Any) -> Any:
    return daemon.caps["gpio"].pins["relay"].device.pin


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_puts_outputs_in_safe_state_before_main_returns(
    tmp_path: Path, gw: FakeGateway, sig: int
) -> None:
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        result = await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        assert result.get("ok") is True, result
        pin = relay_pin(daemon)
        assert pin.state == 1
        os.kill(os.getpid(), sig)
        code = await asyncio.wait_for(asyncio.shield(task), 30)
    assert code == 0
    assert pin.state == 0, "the relay was left on: stop() did not finish before main() returned"
    assert daemon.caps == {}


@pytest.mark.timeout(60)
async def test_a_second_sigterm_mid_stop_does_not_abort_it(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop is slow (an invoke still draining); more SIGTERMs (an impatient operator, systemd's
    KillMode) arrive meanwhile and must neither cut the stop short nor start a second one."""
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        pin = relay_pin(daemon)
        gpio = daemon.caps["gpio"]
        real_stop = gpio.stop
        calls: list[int] = []

        async def slow_stop() -> None:
            calls.append(1)
            await asyncio.sleep(0.5)  # the signals below land here
            await real_stop()

        monkeypatch.setattr(gpio, "stop", slow_stop)
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(lambda: calls, 10, "capability stop started")
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
        task.cancel()  # even the main task being cancelled must not abandon the outputs
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 30)
    assert pin.state == 0
    assert calls == [1]


@pytest.mark.timeout(60)
async def test_stop_from_code_and_a_signal_together_run_one_stop(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """`edgeclaw pair` calls Daemon.stop() while main() runs; with a SIGTERM on top, two stop sequences
    raced over the same capabilities (KeyError from the second, found by the systemd tier)."""
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, gw.url, shell={"enabled": True})
    async with running_daemon(path) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        pin = relay_pin(daemon)
        stopper = asyncio.get_running_loop().create_task(daemon.stop())
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopper, 30)
        assert pin.state == 0  # stop() returned: the outputs are safe by then
        assert await asyncio.wait_for(asyncio.shield(task), 30) == 0
    assert "Traceback" not in caplog.text and "stopping failed" not in caplog.text
    assert caplog.text.count("stopping: draining") == 1


@pytest.mark.timeout(90)
async def test_sigterm_to_the_process_sets_the_relay_safe_before_it_exits(
    tmp_path: Path, gw: FakeGateway
) -> None:
    """The same across the process boundary, no systemd (no ExecStopPost= to rescue it): `edgeclaw run`
    on a simulated board, relay driven to 1 by an invoke, SIGTERM; the safe write is logged before exit."""
    from tests.support.node import NodeProcess

    node = NodeProcess(
        tmp_path / "node",
        None,
        url=gw.url,
        extra={"gpio": {"enabled": True, "pins": {"relay": RELAY}}, "telemetry": {"textfile": None}},
    )
    (node.base / "gateway.token").write_text("fake-token-123456\n")
    node.start()
    try:
        await gw.wait_hello(1, timeout=30)
        result = await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        assert result.get("ok") is True, result
    finally:
        code = node.stop(signal.SIGTERM, timeout=30)
    log = node.log()
    assert code == 0, log[-3000:]
    assert "gpio safe stop: relay = 0" in log, log[-3000:]
    assert log.index("gpio safe stop: relay = 0") < log.index("exited after")
