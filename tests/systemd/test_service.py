"""EdgeClaw as a systemd service in a real systemd 252: notify, status, watchdog restart, reload, stop,
crash restart — against the real OpenClaw gateway. The tests share one booted, paired container and run
in file order; each checks its own behaviour from the state the previous one left."""

from __future__ import annotations

import asyncio
import json
import time

import yaml

from tests.support.gateway import Operator, invoke_payload, wait_for
from tests.systemd.conftest import NODE_NAME, Node, report


async def test_running_connected_and_invokable(sd_node: Node) -> None:
    status = sd_node.ct.exec(["systemctl", "status", "edgeclaw", "--no-pager", "-n", "0"], check=False).stdout
    print(status)
    assert "Active: active (running)" in status
    assert f'Status: "connected to {sd_node.gw.url} as {NODE_NAME} · approved' in status
    async with Operator(sd_node.gw) as op:
        frame = await op.invoke(sd_node.node_id, "system.which", {"bins": ["sh", "no-such-binary"]})
    found = invoke_payload(frame)
    assert "sh" in str(found) and "no-such-binary" not in str(found.get("bins", found))
    # STATUS= counts the invoke
    wait_for(lambda: "1 invokes" in sd_node.status_text(), 10, what="STATUS= counting the invoke")


def _restarted(
    node: Node, before: dict[str, str], what: str, timeout: float = 90.0
) -> tuple[dict[str, str], float]:
    """Wait for NRestarts + 1 and a connected STATUS= from a new main PID; returns (show, seconds)."""
    t0 = time.monotonic()

    def ok() -> dict[str, str] | None:
        s = node.show()
        return s if int(s.get("NRestarts") or 0) >= int(before["NRestarts"]) + 1 else None

    wait_for(ok, timeout, interval=0.1, what=f"{what}: NRestarts + 1")
    after = node.wait_connected(timeout, not_pid=before["MainPID"])
    return after, time.monotonic() - t0


def test_watchdog_restarts_a_hung_node_which_reconnects_without_pairing(sd_node: Node) -> None:
    before = sd_node.show()
    pid = before["MainPID"]
    journal_before = sd_node.journal()
    sd_node.ct.exec(["kill", "-STOP", pid])
    after, took = _restarted(sd_node, before, "watchdog")
    report(
        f"watchdog: SIGSTOP -> Watchdog timeout -> restart -> connected again in {took:.2f} s "
        f"(WatchdogSec=4, RestartSec=1)"
    )
    new = sd_node.journal()[len(journal_before) :]
    assert "Watchdog timeout" in new
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["MainPID"] != pid
    # the same identity, the stored device token, no new pairing request
    assert "pairing required" not in new and "stored the device token" not in new
    assert sd_node.node_id in sd_node.ct.exec(["edgeclaw", "identity"]).stdout
    assert not [p for p in sd_node.gw.pending_devices() if p.get("deviceId") == sd_node.node_id]


HOOK_LOG = "/var/lib/edgeclaw/notified"


async def _notify(node: Node, title: str) -> dict[str, object]:
    async with Operator(node.gw) as op:
        return await op.invoke(node.node_id, "system.notify", {"title": title, "body": "b"})


def _live(node: Node) -> dict[str, object]:
    return json.loads(node.ct.exec(["cat", "/run/edgeclaw/status.json"]).stdout)


async def test_reload_applies_a_changed_config_in_place(sd_node: Node) -> None:
    before = sd_node.show()
    live = _live(sd_node)
    original = sd_node.config()
    hook = ["/bin/sh", "-c", f'echo "$EDGECLAW_NOTIFY_TITLE" >> {HOOK_LOG}']
    changed = original + "\n" + yaml.safe_dump({"system": {"notify_hook": hook}, "log": {"level": "debug"}})
    sd_node.write_config(changed)
    mark = len(sd_node.journal())
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    wait_for(lambda: "configuration reloaded" in sd_node.journal()[mark:], 20, what="reload logged")
    sd_node.wait_connected(20)
    assert invoke_payload(await _notify(sd_node, "after-reload")) == {"ok": True}
    assert "after-reload" in sd_node.ct.exec(["cat", HOOK_LOG]).stdout  # the new hook ran
    after = sd_node.show()
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == before["NRestarts"]
    live_after = _live(sd_node)
    assert live_after["reconnects"] == live["reconnects"] and live_after["since"] == live["since"]
    new = sd_node.journal()[mark:]
    assert f"connected to {sd_node.gw.url} (gateway" not in new  # no new session
    assert "Reloading" in new and "Reloaded" in new


async def test_broken_config_on_reload_keeps_the_old_one(sd_node: Node) -> None:
    good = sd_node.config()
    before = sd_node.show()
    sd_node.write_config(good + "\nnode:\n  max_concurrent_invokes: lots\n")
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    status = wait_for(
        lambda: (t := sd_node.status_text()).startswith("reload failed") and t,
        20,
        what="STATUS= saying the reload failed",
    )
    report(f"STATUS after a broken reload: {status}")
    assert "max_concurrent_invokes" in status and "connected to" in status
    s = sd_node.show()
    assert s["ActiveState"] == "active" and s["MainPID"] == before["MainPID"]
    assert invoke_payload(await _notify(sd_node, "old-config-still-runs")) == {"ok": True}
    assert "old-config-still-runs" in sd_node.ct.exec(["cat", HOOK_LOG]).stdout
    sd_node.write_config(good)
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    wait_for(lambda: sd_node.status_text().startswith("connected to"), 20, what="STATUS= clean again")


def test_start_with_the_gateway_unreachable_is_ready_and_says_so(sd_node: Node) -> None:
    dropin = "/etc/systemd/system/edgeclaw.service.d/outage.conf"
    sd_node.ct.write(dropin, "[Service]\nEnvironment=EDGECLAW_GATEWAY_URL=ws://127.0.0.1:9\n")
    sd_node.ct.exec(["systemctl", "daemon-reload"])
    try:
        t0 = time.monotonic()
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)  # returns once READY=1 arrived
        ready_s = time.monotonic() - t0
        status = wait_for(
            lambda: (t := sd_node.status_text()).startswith("gateway unreachable") and t,
            20,
            what="STATUS= saying the gateway is unreachable",
        )
        report(f"start with no gateway: READY after {ready_s:.2f} s; STATUS: {status}")
        assert sd_node.show()["SubState"] == "running"
        assert "retry in" in status and "(attempt" in status
    finally:
        sd_node.ct.exec(["rm", "-f", dropin])
        sd_node.ct.exec(["systemctl", "daemon-reload"])
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
    sd_node.wait_connected(60)


def test_sigkill_restarts_and_reconnects(sd_node: Node) -> None:
    before = sd_node.show()
    sd_node.ct.exec(["kill", "-KILL", before["MainPID"]])
    after, took = _restarted(sd_node, before, "SIGKILL")
    report(f"SIGKILL -> restarted -> connected again in {took:.2f} s")
    assert after["MainPID"] != before["MainPID"]


async def test_stop_delivers_a_running_system_run_then_exits_0(sd_node: Node) -> None:
    approvals = {
        "version": 1,
        "defaults": {"security": "allowlist", "ask": "off", "askFallback": "deny"},
        "agents": {"*": {"allowlist": [{"pattern": "/usr/bin/sleep"}]}},
    }
    sd_node.write_config(sd_node.config() + "\n" + yaml.safe_dump({"shell": {"approvals": approvals}}))
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    wait_for(lambda: sd_node.status_text().startswith("connected to"), 20, what="connected after reload")
    mark = len(sd_node.journal())
    async with Operator(sd_node.gw) as op:
        run = asyncio.ensure_future(
            op.invoke(
                sd_node.node_id,
                "system.run",
                {"command": ["/usr/bin/sleep", "3"], "timeoutMs": 20000},
                timeout_ms=30000,
            )
        )
        await asyncio.to_thread(
            wait_for,
            # a contained run: its own user
            lambda: (
                sd_node.ct.exec(["pgrep", "-u", "edgeclaw-run", "-x", "sleep"], check=False).returncode == 0
            ),
            15,
            0.1,
            "system.run's sleep running",
        )
        t0 = time.monotonic()
        await asyncio.to_thread(sd_node.ct.exec, ["systemctl", "stop", "edgeclaw"], timeout=60)
        stop_s = time.monotonic() - t0
        result = invoke_payload(await asyncio.wait_for(run, 10))
    report(f"systemctl stop with a 3 s system.run in flight took {stop_s:.2f} s; result {result}")
    assert result["success"] is True and result["exitCode"] == 0
    s = sd_node.show()
    assert s["ActiveState"] == "inactive" and s["Result"] == "success" and s["ExecMainStatus"] == "0"
    assert "draining in-flight invokes" in sd_node.journal()[mark:]


async def test_reload_that_changes_the_command_surface_reconnects_in_place(sd_node: Node) -> None:
    sd_node.ct.exec(["systemctl", "start", "edgeclaw"], timeout=60)
    before = sd_node.wait_connected(60)
    mark = len(sd_node.journal())
    sd_node.write_config(sd_node.config() + "\n" + yaml.safe_dump({"device": {"enabled": False}}))
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    wait_for(
        lambda: "reconnecting: node manifest changed" in sd_node.journal()[mark:],
        20,
        what="1012 reconnect after a surface change",
    )
    wait_for(
        lambda: f"connected to {sd_node.gw.url} (gateway" in sd_node.journal()[mark:],
        30,
        what="connected again",
    )
    after = sd_node.wait_connected(30)
    report(f"after a surface-changing reload: {after['StatusText']}")
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == before["NRestarts"]
    declared = _live(sd_node)["commands"]
    # device.info/status went with the device capability; device.identify is the diagnostics capability's
    assert "system.run" in declared and not {"device.info", "device.status"} & set(declared), declared
