"""A state directory that refuses writes (full, read-only) when the gateway issues a device token, and the
event-loop lag sampler's bookkeeping."""

from __future__ import annotations

import asyncio
import errno
import stat
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.node import runner as runner_module
from edgeclaw.platform.metrics import LoopLag, Metrics, Snapshot
from edgeclaw.platform.state import StateDir
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

pytestmark = pytest.mark.timeout(60)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    assert predicate()


async def test_unsavable_token_is_kept_in_memory_reported_and_stored_once_writes_work(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "STATE_RETRY_S", 0.2)
    real_write = StateDir.save_token
    problem: list[int] = [errno.ENOSPC]

    def save_token(self: StateDir, stored: Any) -> None:
        if problem:
            raise OSError(problem[0], "refused")
        real_write(self, stored)

    monkeypatch.setattr(StateDir, "save_token", save_token)
    token_file = tmp_path / "state" / "device-token.json"
    async with running_node(tmp_path, gw) as node:
        await gw.wait_hello(1)
        await _until(lambda: node.status.state_error is not None)
        assert node.status.state_error is not None
        assert node.status.state_error.startswith("STATE_WRITE_FAILED: cannot store the device token")
        assert "(ENOSPC)" in node.status.state_error and "STATE_WRITE_FAILED" in node.status.line()
        assert not token_file.exists()
        # a reconnect uses the token from memory
        live = gw.live
        assert live is not None
        await live.close(1012, "restart")
        await gw.wait_hello(2)
        assert gw.connects[1]["auth"] == {"deviceToken": "fake-device-token-abcdef"}
        problem[:] = [errno.EROFS]
        await _until(lambda: "(EROFS)" in (node.status.state_error or ""))
        problem.clear()
        await _until(lambda: token_file.exists() and node.status.state_error is None)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_loop_lag_histogram_and_summary() -> None:
    lag = LoopLag(keep=100)
    for i in range(200):
        lag.observe(0.001 if i % 50 else 0.03, now=float(i))
    summary = lag.summary()
    assert summary["samples"] == 100 and summary["window_s"] == 99.0
    assert summary["p50_ms"] == 1.0 and summary["max_ms"] == 30.0 and summary["p99_ms"] == 30.0
    text = Metrics(node_id="n", version="v").render(Snapshot(loop_lag=lag))
    assert 'edgeclaw_event_loop_lag_observed_seconds_bucket{le="0.001"} 196' in text
    assert 'edgeclaw_event_loop_lag_observed_seconds_bucket{le="0.02"} 196' in text
    assert 'edgeclaw_event_loop_lag_observed_seconds_bucket{le="0.05"} 200' in text
    assert "edgeclaw_event_loop_lag_observed_seconds_count 200" in text
