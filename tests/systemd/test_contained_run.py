"""system.run contained by systemd (edgeclaw-run.socket → edgeclaw-run@.service), installed the way a user
installs it, in a real systemd 252, driven through the real gateway: a run is not the node's user, cannot
read the node's state or /proc, leaves nothing behind at its deadline (setsid or not), and one that
exceeds its memory limit fails alone while the node stays connected and is never restarted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gateway import Operator, invoke_payload, wait_for
from tests.systemd.conftest import Node, report

FULL = {"version": 1, "defaults": {"security": "full", "ask": "off", "askFallback": "full"}}


@pytest.fixture(scope="module")
def node(sd_node: Node) -> Node:
    sd_node.write_config(sd_node.config() + "\n" + yaml.safe_dump({"shell": {"approvals": FULL}}))
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    wait_for(lambda: sd_node.status_text().startswith("connected to"), 20, what="connected after reload")
    return sd_node


async def _run(node: Node, argv: list[str], timeout_ms: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"command": argv}
    if timeout_ms is not None:
        params["timeoutMs"] = timeout_ms
    async with Operator(node.gw) as op:
        result: dict[str, Any] = invoke_payload(await op.invoke(node.node_id, "system.run", params))
    return result


async def test_a_run_is_not_the_node_and_cannot_reach_its_secrets(node: Node) -> None:
    main_pid = node.show()["MainPID"]
    node_uid = node.ct.exec(["id", "-u", "edgeclaw"]).stdout.strip()
    t0 = time.monotonic()
    me = await _run(node, ["/bin/sh", "-lc", 'id -u; id -un; echo "$HOME"; ls -A "$HOME" | wc -l'])
    report(f"contained run (sh -lc id) round trip through the gateway: {time.monotonic() - t0:.2f} s")
    uid, user, home, entries = me["stdout"].split()
    assert me["success"] and uid != node_uid and user == "edgeclaw-run", me
    assert home != "/var/lib/edgeclaw" and entries == "0"
    for path in ("/var/lib/edgeclaw", f"/proc/{main_pid}/environ", "/var/lib/edgeclaw/exec-approvals.json"):
        probe = await _run(node, ["/bin/cat", path])
        assert not probe["success"] and probe["stdout"] == "", (path, probe)
    write = await _run(node, ["/bin/sh", "-c", "echo '{}' > /var/lib/edgeclaw/exec-approvals.json"])
    assert not write["success"], write


async def test_a_setsid_grandchild_is_gone_after_the_deadline(node: Node) -> None:
    script = "setsid sh -c 'trap \"\" TERM; exec sleep 301' & sleep 302"
    result = await _run(node, ["/bin/sh", "-c", script], timeout_ms=1500)
    assert result["timedOut"] and result["exitCode"] == 124, result
    left = node.ct.exec(["pgrep", "-u", "edgeclaw-run", "-f", "sleep 30[12]"], check=False)
    assert left.returncode == 1 and left.stdout == "", left.stdout
    units = node.ct.exec(["systemctl", "list-units", "--no-legend", "edgeclaw-run@*"], check=False).stdout
    assert "running" not in units, units


async def test_a_run_over_its_memory_limit_fails_alone(node: Node) -> None:
    before = node.show()
    hog = await _run(node, ["/usr/bin/python3", "-c", "b = bytearray(3 * 1024**3); print(len(b))"])
    report(f"a 3 GiB allocation in a contained run: exit {hog.get('exitCode')}, {hog['stderr'][-60:]!r}")
    assert not hog["success"] and hog["stdout"] == "" and "MemoryError" in hog["stderr"], hog
    after = node.wait_connected(10)
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == "0"
    again = await _run(node, ["/bin/echo", "still here"])
    assert again["success"] and again["stdout"] == "still here\n"


async def test_a_fork_heavy_run_fails_alone_and_leaves_nothing(node: Node) -> None:
    before = node.show()
    script = "i=0; while [ $i -lt 600 ]; do sleep 30 & i=$((i+1)); done; echo all-forked"
    t0 = time.monotonic()
    bomb = await _run(node, ["/bin/sh", "-c", script], timeout_ms=8000)
    report(
        f"600 forks in a contained run (LimitNPROC=256): {time.monotonic() - t0:.2f} s, exit "
        f"{bomb.get('exitCode')}, stderr {bomb['stderr'][-50:]!r}"
    )
    assert not bomb["success"] and "all-forked" not in bomb["stdout"] and "fork" in bomb["stderr"].lower()
    # the answer comes from the run host before it exits: at that moment nothing the run started may
    # be left; the host itself (python3) is gone once systemd has stopped its unit, a moment later
    ps_cmd = ["ps", "-o", "pid=,ppid=,stat=,comm=", "-u", "edgeclaw-run"]
    ps = node.ct.exec(ps_cmd, check=False).stdout
    of_the_run = [line for line in ps.splitlines() if line.split()[-1] != "python3"]
    assert not of_the_run, f"{len(of_the_run)} processes of the run survived it:\n" + "\n".join(
        of_the_run[:40]
    )
    deadline = time.monotonic() + 10
    while (ps := node.ct.exec(ps_cmd, check=False).stdout.strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ps, f"the run's unit left processes 10 s after its answer:\n{ps[:2000]}"
    after = node.wait_connected(10)
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == "0"
    again = await _run(node, ["/bin/echo", "still here"])
    assert again["success"] and again["stdout"] == "still here\n"


def test_contained_run_cost_and_20_concurrent_runs(node: Node) -> None:
    """bench/contained_run.py against the real edgeclaw-run.socket, as the node's user: spawn -> exit p50/p99
    (contained and in-process) and 20 concurrent runs while system.which is timed."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "contained_run.py"
    node.ct.write("/var/tmp/contained_run.py", bench.read_text())
    out = node.ct.exec(
        [
            "runuser",
            "-u",
            "edgeclaw",
            "--",
            "/opt/edgeclaw/venv/bin/python3",
            "/var/tmp/contained_run.py",
            "--socket",
            "/run/edgeclaw-run.sock",
            "--runs",
            "50",
        ],
        timeout=240,
    ).stdout
    for line in out.strip().splitlines():
        report(f"in systemd: {line}")
    assert "20 concurrent contained `sleep 0.5`: all answered" in out
