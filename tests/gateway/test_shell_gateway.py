"""system.run, system.run.prepare and exec approvals through the real OpenClaw gateway.

`system.run` goes through an operator WebSocket client's `node.invoke` (the `nodes invoke` CLI refuses it);
approvals through `openclaw approvals get|set --node`, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway, Operator, invoke_payload, wait_for

pytestmark = pytest.mark.gateway

FULL = {"version": 1, "defaults": {"security": "full", "ask": "off"}, "agents": {}}


def node_error(frame: dict[str, Any]) -> dict[str, Any]:
    assert not frame.get("ok"), frame
    details = frame["error"].get("details") or {}
    return dict(
        details.get("nodeError") or {"code": frame["error"].get("code"), "message": frame["error"]["message"]}
    )


async def run(op: Operator, node_id: str, params: dict[str, Any], timeout_ms: int = 30000) -> dict[str, Any]:
    return await op.invoke(node_id, "system.run", params, timeout_ms=timeout_ms)


def cli_approvals_set(gateway: Gateway, node_id: str, doc: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """`openclaw approvals set --node` (slow: a CLI process; used for the round-trip itself)."""
    path = tmp / f"approvals-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(doc))
    out = gateway.cli("approvals", "set", "--node", node_id, "--file", str(path), "--json", timeout=240)
    return dict(json.loads(out.stdout[out.stdout.find("{") :]))


def cli_approvals_get(gateway: Gateway, node_id: str) -> dict[str, Any]:
    return dict(gateway.cli_json("approvals", "get", "--node", node_id, timeout=240))


async def approvals_get(op: Operator, node_id: str) -> dict[str, Any]:
    res = await op.call("exec.approvals.node.get", {"nodeId": node_id}, timeout=30)
    assert res["ok"], res
    return dict(res["payload"])


async def approvals_set(op: Operator, node_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The same gateway method the CLI uses, over the operator socket: get the hash, then set."""
    base = (await approvals_get(op, node_id))["hash"]
    res = await op.call(
        "exec.approvals.node.set", {"nodeId": node_id, "file": doc, "baseHash": base}, timeout=30
    )
    assert res["ok"], res
    return dict(res["payload"])


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_default_deny_shapes_denials_and_approvals_round_trip(
    gateway: Gateway, node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(gateway, name="shell-policy")
    nid = node.node_id
    async with Operator(gateway) as op:
        # no document: nothing runs, the operator sees why, and `approvals get` shows the safe defaults
        denied = await run(op, nid, {"command": ["echo", "hello from node"]})
        assert node_error(denied) == {
            "code": "SYSTEM_RUN_DENIED",
            "message": "SYSTEM_RUN_DENIED: approval required",
        }
        got = await asyncio.to_thread(cli_approvals_get, gateway, nid)  # the loop keeps answering pings
        assert got["exists"] is False
        assert got["file"]["defaults"] == {"security": "allowlist", "ask": "on-miss", "askFallback": "deny"}
        await asyncio.to_thread(node.wait_log, "exec.denied sent (runId", 10)

        # full trust: the result shapes of the captures
        doc = await asyncio.to_thread(cli_approvals_set, gateway, nid, FULL, tmp_path)
        assert doc["exists"] is True and doc["file"]["defaults"] == FULL["defaults"]
        assert (await approvals_get(op, nid))["hash"] == doc["hash"]
        ok = invoke_payload(await run(op, nid, {"command": ["echo", "hello from node"]}))
        assert ok == {
            "exitCode": 0,
            "timedOut": False,
            "success": True,
            "stdout": "hello from node\n",
            "stderr": "",
            "error": None,
        }
        fail = invoke_payload(
            await run(op, nid, {"command": ["sh", "-c", "echo out; echo oops >&2; exit 3"]})
        )
        assert fail == {
            "exitCode": 3,
            "timedOut": False,
            "success": False,
            "stdout": "out\n",
            "stderr": "oops\n",
            "error": None,
        }
        enoent = invoke_payload(await run(op, nid, {"command": ["/nonexistent/bin/tool", "x"]}))
        assert enoent == {
            "timedOut": False,
            "success": False,
            "stdout": "",
            "stderr": "",
            "error": "Command failed during launch or output capture (ENOENT)",
        }
        t0 = time.monotonic()
        slow = invoke_payload(await run(op, nid, {"command": ["sleep", "5"], "timeoutMs": 1000}))
        assert slow == {
            "exitCode": 124,
            "timedOut": True,
            "success": False,
            "stdout": "",
            "stderr": "",
            "error": None,
        }
        assert time.monotonic() - t0 < 4.5
        assert node_error(await run(op, nid, {})) == {
            "code": "INVALID_REQUEST",
            "message": "command required",
        }
        # exec.finished reached the gateway (with the runId it assigned), after the result
        await asyncio.to_thread(node.wait_log, "exec.finished sent (runId", 10)

        # environment overrides are checked against OpenClaw's policy
        env_bad = node_error(
            await run(op, nid, {"command": ["echo", "x"], "env": {"PATH": "/tmp", "LD_PRELOAD": "/x.so"}})
        )
        assert env_bad["code"] == "INVALID_REQUEST"
        assert (
            "environment override rejected" in env_bad["message"] and "LD_PRELOAD, PATH" in env_bad["message"]
        )
        wrapper_bad = node_error(await run(op, nid, {"command": ["sh", "-c", "env"], "env": {"FOO": "1"}}))
        assert wrapper_bad["code"] == "INVALID_REQUEST" and "FOO" in wrapper_bad["message"]
        env_ok = invoke_payload(
            await run(op, nid, {"command": ["sh", "-c", "echo $LANG"], "env": {"LANG": "C.UTF-8"}})
        )
        assert env_ok["stdout"] == "C.UTF-8\n"

        # cwd that does not exist
        cwd = node_error(await run(op, nid, {"command": ["ls"], "cwd": "/nonexistent/dir"}))
        assert cwd["code"] == "SYSTEM_RUN_DENIED" and "working directory" in cwd["message"]

        # security=deny
        await approvals_set(op, nid, {"version": 1, "defaults": {"security": "deny"}, "agents": {}})
        assert node_error(await run(op, nid, {"command": ["echo", "denied"]})) == {
            "code": "SYSTEM_RUN_DENIED",
            "message": "SYSTEM_RUN_DISABLED: security=deny",
        }
        # ask always
        await approvals_set(op, nid, {"version": 1, "defaults": {"security": "full", "ask": "always"}})
        assert (
            node_error(await run(op, nid, {"command": ["echo", "x"]}))["message"]
            == "SYSTEM_RUN_DENIED: approval required"
        )

        # allowlist under "*" works for a request without agentId (OpenClaw's node host fails this one)
        allow = {
            "version": 1,
            "defaults": {"security": "allowlist", "ask": "off", "askFallback": "deny"},
            "agents": {"*": {"allowlist": [{"pattern": "/usr/bin/echo"}]}},
        }
        await approvals_set(op, nid, allow)
        allowed = invoke_payload(await run(op, nid, {"command": ["/usr/bin/echo", "allowed"]}))
        assert allowed["stdout"] == "allowed\n" and allowed["success"] is True
        assert (
            invoke_payload(await run(op, nid, {"command": ["echo", "by", "name"]}))["stdout"] == "by name\n"
        )
        miss = node_error(await run(op, nid, {"command": ["uname", "-a"]}))
        assert miss == {"code": "SYSTEM_RUN_DENIED", "message": "SYSTEM_RUN_DENIED: allowlist miss"}
        chain = node_error(await run(op, nid, {"command": ["sh", "-c", "echo a && uname"]}))
        assert chain["message"] == "SYSTEM_RUN_DENIED: allowlist miss"
        plan_miss = node_error(await run(op, nid, {"command": ["sh", "-c", "echo hi", "extra-arg"]}))
        assert plan_miss == {
            "code": "SYSTEM_RUN_DENIED",
            "message": "SYSTEM_RUN_DENIED: execution plan mismatch",
        }
        for reason in (
            "security=deny",
            "approval-required",
            "allowlist-miss",
            "execution-plan-miss",
            "cwd-unavailable",
        ):
            await asyncio.to_thread(node.wait_log, f"reason {reason})", 10)  # events follow the answer
        entry = (await approvals_get(op, nid))["file"]["agents"]["*"]["allowlist"][0]
        assert entry["pattern"] == "/usr/bin/echo" and entry["lastResolvedPath"] == "/usr/bin/echo"
        assert isinstance(entry["lastUsedAt"], int) and entry["id"]

        # compare-and-swap: a stale baseHash is refused with the documented message
        current = await approvals_get(op, nid)
        stale = await op.call(
            "exec.approvals.node.set", {"nodeId": nid, "file": FULL, "baseHash": "0" * 64}, timeout=30
        )
        assert not stale["ok"]
        assert "exec approvals changed; reload and retry" in json.dumps(stale["error"])
        assert (await approvals_get(op, nid))["hash"] == current["hash"]
        fresh = await op.call(
            "exec.approvals.node.set", {"nodeId": nid, "file": FULL, "baseHash": current["hash"]}, timeout=30
        )
        assert fresh["ok"], fresh
    assert node.proc is not None and node.proc.poll() is None


async def test_deadline_cancel_tree_kill_output_cap_and_concurrency(
    gateway: Gateway, node_factory: Any, tmp_path: Path
) -> None:
    # the policy arrives from config.yaml, as a fleet rollout would ship it
    node = node_factory(
        gateway, name="shell-procs", extra={"shell": {"approvals": FULL, "kill_grace_s": 1.0}}
    )
    nid = node.node_id
    pidfile = tmp_path / "pids"
    # a leader and a grandchild that both ignore SIGTERM
    stubborn = f"trap '' TERM; (trap '' TERM; while :; do sleep 1; done) & echo $$ $! > {pidfile}; while :; do sleep 1; done"
    async with Operator(gateway) as op:
        # params timeout: the whole group is gone by the time the result arrives
        res = invoke_payload(await run(op, nid, {"command": ["sh", "-c", stubborn], "timeoutMs": 1000}))
        assert res["exitCode"] == 124 and res["timedOut"] is True
        pids = [int(p) for p in pidfile.read_text().split()]
        assert group_members(pids[0]) == []
        assert all(not Path(f"/proc/{p}").exists() for p in pids)

        # invoke deadline: the gateway cancels, the node kills the group within its grace
        pidfile.unlink()
        t0 = time.monotonic()
        timeout = await run(op, nid, {"command": ["sh", "-c", stubborn]}, timeout_ms=1500)
        assert node_error(timeout)["code"] == "TIMEOUT"
        pids = [int(p) for p in wait_for(pidfile.exists, 5, what="pid file") and pidfile.read_text().split()]
        wait_for(lambda: group_members(pids[0]) == [], 5, what="process group gone after cancel")
        assert time.monotonic() - t0 < 8

        # 10 MB of output: capped at 200 kB (head kept, marked) with bounded memory in the node
        before = rss_kb(node.pid)
        big = invoke_payload(
            await run(
                op, nid, {"command": ["sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' a; echo done >&2"]}
            )
        )
        assert big["success"] is True and big["stderr"] == "done\n"
        assert big["stdout"].startswith("a" * 1000) and big["stdout"].endswith("\n... (truncated)")
        assert len(big["stdout"]) == 200_000 + len("\n... (truncated)")
        assert rss_kb(node.pid) - before < 20_000  # KiB

        # 20 concurrent runs (4 at a time, 16 queued) while system.which answers promptly; the 21st is busy
        runs = [
            asyncio.create_task(run(op, nid, {"command": ["sleep", "3"]}, timeout_ms=60000))
            for _ in range(21)
        ]
        await asyncio.sleep(0.5)
        latencies = []
        for _ in range(5):
            t = time.monotonic()
            which = invoke_payload(await op.invoke(nid, "system.which", {"bins": ["sh"]}))
            latencies.append(time.monotonic() - t)
            assert which["bins"]["sh"].endswith("/sh")
            await asyncio.sleep(0.2)
        results = await asyncio.gather(*runs)
        assert max(latencies) < 1.0, latencies  # a queued sleep would have taken >= 3 s
        busy = [r for r in results if not r.get("ok")]
        assert [node_error(b)["code"] for b in busy] == ["SYSTEM_RUN_BUSY"]
        assert all(invoke_payload(r)["success"] for r in results if r.get("ok"))
    assert node.proc is not None and node.proc.poll() is None


async def test_gateway_approval_flow_and_allow_always_survives_restart(
    gateway: Gateway, node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(gateway, name="shell-approve")
    nid = node.node_id
    argv = ["uname", "-s"]
    async with Operator(gateway) as op, Operator(gateway) as approver:
        prep = invoke_payload(
            await op.invoke(
                nid,
                "system.run.prepare",
                {"command": argv, "rawCommand": "uname -s", "sessionKey": "agent:main:main"},
            )
        )
        plan = prep["plan"]
        assert plan["argv"][0].endswith("/uname") and plan["argv"][1:] == ["-s"]
        assert plan["commandText"] == f"{plan['argv'][0]} -s" and plan["sessionKey"] == "agent:main:main"
        assert prep["execPolicy"] == {"security": "allowlist", "ask": "on-miss"}
        assert plan["policySnapshot"]["allowlistRules"] == []
        assert prep["allowAlwaysCoverage"]["complete"] is True

        run_id = str(uuid.uuid4())
        request = await op.call(
            "exec.approval.request",
            {
                "id": run_id,
                "command": plan["commandText"],
                "commandArgv": plan["argv"],
                "systemRunPlan": plan,
                "nodeId": nid,
                "host": "node",
                "security": "allowlist",
                "ask": "on-miss",
                "sessionKey": "agent:main:main",
                "timeoutMs": 60000,
                "twoPhase": True,
                # the test's approver has no device identity, so the gateway sees no delivery route
                "requireDeliveryRoute": False,
            },
        )
        assert request["ok"], request
        # a second operator (the approver's UI) answers; the requesting connection then runs it
        resolved = await approver.call("exec.approval.resolve", {"id": run_id, "decision": "allow-always"})
        assert resolved["ok"], resolved
        approved = await run(
            op,
            nid,
            {
                "command": plan["argv"],
                "rawCommand": plan["commandText"],
                "runId": run_id,
                "sessionKey": "agent:main:main",
                "approved": True,
                "approvalDecision": "allow-always",
            },
        )
        out = invoke_payload(approved)
        assert out["success"] is True and out["stdout"] == "Linux\n"
        entries = (await approvals_get(op, nid))["file"]["agents"]["default"]["allowlist"]
        assert [(e["pattern"], e["argPattern"], e["source"]) for e in entries] == [
            (os.path.realpath(plan["argv"][0]), "^\\-s$", "allow-always")
        ]

    node.stop()
    node.start()
    wait_for(lambda: node.live_status().get("pairing") == "approved", 60, what="node back after restart")
    async with Operator(gateway) as op:
        again = invoke_payload(await run(op, nid, {"command": ["uname", "-s"]}))
        assert again["stdout"] == "Linux\n"
        other_args = node_error(await run(op, nid, {"command": ["uname", "-a"]}))
        assert other_args["message"] == "SYSTEM_RUN_DENIED: approval required"


async def test_wrapper_shell_and_env_override_attacks_are_refused_end_to_end(
    gateway: Gateway, node_factory: Any, tmp_path: Path
) -> None:
    """Issue 15's holes through the real gateway: a program named `sh` outside /etc/shells, and an
    allowlisted `tar` pinned by argPattern that would run a command through TAR_OPTIONS."""
    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    fake_sh = evil / "sh"
    fake_sh.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    fake_sh.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    hook.chmod(0o755)
    (tmp_path / "f").write_text("data")
    tar_args = ["-cf", str(tmp_path / "a.tar"), "-C", str(tmp_path), "f"]
    policy = {
        "version": 1,
        "defaults": {"security": "allowlist", "ask": "off", "askFallback": "deny"},
        "agents": {
            "*": {
                "allowlist": [
                    {"pattern": os.path.realpath("/usr/bin/true")},
                    {"pattern": "tar", "argPattern": "^" + " ".join(tar_args) + "$"},
                ]
            }
        },
    }
    node = node_factory(gateway, name="shell-attacks", extra={"shell": {"approvals": policy}})
    nid = node.node_id
    async with Operator(gateway) as op:
        for argv, cwd in (([str(fake_sh), "-c", "true"], None), (["./sh", "-c", "true"], str(evil))):
            params: dict[str, Any] = {"command": argv, "sessionKey": "agent:main:main"}
            if cwd:
                params["cwd"] = cwd
            assert node_error(await run(op, nid, params)) == {
                "code": "SYSTEM_RUN_DENIED",
                "message": "SYSTEM_RUN_DENIED: allowlist miss",
            }
        smuggled = node_error(
            await run(
                op,
                nid,
                {
                    "command": ["tar", *tar_args],
                    "env": {"TAR_OPTIONS": f"--checkpoint=1 --checkpoint-action=exec={hook}"},
                },
            )
        )
        assert smuggled["code"] == "SYSTEM_RUN_DENIED" and "TAR_OPTIONS" in smuggled["message"]
        rsync = node_error(await run(op, nid, {"command": ["true"], "env": {"RSYNC_RSH": str(hook)}}))
        assert rsync["code"] == "INVALID_REQUEST" and "RSYNC_RSH" in rsync["message"]
        assert not pwned.exists()
        await asyncio.to_thread(node.wait_log, "exec.denied sent (runId", 10)

        # benign controls: the real shell with an allowlisted payload, the pinned tar, a terminal key
        assert invoke_payload(await run(op, nid, {"command": ["sh", "-lc", "true"]}))["success"] is True
        made = invoke_payload(await run(op, nid, {"command": ["tar", *tar_args], "env": {"TERM": "dumb"}}))
        assert made["success"] is True and (tmp_path / "a.tar").exists()
    assert node.proc is not None and node.proc.poll() is None
