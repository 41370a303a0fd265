"""Agent-facing surface generated from the config: one plugin tool per pin action, and a skill that
describes the board's wiring, so the agent uses the pins without knowing our command names.

A tool call becomes `node.invoke` with the tool's arguments as params, so each per-pin tool carries
the pin's name as a required single-value (`enum`) argument.
"""

from __future__ import annotations

import json
from typing import Any

from edgeclaw.capabilities.gpio.config import Config, PinConfig

PLUGIN_ID = "edgeclaw-gpio"
MAX_TOOLS = 128
MAX_DESCRIPTION = 1024


def _desc(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _about(name: str, pin: PinConfig) -> str:
    what = pin.description.strip() or f"{pin.kind} pin"
    return f"'{name}' ({what}; {pin.kind} on {pin.pin})"


def _name_arg(name: str) -> dict[str, Any]:
    return {"type": "string", "enum": [name], "description": f"always {name!r}"}


def pin_tools(prefix: str, name: str, pin: PinConfig) -> list[dict[str, Any]]:
    inactive, active = pin.labels()
    tools: list[dict[str, Any]] = []

    def tool(action: str, command: str, description: str, props: dict[str, Any], required: list[str]) -> None:
        tools.append(
            {
                "pluginId": PLUGIN_ID,
                "name": f"{prefix}_{name}_{action}",
                "description": _desc(description),
                "command": command,
                "parameters": {
                    "type": "object",
                    "properties": {"name": _name_arg(name), **props},
                    "required": ["name", *required],
                    "additionalProperties": False,
                },
            }
        )

    tool(
        "read",
        "gpio.read",
        f"Read the current value of {_about(name, pin)}: 1 = {active}, 0 = {inactive}.",
        {},
        [],
    )
    if pin.kind == "output":
        tool(
            "write",
            "gpio.write",
            f"Switch {_about(name, pin)} on (value 1, {active}) or off (value 0, {inactive}).",
            {"value": {"type": "integer", "enum": [0, 1], "description": f"1 = {active}, 0 = {inactive}"}},
            ["value"],
        )
    if pin.kind == "pwm":
        tool(
            "pwm",
            "gpio.pwm",
            f"Set the PWM duty cycle of {_about(name, pin)}: 0 = off, 1 = fully on.",
            {
                "value": {"type": "number", "minimum": 0, "maximum": 1, "description": "duty cycle 0..1"},
                "frequency": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 100000,
                    "description": "PWM frequency in Hz (optional)",
                },
            },
            ["value"],
        )
    if pin.is_output:
        tool(
            "pulse",
            "gpio.pulse",
            f"Turn {_about(name, pin)} on for `ms` milliseconds (at most {pin.max_pulse_ms}), then back to "
            "its previous value — the node restores it even if the gateway connection drops.",
            {"ms": {"type": "integer", "minimum": 1, "maximum": pin.max_pulse_ms, "description": "duration"}},
            ["ms"],
        )
    return tools


def plugin_tools(config: Config) -> list[dict[str, Any]]:
    if not config.enabled or not config.pins:
        return []
    prefix = config.tool_prefix
    tools: list[dict[str, Any]] = [
        {
            "pluginId": PLUGIN_ID,
            "name": f"{prefix}_list",
            "description": "List this board's GPIO pins with their kind, wiring description and current value.",
            "command": "gpio.list",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
        {
            "pluginId": PLUGIN_ID,
            "name": f"{prefix}_events",
            "description": "Recent input edges (button presses, motion, ...) recorded by the node, oldest first. "
            "Pass `since` = the `next_since` of the previous answer to get only newer ones.",
            "command": "gpio.events",
            "parameters": {
                "type": "object",
                "properties": {
                    "since": {"type": "integer", "minimum": 0},
                    "name": {"type": "string", "enum": sorted(config.pins)},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                "additionalProperties": False,
            },
        },
    ]
    for name, pin in config.pins.items():
        if pin.tools:
            tools.extend(pin_tools(prefix, name, pin))
    return tools[:MAX_TOOLS]


def skill(config: Config, node_name: str) -> dict[str, Any] | None:
    if not config.enabled or not config.pins:
        return None
    prefix = config.tool_prefix
    # the gateway drops a skill whose frontmatter name/description differ from the ones sent beside it
    # ("dropped node skill with mismatched frontmatter"): one value for both, JSON-quoted so a display
    # name with ':' or '#' stays one YAML string
    skill_name = f"gpio-{_slug(node_name)}"
    description = skill_description(node_name)
    lines = [
        "---",
        f"name: {skill_name}",
        f"description: {json.dumps(description, ensure_ascii=False)}",
        "---",
        "",
        f"# GPIO on {node_name}",
        "",
        "Only the pins below exist; anything else is refused. Tools take the pin's `name` as an argument.",
        "",
        "| pin | wired to | kind | header pin | values | tools |",
        "|---|---|---|---|---|---|",
    ]
    for name, pin in config.pins.items():
        inactive, active = pin.labels()
        values = "0..1 duty cycle" if pin.kind == "pwm" else f"1 = {active}, 0 = {inactive}"
        names = [t["name"] for t in pin_tools(prefix, name, pin)] if pin.tools else []
        where = pin.pin + (f" (trigger {pin.trigger})" if pin.trigger else "")
        lines.append(
            f"| {name} | {pin.description or '-'} | {pin.kind} | {where} | {values} | {', '.join(names) or '-'} |"
        )
    lines += ["", "## Behaviour worth knowing", ""]
    for name, pin in config.pins.items():
        notes = []
        if pin.safe_state is not None:
            when = [
                w
                for w, on in (
                    ("when the node stops", pin.safe_on_shutdown),
                    (
                        f"after {config.failsafe_after:.0f} s without the gateway",
                        pin.safe_on_failsafe and config.failsafe_after > 0,
                    ),
                )
                if on
            ]
            if when:
                notes.append(f"goes to {pin.safe_state:g} {' and '.join(when)}")
        if pin.on_edge == "agent":
            notes.append(f'wakes you with a message on {pin.trigger_on} edges: "{pin.message}"')
        if pin.kind in ("input", "button", "motion", "distance"):
            notes.append(f"its edges are listed by {prefix}_events")
        if notes:
            lines.append(f"- **{name}**: " + "; ".join(notes) + ".")
    lines.append("")
    return {"name": skill_name, "description": description, "content": "\n".join(lines)}


def skill_description(node_name: str) -> str:
    """The skill's description, in its frontmatter and beside it (trimmed: the gateway compares trimmed)."""
    flat = " ".join(node_name.split())
    return f"GPIO pins of {flat}: what is wired where and which tools drive them"


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out[:40] or "node"
