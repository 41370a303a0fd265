"""edgeclaw.logs under the real hardened unit. Its user is outside the journal's groups, so by default the
node answers from its in-memory log and says why (journalctl would silently show nothing: found here);
with the documented opt-in (`SupplementaryGroups=systemd-journal`) it reads its own unit's journal. In both,
a secret that reached the log through the node's own log line never comes back."""

from __future__ import annotations

import json
from typing import Any

from tests.support.gateway import Operator, invoke_payload, wait_for
from tests.systemd.conftest import Node, report

DROPIN = "/etc/systemd/system/edgeclaw.service.d/journal.conf"


async def _logs(node: Node, params: dict[str, Any]) -> dict[str, Any]:
    async with Operator(node.gw) as op:
        result: dict[str, Any] = invoke_payload(await op.invoke(node.node_id, "edgeclaw.logs", params))
    return result


def _assert_clean(tail: dict[str, Any], secrets: list[str]) -> None:
    dumped = json.dumps(tail)
    for secret in secrets:
        pieces = {secret[i : i + 10] for i in range(0, len(secret) - 9)}
        assert not any(p in dumped for p in pieces), "a piece of a token came back"


async def test_logs_under_the_hardened_unit_memory_by_default_journal_when_allowed(sd_node: Node) -> None:
    device_token = json.loads(sd_node.ct.exec(["cat", "/var/lib/edgeclaw/device-token.json"]).stdout)["token"]
    secrets = [device_token]  # paired with a setup code, this node never held the gateway's shared token
    # the node's own log lines are redacted as they are written; the attack is a line of the unit that
    # did not pass through that filter (a child's output, a crash dump): journald files it under the unit
    seed = f"MESSAGE=child printed deviceToken={device_token}\nPRIORITY=3\nOBJECT_SYSTEMD_UNIT=edgeclaw.service\n"
    sd_node.ct.write("/root/seed.journal", seed, mode=0o600)
    sd_node.ct.exec(["sh", "-c", "logger --journald=/root/seed.journal"])
    wait_for(lambda: device_token in sd_node.journal(), 10, what="the seed in the unit's journal")
    good = sd_node.config()
    sd_node.write_config(good + "\nnode:\n  max_concurrent_invokes: lots\n")
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    try:
        wait_for(lambda: sd_node.status_text().startswith("reload failed"), 20, what="the failed reload")
        default = await _logs(sd_node, {"lines": 200, "level": "warning"})
    finally:
        sd_node.write_config(good)
        sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
        wait_for(lambda: sd_node.status_text().startswith("connected to"), 20, what="STATUS= clean again")
    report(f"edgeclaw.logs, hardened unit as shipped: source {default['source']}, {default['count']} lines")
    assert default["source"] == "memory" and "systemd-journal" in default["notes"][0], default
    assert "max_concurrent_invokes" in "\n".join(default["lines"])
    _assert_clean(default, secrets)

    pid = sd_node.show()["MainPID"]
    sd_node.ct.write(DROPIN, "[Service]\nSupplementaryGroups=systemd-journal\n")
    sd_node.ct.exec(["systemctl", "daemon-reload"])
    try:
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
        sd_node.wait_connected(30, not_pid=pid)
        allowed = await _logs(sd_node, {"lines": 200, "level": "warning"})
    finally:
        sd_node.ct.exec(["rm", "-f", DROPIN])
        sd_node.ct.exec(["systemctl", "daemon-reload"])
        sd_node.ct.exec(["systemctl", "restart", "edgeclaw"], timeout=60)
        sd_node.wait_connected(30)
    report(
        f"edgeclaw.logs with SupplementaryGroups=systemd-journal: source {allowed['source']}, {allowed['count']} lines"
    )
    assert allowed["source"] == "journal" and allowed.get("unit") == "edgeclaw.service", allowed
    text = "\n".join(allowed["lines"])
    assert "max_concurrent_invokes" in text  # the previous run's line: the journal has history
    assert "child printed deviceToken=" in text  # the seeded line came back, without its token
    _assert_clean(allowed, secrets)
