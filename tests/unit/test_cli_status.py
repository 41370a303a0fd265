"""`edgeclaw status` (human form): what an operator reads on the board."""

from __future__ import annotations

import pytest

from edgeclaw.cli import _print_status


def test_status_shows_ticks_loop_lag_and_a_state_error(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeclaw.platform.metrics import LoopLag

    lag = LoopLag()  # the summary the daemon writes into status.json
    for ms in [0.3] * 98 + [4.25, 9.0]:
        lag.observe(ms / 1000)
    _print_status(
        {
            "status_line": "connected · STATE_WRITE_FAILED",
            "connection": "connected",
            "ticks": 12,
            "loop_lag_ms": lag.summary(),
            "state_error": "STATE_WRITE_FAILED: cannot store the device token (ENOSPC)",
        }
    )
    out = capsys.readouterr().out
    assert "gateway ticks        12" in out
    assert "event-loop lag       p50 0.3 ms / p99 4.2 ms / max 9.0 ms" in out
    assert "state error          STATE_WRITE_FAILED: cannot store the device token (ENOSPC)" in out


def test_status_leaves_out_what_is_not_known_yet(capsys: pytest.CaptureFixture[str]) -> None:
    _print_status({"connection": "connecting", "ticks": 0, "loop_lag_ms": {}})
    out = capsys.readouterr().out
    assert "ticks" not in out and "lag" not in out and "state error" not in out
    assert "connection           connecting" in out


def test_status_says_safe_mode_and_what_a_waiting_node_waits_for(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeclaw.node.status import NodeStatus

    status = NodeStatus(connection="connected", gateway_url="ws://gw", display_name="pi")
    status.safe_mode = "the node failed to start 3 times in 40 s"
    status.waiting_for = "the gateway refused our credentials; trying again in 300 s"
    _print_status(status.to_json())
    out = capsys.readouterr().out
    assert out.startswith(
        "SAFE MODE: the node failed to start 3 times in 40 s · waiting: the gateway refused"
    )
    assert "safe mode            the node failed to start 3 times in 40 s" in out
    assert "waiting for          the gateway refused our credentials; trying again in 300 s" in out


def test_status_names_the_system_run_isolation(capsys: pytest.CaptureFixture[str]) -> None:
    _print_status({"connection": "connected", "shell_isolation": "inprocess (no /run/edgeclaw-run.sock): …"})
    assert "system.run isolation inprocess (no /run/edgeclaw-run.sock)" in capsys.readouterr().out
