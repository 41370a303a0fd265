"""SIGHUP: one reload at a time, validated first, applied all or nothing, always ending with READY=1 and a
STATUS= that says what happened; display name and token are re-read and announced by a reconnect."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.gpio.capability import GpioCapability
from tests.support.fakegateway import FakeGateway
from tests.unit.daemonharness import RELAY, running_daemon, wait_until, write_config

LAMP: dict[str, Any] = {"pin": "GPIO27", "kind": "output", "safe_state": 0}


def datagrams(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            return out


async def wait_ready_after_reload(sock: socket.socket, timeout: float = 10.0) -> tuple[list[str], str]:
    """All datagrams up to the READY=1 that ends a reload; returns them and that READY's STATUS=."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reloading = False
    while loop.time() < deadline:
        for msg in datagrams(sock):
            seen.append(msg)
            lines = msg.splitlines()
            reloading = reloading or "RELOADING=1" in lines
            if reloading and "READY=1" in lines:
                return seen, next((x[7:] for x in lines if x.startswith("STATUS=")), "")
        await asyncio.sleep(0.02)
    raise AssertionError(f"no READY=1 after RELOADING=1: {seen}")


class LiveGpio:
    """Counts GPIO capabilities started and not stopped: two alive means an orphan holding pins."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, open_s: float = 0.0) -> None:
        self.alive: set[int] = set()
        self.most = 0
        real_start, real_stop = GpioCapability.start, GpioCapability.stop

        async def start(cap: GpioCapability) -> None:
            await asyncio.sleep(open_s)  # opening real lines takes a while: the second SIGHUP lands here
            await real_start(cap)
            self.alive.add(id(cap))
            self.most = max(self.most, len(self.alive))

        async def stop(cap: GpioCapability) -> None:
            self.alive.discard(id(cap))
            await real_stop(cap)

        monkeypatch.setattr(GpioCapability, "start", start)
        monkeypatch.setattr(GpioCapability, "stop", stop)


@pytest.mark.timeout(60)
async def test_two_quick_sighups_never_run_two_reloads_or_two_gpio_sets(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveGpio(monkeypatch, open_s=0.05)
    path = write_config(tmp_path, gw.url, gpio={"enabled": False})
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        datagrams(notify)
        running = [0]
        most = [0]
        real_reload = daemon.reload

        async def counted() -> None:
            running[0] += 1
            most[0] = max(most[0], running[0])
            try:
                await real_reload()
            finally:
                running[0] -= 1

        monkeypatch.setattr(daemon, "reload", counted)
        write_config(tmp_path, gw.url, gpio={"enabled": True, "pins": {"relay": RELAY}})
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: "gpio" in daemon.caps and running[0] == 0, 10, "gpio enabled")
        await asyncio.sleep(0.3)  # a second (coalesced) reload may follow; let it finish
        await wait_until(lambda: running[0] == 0, 10, "reloads done")
        assert most[0] == 1, "two reloads ran at once"
        assert len(live.alive) == 1 and live.most == 1, "an orphan GPIO capability keeps its pins"
        statuses = [ln for m in datagrams(notify) for ln in m.splitlines() if ln.startswith("STATUS=")]
        assert any(s.startswith("STATUS=reload ok") for s in statuses), statuses
    assert live.alive == set()


@pytest.mark.timeout(60)
async def test_a_failure_mid_apply_rolls_every_capability_back_and_says_so(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shell (applied first) is tightened, then gpio fails with ENOSPC half-way through its reload: the
    shell must not stay tightened while STATUS= claims nothing, nor gpio keep half the new pins, nor
    systemd stay at RELOADING=1."""
    live = LiveGpio(monkeypatch)
    path = write_config(tmp_path, gw.url, shell={"enabled": True, "max_concurrency": 4})
    real_reload = GpioCapability.reload

    async def failing_reload(cap: GpioCapability, new: Any) -> None:
        await real_reload(cap, new)  # the new pin is already open when the write fails
        if "lamp" in new.pins:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(GpioCapability, "reload", failing_reload)
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        datagrams(notify)
        write_config(
            tmp_path,
            gw.url,
            shell={"enabled": True, "max_concurrency": 1},
            gpio={"enabled": True, "pins": {"relay": RELAY, "lamp": LAMP}},
        )
        os.kill(os.getpid(), signal.SIGHUP)
        _seen, status = await wait_ready_after_reload(notify)
        assert status.startswith("reload failed: gpio reloaded: OSError"), status
        assert "No space left on device" in status
        assert daemon.caps["shell"].config.max_concurrency == 4
        assert sorted(daemon.caps["gpio"].pins) == ["relay"]
        assert daemon.config.capabilities["shell"].max_concurrency == 4
        assert len(live.alive) == 1
        # the node keeps serving on the old config
        result = await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        assert result.get("ok") is True, result
        # and the next good reload clears the error
        write_config(tmp_path, gw.url, shell={"enabled": True, "max_concurrency": 1})
        os.kill(os.getpid(), signal.SIGHUP)
        _seen, status = await wait_ready_after_reload(notify)
        assert status.startswith("reload ok"), status
        assert daemon.caps["shell"].config.max_concurrency == 1


@pytest.mark.timeout(60)
async def test_a_broken_config_keeps_the_old_one_and_ready_says_why(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        datagrams(notify)
        write_config(tmp_path, gw.url, gpio={"enabled": True, "pins": {"relay": {**RELAY, "kind": "x"}}})
        os.kill(os.getpid(), signal.SIGHUP)
        _seen, status = await wait_ready_after_reload(notify)
        assert status.startswith("reload failed:") and "gpio.pins.relay" in status, status
        assert sorted(daemon.caps["gpio"].pins) == ["relay"]


@pytest.mark.timeout(60)
async def test_display_name_and_token_are_reread_and_announced_by_a_reconnect(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    gw.issue_device_token = None  # so the shared token is what the node presents
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        assert gw.connects[-1]["client"]["displayName"] == "life-node"
        assert gw.connects[-1]["auth"]["token"] == "fake-token-123456"
        (tmp_path / "token").write_text("rotated-token-654321\n")
        write_config(tmp_path, gw.url, node={"display_name": "Garage Pi"})
        os.kill(os.getpid(), signal.SIGHUP)
        _seen, status = await wait_ready_after_reload(notify)
        assert "display name changed" in status and "gateway token changed" in status, status
        await gw.wait_hello(2, timeout=10)
        assert gw.connects[-1]["client"]["displayName"] == "Garage Pi"
        assert gw.connects[-1]["auth"]["token"] == "rotated-token-654321"
        assert daemon.runner is not None and daemon.runner.status.display_name == "Garage Pi"


@pytest.mark.timeout(60)
async def test_a_reload_whose_state_write_fails_keeps_one_set_and_says_why(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    """A real state-dir write failure, no mock: the shell's approvals roll-out (security: deny) cannot be
    written. system (applied before shell) must roll back too; READY=1 follows with the error."""
    path = write_config(tmp_path, gw.url, shell={"enabled": True})
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        datagrams(notify)
        system_before = daemon.caps["system"]
        blocker = tmp_path / "state" / f".exec-approvals.json.tmp-{os.getpid()}"
        blocker.mkdir(parents=True)  # the atomic write's temp file cannot be created: EISDIR
        (blocker / "x").write_text("x")
        write_config(
            tmp_path,
            gw.url,
            system={"notify_hook": ["/bin/true"]},
            shell={"enabled": True, "approvals": {"version": 1, "defaults": {"security": "deny"}}},
        )
        os.kill(os.getpid(), signal.SIGHUP)
        _seen, status = await wait_ready_after_reload(notify)
        assert status.startswith("reload failed: shell reloaded: IsADirectoryError"), status
        assert daemon.caps["system"] is system_before and daemon.caps["system"].config.notify_hook == []
        assert daemon.caps["shell"].config.approvals is None
        assert daemon.runner is not None
        names = [cap.manifest.name for cap in daemon.runner.capabilities]
        assert len(names) == len(set(names)) == len(daemon.caps)  # one set, no orphan beside it


@pytest.mark.timeout(60)
async def test_reload_ok_is_news_and_the_connection_shows_again_after_it(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY=1 carries "reload ok (…) · connected …"; the periodic refresh must put "connected to …" back
    (it compared with its own last text, still "connected to …", and never resent it: the systemd tier
    saw STATUS= stuck at "reload ok")."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # STATUS= refreshed every 0.5 s
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (_daemon, _task):
        await gw.wait_hello(1, timeout=10)
        await wait_until(
            lambda: any(m.startswith("STATUS=connected to") for m in datagrams(notify)), 10, "connected"
        )
        write_config(tmp_path, gw.url, log={"level": "debug"})  # no manifest change: no reconnect
        os.kill(os.getpid(), signal.SIGHUP)
        seen: list[str] = []

        def refreshed() -> bool:
            seen.extend(datagrams(notify))
            ready = [i for i, m in enumerate(seen) if m.startswith("READY=1\nSTATUS=reload ok (")]
            return bool(ready) and any(m.startswith("STATUS=connected to") for m in seen[ready[0] :])

        await wait_until(refreshed, 10, "READY=1 reload ok, then a STATUS= refresh")
        assert gw.hello_count == 1
