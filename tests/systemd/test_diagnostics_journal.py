"""edgeclaw.logs under the real hardened unit: the node reads its own unit's journal (not the in-memory
fallback), and a secret that reached the journal through the node's own log line never comes back."""

from __future__ import annotations

import json
from typing import Any

from tests.support.gateway import Operator, invoke_payload, wait_for
from tests.systemd.conftest import Node, report


async def _logs(node: Node, params: dict[str, Any]) -> dict[str, Any]:
    async with Operator(node.gw) as op:
        result: dict[str, Any] = invoke_payload(await op.invoke(node.node_id, "edgeclaw.logs", params))
    return result


async def test_logs_come_from_the_units_journal_and_never_carry_a_token(sd_node: Node) -> None:
    device_token = json.loads(sd_node.ct.exec(["cat", "/var/lib/edgeclaw/device-token.json"]).stdout)["token"]
    good = sd_node.config()
    # the attack: the node itself writes both secrets into its journal (a config error quotes the value)
    sd_node.write_config(good + f"\nnode:\n  max_concurrent_invokes: '{sd_node.gw.token} {device_token}'\n")
    sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
    try:
        wait_for(lambda: sd_node.status_text().startswith("reload failed"), 20, what="the failed reload")
        journal = sd_node.journal()
        assert sd_node.gw.token in journal, "the seed did not reach the journal: the test proves nothing"
        tail = await _logs(sd_node, {"lines": 200, "level": "warning"})
    finally:
        sd_node.write_config(good)
        sd_node.ct.exec(["systemctl", "reload", "edgeclaw"])
        wait_for(lambda: sd_node.status_text().startswith("connected to"), 20, what="STATUS= clean again")
    report(f"edgeclaw.logs under the hardened unit: source {tail['source']}, {tail['count']} lines")
    assert tail["source"] == "journal" and tail.get("unit") == "edgeclaw.service", tail
    text = "\n".join(tail["lines"])
    assert "max_concurrent_invokes" in text, text[-2000:]
    dumped = json.dumps(tail)
    for secret in (sd_node.gw.token, device_token):
        pieces = {secret[i : i + 10] for i in range(0, len(secret) - 9)}
        assert not any(p in dumped for p in pieces), "a piece of a token came back"
