"""Crash-loop safe mode under a real systemd 252: a node killed K times within T of starting comes back
in safe mode (still connected, saying why in STATUS= and at CRITICAL in the journal) instead of systemd's
StartLimitBurst leaving the board down; a run healthy for S seconds clears it, and the next start is
normal again."""

from __future__ import annotations

import json
import time

import yaml

from tests.support.gateway import wait_for
from tests.systemd.conftest import Node, report

SAFE = {"failed_starts": 3, "window_s": 600, "healthy_after_s": 8}
HOOK_LOG = "/var/lib/edgeclaw/owner-told"


def _starts(node: Node) -> list[dict[str, object]]:
    out = node.ct.exec(["cat", "/var/lib/edgeclaw/starts.json"], check=False).stdout
    return list(json.loads(out)["starts"]) if out.strip() else []


def _kill_within_s(node: Node, before: dict[str, str]) -> dict[str, str]:
    """SIGKILL the running node (well within healthy_after_s of its start); wait for systemd's restart."""
    node.ct.exec(["kill", "-KILL", before["MainPID"]])

    def restarted() -> dict[str, str] | None:
        s = node.show()
        fresh = s.get("MainPID") not in (before["MainPID"], "0") and s.get("ActiveState") == "active"
        more = int(s.get("NRestarts") or 0) > int(before["NRestarts"])
        return s if fresh and more and s.get("StatusText") else None

    return wait_for(restarted, 60, interval=0.1, what="systemd restarting the killed node")


def test_k_failed_starts_bring_safe_mode_and_a_healthy_run_clears_it(sd_node: Node) -> None:
    original = sd_node.config()
    doc = yaml.safe_load(original)
    doc.setdefault("node", {})["safe_mode"] = SAFE
    hook = ["/bin/sh", "-c", f'echo "$EDGECLAW_NOTIFY_TITLE: $EDGECLAW_NOTIFY_BODY" >> {HOOK_LOG}']
    doc.setdefault("system", {})["notify_hook"] = hook
    sd_node.write_config(yaml.safe_dump(doc, sort_keys=False))
    try:
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)  # a clean stop: not a failure
        state = sd_node.wait_connected(60)
        mark = len(sd_node.journal())
        t0 = time.monotonic()
        for _ in range(SAFE["failed_starts"]):
            state = _kill_within_s(sd_node, state)
        status = wait_for(
            lambda: (t := sd_node.status_text()).startswith("SAFE MODE") and "connected to" in t and t,
            60,
            what="STATUS= in safe mode, connected",
        )
        report(f"{SAFE['failed_starts']} SIGKILLs -> safe mode, connected, in {time.monotonic() - t0:.1f} s")
        report(f"STATUS in safe mode: {status}")
        assert "failed to start 3 times" in status
        s = sd_node.show()
        assert s["ActiveState"] == "active" and s["SubState"] == "running"
        journal = sd_node.journal()[mark:]
        assert "starting in SAFE MODE" in journal
        told = sd_node.ct.exec(["cat", HOOK_LOG], check=False).stdout
        assert told.count("EdgeClaw node in safe mode") == 1, told
        # the safe set only: the connection announces no gpio/shell/camera/system commands
        live = json.loads(sd_node.ct.exec(["cat", "/run/edgeclaw/status.json"]).stdout)
        assert sorted(live["commands"]) == ["device.info", "device.status", "edgeclaw.logs"], live
        assert live["safe_mode"]
        # a run healthy for healthy_after_s clears the record; the next start is a normal one
        t1 = time.monotonic()
        wait_for(
            lambda: [e.get("outcome") for e in _starts(sd_node)] == ["healthy"],
            SAFE["healthy_after_s"] + 30,
            interval=0.5,
            what="the crash-loop record cleared after a healthy run",
        )
        report(f"crash-loop record cleared {time.monotonic() - t1:.1f} s into the safe-mode run")
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
        wait_for(
            lambda: (t := sd_node.status_text()).startswith("connected to") and t,
            60,
            what="a normal start after the healthy run",
        )
        live = json.loads(sd_node.ct.exec(["cat", "/run/edgeclaw/status.json"]).stdout)
        assert "system.which" in live["commands"] and not live["safe_mode"]
    finally:
        sd_node.write_config(original)
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60, check=False)
    sd_node.wait_connected(60)


def test_a_broken_config_waits_up_instead_of_exiting_78_then_starts_when_fixed(sd_node: Node) -> None:
    """78 used to end the unit (RestartPreventExitStatus): the board stayed down until someone came.
    Now it stays active, says what is wrong, keeps the watchdog fed, and starts once the file is fixed."""
    original = sd_node.config()
    try:
        sd_node.write_config(original + "\nnode_typo: 1\n")
        before = sd_node.show()
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)  # returns at READY=1
        status = wait_for(
            lambda: (t := sd_node.status_text()).startswith("waiting for a valid config") and t,
            30,
            what="STATUS= waiting for a valid config",
        )
        report(f"STATUS with a broken config: {status}")
        assert "node_typo" in status
        time.sleep(6)  # longer than the test unit's WatchdogSec=4: a waiting node must keep pinging
        s = sd_node.show()
        assert s["ActiveState"] == "active" and s["NRestarts"] == before["NRestarts"], s
        t0 = time.monotonic()
        sd_node.write_config(original)
        after = sd_node.wait_connected(60)
        report(f"config fixed -> connected in {time.monotonic() - t0:.1f} s, same process, no restart")
        assert after["MainPID"] == s["MainPID"] and after["NRestarts"] == before["NRestarts"]
    finally:
        sd_node.write_config(original)
    sd_node.wait_connected(60)
