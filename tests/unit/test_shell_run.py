"""Shell capability with real processes and a recording stand-in for the gateway side of NodeServices."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.shell import Config, create
from edgeclaw.capabilities.shell.process import run_process

FULL = {"version": 1, "defaults": {"security": "full", "ask": "off"}}


class Services:
    node_id = "n" * 64
    display_name = "unit"
    simulated = True

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self.events: list[tuple[str, dict[str, Any]]] = []

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    def is_connected(self) -> bool:
        return True

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        self.events.append((event, payload))
        return {"ok": True}


def ctx(params: dict[str, Any], seconds: float = 30.0) -> InvokeContext:
    loop = asyncio.get_running_loop()
    return InvokeContext("inv", "system.run", params, loop.time() + seconds, int(seconds * 1000))


def answered(handler: Any) -> Any:
    """The handler as the dispatcher runs it: the answer first, then the after-reply events."""

    async def call(c: InvokeContext) -> Any:
        try:
            return await handler(c)
        finally:
            for hook in c.after_reply:
                await hook()

    return call


async def make(tmp_path: Path, **cfg: Any) -> tuple[Any, Services]:
    services = Services(tmp_path)
    cap = create(Config(**cfg), services)  # type: ignore[arg-type]
    await cap.start()
    return {name: answered(h) for name, h in cap.handlers().items()}, services


def alive(pid: int) -> bool:
    """Running or stopped; a zombie already reaped by nobody yet but dead counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def test_default_policy_denies_and_reports_the_event(tmp_path: Path) -> None:
    h, services = await make(tmp_path)
    with pytest.raises(InvokeError) as exc:
        await h["system.run"](ctx({"command": ["echo", "hi"], "runId": "r1", "sessionKey": "s"}))
    assert (exc.value.code, exc.value.message) == (
        "SYSTEM_RUN_DENIED",
        "SYSTEM_RUN_DENIED: approval required",
    )
    assert services.events == [
        (
            "exec.denied",
            {
                "sessionKey": "s",
                "runId": "r1",
                "host": "node",
                "command": "echo hi",
                "reason": "approval-required",
                "suppressNotifyOnExit": False,
            },
        )
    ]


async def test_finished_event_follows_result_with_combined_tail(tmp_path: Path) -> None:
    h, services = await make(tmp_path, approvals=FULL)
    body = await h["system.run"](
        ctx({"command": ["sh", "-c", "echo out; echo oops >&2; exit 3"], "runId": "r2"})
    )
    assert body == {
        "exitCode": 3,
        "timedOut": False,
        "success": False,
        "stdout": "out\n",
        "stderr": "oops\n",
        "error": None,
    }
    assert services.events[-1] == (
        "exec.finished",
        {
            "sessionKey": "node",
            "runId": "r2",
            "host": "node",
            "command": 'sh -c "echo out; echo oops >&2; exit 3"',
            "exitCode": 3,
            "timedOut": False,
            "success": False,
            "output": "out\n\noops",
            "suppressNotifyOnExit": False,
        },
    )
    # no runId: no event
    before = len(services.events)
    await h["system.run"](ctx({"command": ["true"]}))
    assert len(services.events) == before


async def test_long_output_event_keeps_the_tail(tmp_path: Path) -> None:
    h, services = await make(tmp_path, approvals=FULL)
    await h["system.run"](ctx({"command": ["sh", "-c", "seq 1 20000"], "runId": "r"}))
    output = services.events[-1][1]["output"]
    assert output.startswith("... (truncated) ") and output.endswith("\n20000") and len(output) <= 20_016


async def test_bad_requests_get_coded_errors(tmp_path: Path) -> None:
    h, _ = await make(tmp_path)
    cases = [
        ({}, "command required"),
        ({"command": "echo hi"}, "argv"),
        ({"command": ["echo", 3]}, "argv"),
        ({"command": ["echo", "a"], "rawCommand": "echo b"}, "rawCommand does not match command"),
        ({"command": ["echo"], "timeoutMs": "soon"}, "timeoutMs"),
        ({"command": ["echo"], "env": ["A=1"]}, "env"),
        ({"command": ["echo"], "approvalDecision": "always-yes"}, "approvalDecision"),
        ({"command": ["echo"], "approved": True}, "explicit approval requires matching systemRunPlan"),
    ]
    for params, needle in cases:
        with pytest.raises(InvokeError) as exc:
            await h["system.run"](ctx(params))
        assert exc.value.code == "INVALID_REQUEST" and needle in exc.value.message, params


async def test_prepare_then_approved_run_and_allow_always(tmp_path: Path) -> None:
    h, services = await make(tmp_path)
    prep = await h["system.run.prepare"](
        ctx({"command": ["uname", "-s"], "agentId": "main", "sessionKey": "k"})
    )
    plan = prep["plan"]
    assert plan["argv"][0] == os.path.realpath(plan["argv"][0]) and plan["agentId"] == "main"
    params = {
        "command": plan["argv"],
        "agentId": "main",
        "sessionKey": "k",
        "runId": "r",
        "systemRunPlan": plan,
    }
    out = await h["system.run"](ctx({**params, "approved": True, "approvalDecision": "allow-always"}))
    assert out["stdout"] == "Linux\n"
    doc = (await h["system.execApprovals.get"](ctx({})))["file"]
    assert doc["agents"]["main"]["allowlist"][0]["source"] == "allow-always"
    # now it runs without approval for agent main, but not for another agent or other args
    assert (await h["system.run"](ctx({"command": ["uname", "-s"], "agentId": "main"})))["success"]
    with pytest.raises(InvokeError, match="approval required"):
        await h["system.run"](ctx({"command": ["uname", "-s"], "agentId": "other"}))
    with pytest.raises(InvokeError, match="approval required"):
        await h["system.run"](ctx({"command": ["uname", "-a"], "agentId": "main"}))
    # an approval whose policy snapshot is stale is refused
    get = await h["system.execApprovals.get"](ctx({}))
    await h["system.execApprovals.set"](
        ctx({"file": {"version": 1, "defaults": {"ask": "always"}}, "baseHash": get["hash"]})
    )
    with pytest.raises(InvokeError, match="policy changed"):
        await h["system.run"](ctx({**params, "approved": True, "approvalDecision": "allow-once"}))
    assert services.events[-1][1]["reason"] == "approval-required"


async def test_approved_executable_that_vanished_is_an_execution_plan_miss(tmp_path: Path) -> None:
    h, services = await make(tmp_path)
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    plan = (await h["system.run.prepare"](ctx({"command": [str(tool)]})))["plan"]
    tool.unlink()
    with pytest.raises(InvokeError) as exc:
        await h["system.run"](ctx({"command": plan["argv"], "systemRunPlan": plan, "approved": True}))
    assert exc.value.message == "SYSTEM_RUN_DENIED: execution plan mismatch"
    assert services.events[-1][1]["reason"] == "execution-plan-miss"


async def test_approvals_set_compare_and_swap(tmp_path: Path) -> None:
    h, _ = await make(tmp_path)
    first = await h["system.execApprovals.get"](ctx({"includeResolvedDefaults": True}))
    assert first["resolvedDefaults"] == {
        "security": "allowlist",
        "ask": "on-miss",
        "askFallback": "deny",
        "autoAllowSkills": False,
    }
    set1 = await h["system.execApprovals.set"](ctx({"file": FULL, "baseHash": first["hash"]}))
    for base in (first["hash"], None):
        with pytest.raises(InvokeError) as exc:
            await h["system.execApprovals.set"](ctx({"file": FULL, "baseHash": base}))
        assert exc.value.code == "INVALID_REQUEST" and "reload and retry" in exc.value.message
    with pytest.raises(InvokeError, match=r"defaults\.security"):
        await h["system.execApprovals.set"](
            ctx({"file": {"defaults": {"security": "x"}}, "baseHash": set1["hash"]})
        )
    with pytest.raises(InvokeError, match="file required"):
        await h["system.execApprovals.set"](ctx({"baseHash": set1["hash"]}))


async def test_process_timeout_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = (
        f"trap '' TERM; (trap '' TERM; exec sleep 300) & echo $$ $! > {pidfile}; while :; do sleep 1; done"
    )
    loop = asyncio.get_running_loop()
    result = await run_process(
        ["sh", "-c", script],
        cwd=None,
        env=dict(os.environ),
        timeout=0.5,
        deadline=loop.time() + 30,
        cap=1000,
        grace=0.3,
    )
    assert result.exit_code == 124 and result.timed_out
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


async def test_cancel_kills_the_group_then_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        run_process(
            ["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 1; done"],
            cwd=None,
            env=dict(os.environ),
            timeout=None,
            deadline=loop.time() + 60,
            cap=1000,
            grace=0.3,
        )
    )
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)


async def test_leader_exit_takes_background_children_along(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    loop = asyncio.get_running_loop()
    result = await run_process(
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started"],
        cwd=None,
        env=dict(os.environ),
        timeout=None,
        deadline=loop.time() + 30,
        cap=1000,
        grace=0.3,
    )
    assert result.exit_code == 0 and result.stdout == "started\n"
    assert not alive(int(pidfile.read_text()))


async def test_output_is_capped_with_the_head_kept(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    result = await run_process(
        ["sh", "-c", "seq 1 100000; seq 1 10 >&2"],
        cwd=None,
        env=dict(os.environ),
        timeout=None,
        deadline=loop.time() + 30,
        cap=1000,
        grace=0.3,
    )
    assert result.stdout.startswith("1\n2\n3\n") and result.stdout.endswith("\n... (truncated)")
    assert len(result.stdout) == 1000 + len("\n... (truncated)") and result.truncated
    assert result.stderr == "".join(f"{i}\n" for i in range(1, 11))


async def test_signal_exit_is_reported_like_a_shell(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    result = await run_process(
        ["sh", "-c", "kill -TERM $$"],
        cwd=None,
        env=dict(os.environ),
        timeout=None,
        deadline=loop.time() + 30,
        cap=1000,
        grace=0.3,
    )
    assert result.exit_code == 128 + signal.SIGTERM and not result.success


async def test_ask_fallback_applies_the_fallback_policy(tmp_path: Path) -> None:
    h, _ = await make(tmp_path)
    plan = (await h["system.run.prepare"](ctx({"command": ["uname", "-s"]})))["plan"]
    params = {"command": plan["argv"], "systemRunPlan": plan, "approvalSource": "ask-fallback"}
    with pytest.raises(InvokeError) as exc:  # default askFallback: deny
        await h["system.run"](ctx(params))
    assert exc.value.message == "SYSTEM_RUN_DISABLED: security=deny"
    get = await h["system.execApprovals.get"](ctx({}))
    await h["system.execApprovals.set"](
        ctx(
            {
                "file": {
                    "version": 1,
                    "defaults": {"askFallback": "allowlist"},
                    "agents": {"*": {"allowlist": ["uname"]}},
                },
                "baseHash": get["hash"],
            }
        )
    )
    for argv, expect in ((["uname", "-s"], "Linux\n"), (["date", "+%Y"], None)):
        plan = (await h["system.run.prepare"](ctx({"command": argv})))["plan"]
        params = {"command": plan["argv"], "systemRunPlan": plan, "approvalSource": "ask-fallback"}
        if expect:
            assert (await h["system.run"](ctx(params)))["stdout"] == expect
        else:  # no operator answer and not allowlisted: a miss, never a silent run
            with pytest.raises(InvokeError, match="allowlist miss"):
                await h["system.run"](ctx(params))
    with pytest.raises(InvokeError, match="cannot be combined"):
        await h["system.run"](ctx({**params, "approved": True}))
