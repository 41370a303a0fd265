"""The diagnostics commands as agent tools (`node.pluginTools.update`): names match the gateway's
`^[A-Za-z][A-Za-z0-9_-]{0,63}$`, descriptions stay under 1024 characters, parameters are JSON Schema."""

from __future__ import annotations

from typing import Any

from edgeclaw.capabilities.diagnostics.logs import LEVELS, MAX_LINES

PLUGIN_ID = "edgeclaw-diagnostics"
TOOL_IDENTIFY_MAX_S = 25  # a tool call's invoke has a 30 s timeout at the gateway; the blink ends with it


def plugin_tools(identify_available: bool) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = [
        {
            "pluginId": PLUGIN_ID,
            "name": "edgeclaw_logs",
            "description": "Recent lines of this EdgeClaw node's own log (its systemd journal, or its in-memory "
            "log when not under systemd), newest last, with secrets masked. Use it to see why the node or one of "
            "its commands misbehaved. At most 1000 lines / 64 KiB per call.",
            "command": "edgeclaw.logs",
            "parameters": {
                "type": "object",
                "properties": {
                    "lines": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LINES,
                        "description": "default 100",
                    },
                    "since": {
                        "type": ["string", "integer"],
                        "description": "only lines newer than this: seconds ago (integer), '15m'/'2h'/'1d', or an "
                        "ISO 8601 time",
                    },
                    "level": {"type": "string", "enum": list(LEVELS), "description": "this level and worse"},
                },
                "additionalProperties": False,
            },
        },
        {
            "pluginId": PLUGIN_ID,
            "name": "edgeclaw_doctor",
            "description": "Run `edgeclaw doctor` on this node: config, permissions, identity, clock, gateway "
            "reachability, pairing, withheld commands, device access, board health (temperature, "
            "under-voltage, SD wear) and the systemd unit. Each check is pass/warn/fail with the exact fix.",
            "command": "edgeclaw.doctor",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    ]
    if identify_available:
        tools.append(
            {
                "pluginId": PLUGIN_ID,
                "name": "device_identify",
                "description": "Blink this board's activity LED (or its identify light) for a few seconds so a "
                "person can see which physical board this node is; it goes back to normal afterwards.",
                "command": "device.identify",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "seconds": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": TOOL_IDENTIFY_MAX_S,
                            "description": "how long to blink (default 10)",
                        }
                    },
                    "additionalProperties": False,
                },
            }
        )
    return tools
