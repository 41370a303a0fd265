"""Crash-loop safe mode and waiting after a fatal error: the board stays reachable instead of ending down
for good once systemd's StartLimitBurst gives up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.config import SafeModeConfig, parse_config
from edgeclaw.node.startlog import StartHistory
from edgeclaw.typedconfig import ConfigError
from tests.support.fakegateway import FakeGateway
from tests.support.node import NodeProcess
from tests.unit.daemonharness import running_daemon, wait_until, write_config
from tests.unit.test_lifecycle_reload import datagrams

SAFE = {"failed_starts": 3, "window_s": 600, "healthy_after_s": 60}
SAFE_COMMANDS = ["device.info", "device.status", "edgeclaw.logs"]


def seed_failed_starts(state: Path, count: int, *, outcome: str = "running") -> None:
    state.mkdir(parents=True, exist_ok=True)
    now = time.time()
    starts = [{"at": now - 10 * (i + 1), "pid": 1, "outcome": outcome} for i in range(count)]
    (state / "starts.json").write_text(json.dumps({"starts": starts}))


# the record -----------------------------------------------------------------------------------------
def test_k_deaths_within_t_mean_a_crash_loop_and_a_healthy_run_forgives_them(tmp_path: Path) -> None:
    cfg = SafeModeConfig(failed_starts=3, window_s=100, healthy_after_s=5)
    now = time.time()
    for i in range(3):  # three starts that each died (their entry stayed "running")
        assert StartHistory(tmp_path, cfg).crash_loop(StartHistory(tmp_path, cfg).begin(now + i)) is None
    fourth = StartHistory(tmp_path, cfg)
    reason = fourth.crash_loop(fourth.begin(now + 3))
    assert reason is not None and "failed to start 3 times" in reason
    fourth.mark("healthy")
    fifth = StartHistory(tmp_path, cfg)
    assert fifth.crash_loop(fifth.begin(now + 4)) is None


def test_clean_stops_and_old_failures_do_not_count(tmp_path: Path) -> None:
    cfg = SafeModeConfig(failed_starts=2, window_s=100, healthy_after_s=5)
    now = time.time()
    for i in range(5):  # an operator restarting it five times
        h = StartHistory(tmp_path, cfg)
        assert h.crash_loop(h.begin(now + i)) is None
        h.mark("stopped")
    for i in range(3):  # three deaths, long ago
        StartHistory(tmp_path, cfg).begin(now - 1000 + i)
    h = StartHistory(tmp_path, cfg)
    assert h.crash_loop(h.begin(now + 10)) is None
    (tmp_path / "starts.json").write_text("{not json")  # a torn file: ignored, not fatal
    h = StartHistory(tmp_path, cfg)
    assert h.begin(now + 11) == []


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"failed_starts": 0}, "node.safe_mode.failed_starts"),
        ({"window_s": 1}, "node.safe_mode.window_s"),
        ({"healthy_after_s": 0}, "node.safe_mode.healthy_after_s"),
        ({"failed_starts": "three"}, "node.safe_mode.failed_starts"),
    ],
)
def test_safe_mode_settings_are_validated(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps({"node": {"safe_mode": values}}))
    assert key in str(info.value)


# safe mode in the daemon -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_after_k_failed_starts_only_the_safe_commands_run_and_the_owner_is_told(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    hook_out = tmp_path / "hook.out"
    hook = [
        sys.executable,
        "-c",
        f"import os; open({str(hook_out)!r}, 'a').write(os.environ['EDGECLAW_NOTIFY_BODY'] + '\\n')",
    ]
    seed_failed_starts(tmp_path / "state", 3)
    path = write_config(
        tmp_path,
        gw.url,
        node={"safe_mode": SAFE},
        shell={"enabled": True},
        system={"notify_hook": hook},
    )
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        assert sorted(gw.connects[-1]["commands"]) == SAFE_COMMANDS
        assert "gpio" not in daemon.caps and "shell" not in daemon.caps
        await wait_until(lambda: hook_out.exists(), 10, "notify hook")
        statuses = [ln for m in datagrams(notify) for ln in m.splitlines() if ln.startswith("STATUS=")]
        assert any(s.startswith("STATUS=SAFE MODE: the node failed to start 3 times") for s in statuses)
        info = await gw.result_for(await gw.invoke("device.info", {}))
        assert info.get("ok") is True, info
        blocked = await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        assert blocked.get("ok") is False
        await asyncio.sleep(0.5)
    assert hook_out.read_text().count("safe mode") == 1  # one message, not one per reconnect


@pytest.mark.timeout(60)
async def test_edgeclaw_logs_is_bounded_and_never_returns_a_secret(tmp_path: Path, gw: FakeGateway) -> None:
    seed_failed_starts(tmp_path / "state", 3)
    (tmp_path / "token").write_text("seeded-gateway-token-9f8e7d6c\n")
    path = write_config(tmp_path, gw.url, node={"safe_mode": SAFE})
    async with running_daemon(path) as (_daemon, _task):
        await gw.wait_hello(1, timeout=10)
        first = json.loads(
            (await gw.result_for(await gw.invoke("edgeclaw.logs", {"lines": 200})))["payloadJSON"]
        )
        assert any("starting in SAFE MODE: the node failed to start 3 times" in x for x in first["lines"])
        noisy = logging.getLogger("edgeclaw.test")
        noisy.warning("connect failed with token seeded-gateway-token-9f8e7d6c")
        noisy.warning("hook said api_key=sk-live-unregistered-123456 and Authorization: Bearer abcdef123456")
        for i in range(500):
            noisy.warning("filler line %d", i)
        result = await gw.result_for(await gw.invoke("edgeclaw.logs", {"lines": 10_000}))
        assert result.get("ok") is True, result
        payload = json.loads(result["payloadJSON"])
        assert payload["safeMode"] is True and len(payload["lines"]) == 200
        assert [e["outcome"] for e in payload["starts"]] == ["running"] * 4  # 3 that died, and this one
        # the newest lines (the node's own may interleave with the filler)
        assert any(line.endswith("filler line 499") for line in payload["lines"][-5:])
        assert not any(line.endswith("filler line 299") for line in payload["lines"])  # bounded: old gone
        few = json.loads((await gw.result_for(await gw.invoke("edgeclaw.logs", {})))["payloadJSON"])
        assert len(few["lines"]) == 50
        # the secrets are well within the buffer when asked for the head of it
        noisy.warning("connect failed with token seeded-gateway-token-9f8e7d6c")
        noisy.warning("hook said api_key=sk-live-unregistered-123456 and Authorization: Bearer abcdef123456")
        text = json.dumps(
            json.loads((await gw.result_for(await gw.invoke("edgeclaw.logs", {"lines": 5})))["payloadJSON"])
        )
        assert "seeded-gateway-token-9f8e7d6c" not in text and "9f8e7d6c" not in text
        assert "sk-live-unregistered-123456" not in text and "abcdef123456" not in text
        assert "[redacted]" in text
        bad = await gw.result_for(await gw.invoke("edgeclaw.logs", {"lines": "all"}))
        assert bad.get("ok") is False and bad["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.timeout(60)
async def test_a_healthy_run_clears_the_record_and_sighup_leaves_safe_mode(
    tmp_path: Path, gw: FakeGateway
) -> None:
    seed_failed_starts(tmp_path / "state", 3)
    path = write_config(tmp_path, gw.url, node={"safe_mode": {**SAFE, "healthy_after_s": 1}})
    async with running_daemon(path) as (daemon, _task):
        await gw.wait_hello(1, timeout=10)
        assert "gpio" not in daemon.caps

        def record() -> list[dict[str, Any]]:
            return list(json.loads((tmp_path / "state" / "starts.json").read_text())["starts"])

        await wait_until(lambda: [e["outcome"] for e in record()] == ["healthy"], 10, "record cleared")
        os.kill(os.getpid(), signal.SIGHUP)
        await gw.wait_hello(2, timeout=10)  # the manifest grew: a reconnect announces it
        # edgeclaw.logs stays declared, now by the diagnostics capability (journal/ring), not safe mode's
        assert (
            "gpio.write" in gw.connects[-1]["commands"] and "edgeclaw.doctor" in gw.connects[-1]["commands"]
        )
        assert "edgeclaw" not in daemon.caps and "diagnostics" in daemon.caps
        assert "gpio" in daemon.caps and daemon.runner is not None and daemon.runner.status.safe_mode is None


# fatal errors: wait, don't exit ---------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_refused_credentials_under_systemd_wait_with_outputs_safe_then_retry_on_a_new_token(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    gw.issue_device_token = None
    path = write_config(tmp_path, gw.url)
    async with running_daemon(path) as (daemon, task):
        await gw.wait_hello(1, timeout=10)
        await gw.result_for(await gw.invoke("gpio.write", {"name": "relay", "value": 1}))
        pin = daemon.caps["gpio"].pins["relay"].device.pin
        gw.connect_error = {
            "code": "INVALID_REQUEST",
            "message": "unauthorized: gateway token mismatch",
            "details": {"code": "AUTH_TOKEN_MISMATCH"},
        }
        assert gw.live is not None
        await gw.live.close()  # the node reconnects and is refused
        await wait_until(lambda: daemon.ladder is not None and daemon.ladder.waiting, 10, "waiting state")
        assert not task.done(), "the node exited on a credential it could wait out"
        assert pin.state == 0, "outputs must be safe while the node cannot be reached"
        statuses = [ln for m in datagrams(notify) for ln in m.splitlines() if ln.startswith("STATUS=")]
        assert any(s.startswith("STATUS=waiting: the gateway refused our credentials") for s in statuses), (
            statuses
        )
        runner = daemon.runner
        assert runner is not None
        runner.next_attempt_at = asyncio.get_running_loop().time() - 3600  # long overdue, on purpose
        assert daemon.health() is None, "the watchdog would kill a node that waits on purpose"
        (tmp_path / "token").write_text("the-fixed-token-000111\n")
        await gw.wait_hello(2, timeout=15)  # the token file changed: it tries again, and connects
        assert gw.connects[-1]["auth"]["token"] == "the-fixed-token-000111"
        await wait_until(lambda: "gpio" in daemon.caps, 10, "capabilities back")
        assert daemon.runner is not None and daemon.runner.status.waiting_for is None


@pytest.mark.timeout(60)
async def test_refused_credentials_in_a_terminal_still_exit_77(tmp_path: Path, gw: FakeGateway) -> None:
    gw.issue_device_token = None
    gw.connect_error = {
        "code": "INVALID_REQUEST",
        "message": "unauthorized: gateway token mismatch",
        "details": {"code": "AUTH_TOKEN_MISMATCH"},
    }
    path = write_config(tmp_path, gw.url)
    from edgeclaw.config import load_config
    from edgeclaw.node.daemon import Daemon

    daemon = Daemon(load_config(str(path)), str(path))
    assert await asyncio.wait_for(daemon.main(), 20) == 77


@pytest.mark.timeout(90)
async def test_a_broken_config_under_systemd_waits_for_a_fix_then_starts(
    tmp_path: Path, gw: FakeGateway, notify: socket.socket
) -> None:
    node = NodeProcess(tmp_path / "node", None, url=gw.url)
    (node.base / "gateway.token").write_text("fake-token-123456\n")
    good = node.config_path.read_text()
    node.config_path.write_text(good + "\nnode_typo: 1\n")
    node.start({"WATCHDOG_USEC": "1000000"})  # inherits NOTIFY_SOCKET; WatchdogSec=1
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        seen: list[str] = []
        while not any("READY=1" in m and "waiting for a valid config" in m for m in seen):
            assert loop.time() < deadline, seen
            assert node.proc is not None and node.proc.poll() is None, node.log()[-2000:]
            seen += datagrams(notify)
            await asyncio.sleep(0.05)
        assert any("node_typo" in m for m in seen)
        await asyncio.sleep(2.0)
        seen += datagrams(notify)
        # a process that waits on purpose keeps pinging, or WatchdogSec= would kill it into a loop
        assert seen.count("WATCHDOG=1") >= 2, seen
        node.config_path.write_text(good)
        await gw.wait_hello(1, timeout=30)
    finally:
        code = node.stop()
    assert code == 0


async def test_the_fatal_retry_backs_off_while_nothing_changes_and_restarts_after_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrying a refused credential every 5 min forever would hammer the gateway; each unchanged retry
    waits longer (to hourly), and a changed file or a reload starts the ladder over."""
    from edgeclaw.node import ladder as ladder_mod
    from edgeclaw.node.runner import FatalError

    waits: list[float] = []
    reasons = iter(
        ["backoff elapsed", "backoff elapsed", "backoff elapsed", "backoff elapsed", "file changed"]
    )

    async def fake_wait(files: Any, wake: Any, timeout: float, tick: Any = None) -> str:
        waits.append(timeout)
        return next(reasons)

    class FakeCapset:
        async def stop_all(self) -> None: ...

    class FakeRunner:
        def __init__(self) -> None:
            from edgeclaw.node.status import NodeStatus

            self.status = NodeStatus()
            self.status_file = type("F", (), {"write": lambda *a, **k: None})()

        def set_capabilities(self, caps: list[Any]) -> None: ...

        def update_config(self, config: Any) -> list[str]:
            return []

    path = write_config(tmp_path, "ws://127.0.0.1:9")
    from edgeclaw.config import load_config

    daemon = type("D", (), {})()
    daemon.config = load_config(str(path))
    daemon.config_path = str(path)
    daemon.capset = FakeCapset()
    daemon.caps = {}
    daemon.runner = FakeRunner()
    daemon.stopping = False
    daemon.state = type("S", (), {"path": tmp_path / "state"})()
    daemon.notifier = type("N", (), {"status": lambda *a: None})()
    monkeypatch.setattr(ladder_mod, "wait_for_change", fake_wait)
    lad = ladder_mod.Ladder(daemon)  # type: ignore[arg-type]
    monkeypatch.setattr(lad, "start_capabilities", lambda: asyncio.sleep(0))
    for _ in range(5):
        assert await lad.wait_after_fatal(FatalError(77, "refused")) is True
    assert waits == [300.0, 600.0, 1800.0, 3600.0, 3600.0]
    assert lad._fatal_attempt == 0  # the file changed: the next wait is short again


async def test_the_owner_message_hook_never_sees_the_nodes_secrets_and_dies_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safe-mode message runs the same hook as system.notify: same scrubbed env, same tree kill."""
    from edgeclaw.node import safemode

    monkeypatch.setenv("EDGECLAW_GATEWAY_TOKEN", "gw-secret-token-123")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setattr(safemode, "HOOK_TIMEOUT_S", 1.0)
    seen, pidfile = tmp_path / "env.txt", tmp_path / "grandchild.pid"
    script = tmp_path / "hook.sh"
    script.write_text(
        f"#!/bin/sh\nenv > {seen}\nsetsid sleep 30 & echo $! > {pidfile}\nsleep 30\n", encoding="utf-8"
    )
    script.chmod(0o755)
    started = time.monotonic()
    await safemode.notify_owner("EdgeClaw node in safe mode", "crash loop", [str(script)])
    assert time.monotonic() - started < 5
    env = seen.read_text()
    assert "EDGECLAW_NOTIFY_BODY=crash loop" in env
    assert "gw-secret-token-123" not in env and "NOTIFY_SOCKET" not in env
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not Path(f"/proc/{grandchild}").exists(), "the hook's setsid grandchild outlived its timeout"
