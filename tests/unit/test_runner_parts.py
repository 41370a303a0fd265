"""The runner's parts, one at a time (edgeclaw.node.credentials, .surface, .runstatus; the connection
state machine has test_connection_faults.py and test_node_faults.py)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler
from edgeclaw.node import credentials
from edgeclaw.node.runner import NodeRunner
from edgeclaw.platform.state import StateDir, StoredToken
from tests.unit.nodeharness import make_config

URL = "ws://127.0.0.1:9"


def make_runner(tmp: Path, **overrides: Any) -> NodeRunner:
    config = make_config(tmp, URL, **overrides)
    state = StateDir(config.state_dir)
    return NodeRunner(config, state.load_or_create_identity(), state)


async def until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


# credentials ------------------------------------------------------------------------------------------
async def test_the_newest_credential_wins(tmp_path: Path) -> None:
    runner = make_runner(tmp_path)
    assert runner._auth().token == "fake-token-123456"
    runner._bootstrap_token = "boot"
    assert runner._auth().bootstrap_token == "boot"
    runner.state.save_token(StoredToken(URL, runner.node_id, "node", [], "stored-device-token"))
    assert runner._auth().device_token == "stored-device-token"
    runner._unsaved_token = "fresh-in-memory"
    assert runner._auth().device_token == "fresh-in-memory"


async def test_a_failing_state_write_is_retried_by_a_supervised_child_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "STATE_RETRY_S", 0.02)
    runner = make_runner(tmp_path)
    real_save = runner.state.save_pairing
    failures = [OSError(errno.ENOSPC, "No space left on device")] * 3

    def save(pairing: Any) -> None:
        if failures:
            raise failures.pop()
        real_save(pairing)

    monkeypatch.setattr(runner.state, "save_pairing", save)
    runner._save_pairing()
    assert runner.status.state_error is not None and "ENOSPC" in runner.status.state_error
    assert runner.supervisor.is_active("state-write-retry")
    await until(lambda: runner.status.state_error is None)
    await until(lambda: runner.supervisor.children["state-write-retry"].state == "done")
    assert runner.supervisor.total_restarts() == 0
    await runner.supervisor.stop()


# surface ----------------------------------------------------------------------------------------------
class Tools(Capability):
    manifest = CapabilityManifest(name="tools", caps=("tools",), commands=("a.one", "a.two"))

    def handlers(self) -> dict[str, Handler]:
        return {}

    def plugin_tools(self) -> list[dict[str, Any]]:
        return [{"name": "one", "command": "a.one"}, {"name": "two", "command": "a.two"}]


async def test_a_tool_the_gateway_drops_is_reported_as_withheld(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(tmp_path)
    runner.set_capabilities([Tools(None, runner)])

    async def request(method: str, params: Any, *, timeout: float = 10.0) -> Any:
        return {"tools": [t for t in params["tools"] if t["command"] == "a.one"]}

    monkeypatch.setattr(runner, "request", request)
    await runner.publish_tools()
    assert runner.status.withheld_commands == ["a.two"]
    assert runner.pairing.withheld_commands == ["a.two"]
    assert sum("withholds a.two" in r.getMessage() for r in caplog.records) == 1
    await runner.publish_tools()  # logged once per distinct set, not on every reconnect
    assert sum("withholds a.two" in r.getMessage() for r in caplog.records) == 1


async def test_surface_approval_is_saved_and_signalled(tmp_path: Path) -> None:
    runner = make_runner(tmp_path)
    runner._set_surface_pending("req-1")
    assert runner.status.pairing == "surface-pending" and not runner.approved_event.is_set()
    assert runner.state.load_pairing().surface_request_id == "req-1"
    runner._set_surface_approved()
    assert runner.approved_event.is_set() and runner.state.load_pairing().surface_approved


# status -----------------------------------------------------------------------------------------------
async def test_health_sees_an_overdue_reconnect_and_a_supervised_task_that_is_down(tmp_path: Path) -> None:
    runner = make_runner(tmp_path)
    now = asyncio.get_running_loop().time()
    assert runner.health(now) is None
    runner.next_attempt_at = now - 60
    assert "reconnect attempt overdue" in (runner.health(now) or "")
    runner.next_attempt_at = None
    runner.supervisor.backoff_initial_s = runner.supervisor.backoff_max_s = 30

    async def broken() -> None:
        raise ValueError("stats backend gone")

    runner.supervisor.start_child("host-stats", broken)
    await until(lambda: runner.health(now) is not None)
    assert "node/host-stats is down (ValueError: stats backend gone)" in (runner.health(now) or "")
    assert "task down: node/host-stats" in runner.status.line()
    assert runner.node_snapshot()["supervisor_restarts"] == 0
    await runner.supervisor.stop()
