"""The root supervisor's escalation under a real systemd: a node whose loop-lag monitor crashes on every
sample is restarted in-process until the restart intensity is exceeded, then exits 70 (EX_SOFTWARE), and
systemd restarts it (NRestarts + 1). The crash is injected from outside the code, the way Python allows
it for any program: a .pth file in the venv's site-packages that imports a module patching one method."""

from __future__ import annotations

import time

from tests.support.gateway import wait_for
from tests.systemd.conftest import Node, report

SITE = "/opt/edgeclaw/venv/lib/python3.11/site-packages"
DROPIN = "/etc/systemd/system/edgeclaw.service.d/zz-inject.conf"
INJECT = """
from edgeclaw.platform.metrics import LoopLag

def _broken(self, lag_s, now=None):
    raise RuntimeError("injected: the loop-lag monitor is broken")

LoopLag.observe = _broken
"""
# WatchdogSec is raised for this test only: a task in backoff withholds watchdog pings, and the short test
# watchdog (4 s) would kill the node before the supervisor gives up (the shipped unit has 30 s).
INJECT_DROPIN = """[Service]
WatchdogSec=60
"""


def test_past_its_restart_intensity_the_node_exits_70_and_systemd_restarts_it(sd_node: Node) -> None:
    ct = sd_node.ct
    ct.write(f"{SITE}/edgeclaw_test_inject.py", INJECT)
    ct.write(f"{SITE}/edgeclaw_test_inject.pth", "import edgeclaw_test_inject\n")
    ct.write(DROPIN, INJECT_DROPIN)
    ct.exec(["systemctl", "daemon-reload"])
    journal_before = sd_node.journal()
    ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
    before = sd_node.show()
    t0 = time.monotonic()
    try:

        def escalated() -> dict[str, str] | None:
            s = sd_node.show()
            return s if int(s.get("NRestarts") or 0) >= int(before["NRestarts"]) + 1 else None

        try:
            after = wait_for(escalated, 90, interval=0.2, what="exit 70 and a restart by systemd")
        except TimeoutError:
            print(sd_node.show(), sd_node.journal()[len(journal_before) :][-5000:])
            raise
        took = time.monotonic() - t0
        new = sd_node.journal()[len(journal_before) :]
        assert "edgeclaw/loop-lag failed: RuntimeError: injected" in new
        assert "restart #5" in new
        assert "supervisor edgeclaw gives up" in new
        assert "status=70/SOFTWARE" in new, new[-3000:]
        assert after["MainPID"] != before["MainPID"]
        report(
            f"supervisor: a child crashing on every run -> 5 restarts -> exit 70 -> systemd restart: {took:.1f} s"
        )
    finally:
        ct.exec(["rm", "-f", DROPIN, f"{SITE}/edgeclaw_test_inject.pth", f"{SITE}/edgeclaw_test_inject.py"])
        ct.exec(["systemctl", "daemon-reload"])
        ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
    sd_node.wait_connected(60)
