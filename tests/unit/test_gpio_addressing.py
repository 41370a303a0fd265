"""Issue 19 item 4: a pin is addressed by its configured name or by its pin id in the forms the config
accepts; an unconfigured pin is GPIO_PIN_NOT_ALLOWED whichever key or form names it; the generated skill's
frontmatter agrees with the description sent beside it (the gateway drops it otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeclaw.capabilities.gpio.tools import skill
from edgeclaw.config import parse_config
from tests.unit.test_gpio_capability import call, code_of, gpio_config, pin, started

# relay is GPIO17 = BOARD11; lamp is BOARD12 = GPIO18; gpio27 is a name that spells its own pin
PINS: dict[str, Any] = {
    "relay": {"pin": "GPIO17", "kind": "output"},
    "lamp": {"pin": "BOARD12", "kind": "output"},
    "gpio27": {"pin": 27, "kind": "output"},
    "sonar": {"pin": "GPIO24", "trigger": "GPIO23", "kind": "distance"},
}


@pytest.mark.parametrize(
    "ref", ["relay", "GPIO17", "gpio17", "17", 17, "BCM17", "BOARD11", "J8:11", " GPIO17 "]
)
async def test_a_configured_pin_answers_to_its_name_and_every_id_form(tmp_path: Path, ref: Any) -> None:
    cap, _ = await started(tmp_path, pins=PINS)
    try:
        out = await call(cap, "gpio.write", name=ref, value=1)
        assert out["name"] == "relay" and pin(cap, "relay").state == 1
        assert (await call(cap, "gpio.read", pin=ref))["name"] == "relay"
        assert pin(cap, "lamp").state == 0  # nothing else moved
    finally:
        await cap.stop()


async def test_board_numbering_reaches_the_bcm_pin(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path, pins=PINS)
    try:
        for ref in ("lamp", "GPIO18", 18, "BOARD12"):
            await call(cap, "gpio.write", name=ref, value=1)
            assert pin(cap, "lamp").state == 1
            await call(cap, "gpio.write", name=ref, value=0)
            assert pin(cap, "lamp").state == 0
    finally:
        await cap.stop()


@pytest.mark.parametrize(
    "params",
    [
        {"name": 4},  # unconfigured, by number
        {"name": "4"},
        {"name": "BCM4"},  # by BCM name
        {"name": "GPIO4"},
        {"name": "BOARD7"},  # GPIO4 by board name
        {"name": "J8:7"},
        {"name": "BOARD1"},  # a power pin
        {"name": "GPIO23"},  # the distance sensor's trigger line: configured, but not a pin of its own
        {"pin": "GPIO4"},  # another key
        {"name": "relay", "pin": "GPIO4"},  # a configured name beside an unconfigured id
        {"pin": "relay", "name": "BOARD7"},
        {"name": "gpio4"},  # a name that looks like an id
        {"name": "RELAY"},  # names are exact
        {"name": "GPIO9999"},
    ],
)
async def test_an_unconfigured_pin_is_not_allowed_whichever_key_or_form(
    tmp_path: Path, params: dict[str, Any]
) -> None:
    cap, _ = await started(tmp_path, pins=PINS)
    try:
        for command, extra in (("gpio.read", {}), ("gpio.write", {"value": 1}), ("gpio.pulse", {"ms": 5})):
            assert await code_of(cap, command, **params, **extra) == "GPIO_PIN_NOT_ALLOWED", (command, params)
        assert await code_of(cap, "gpio.events", **params) == "GPIO_PIN_NOT_ALLOWED"
        assert all(pin(cap, n).state == 0 for n in ("relay", "lamp", "gpio27"))
    finally:
        await cap.stop()


async def test_keys_that_disagree_or_mistyped_refs_are_invalid(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path, pins=PINS)
    try:
        assert await code_of(cap, "gpio.write", name="relay", pin="lamp", value=1) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.write", name=True, value=1) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.write", name=17.0, value=1) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.write", name=["relay"], value=1) == "INVALID_REQUEST"
        # both keys naming the same pin is fine
        assert (await call(cap, "gpio.write", name="relay", pin="BOARD11", value=1))["name"] == "relay"
        # events filter by id too
        got = await call(cap, "gpio.events", name="GPIO24")
        assert got["events"] == []
    finally:
        await cap.stop()


def test_a_name_that_spells_another_pin_is_a_config_error() -> None:
    """The collision attack: `gpio17` wired to GPIO27 would let {"name": "gpio17"} reach GPIO27 while a
    reader (or the agent) means GPIO17. The config refuses it with the key and line."""
    from edgeclaw.typedconfig import ConfigError

    text = yaml.safe_dump({"gpio": {"enabled": True, "pins": {"gpio17": {"pin": "GPIO27"}}}})
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="board.yaml")
    assert info.value.key == "gpio.pins.gpio17" and "spells pin GPIO17" in info.value.message
    for name, spec in (("gpio17", "BOARD11"), ("bcm17", 17), ("board11", "GPIO17"), ("board1", "GPIO5")):
        ok = yaml.safe_dump({"gpio": {"enabled": True, "pins": {name: {"pin": spec}}}})
        assert name in parse_config(ok, file="board.yaml").capabilities["gpio"].pins


@pytest.mark.parametrize("node_name", ["Garage Pi", "rack: #3 'left'", 'quote " and\nnewline', "Küche"])
def test_skill_frontmatter_matches_the_description_sent_with_it(node_name: str) -> None:
    """What the gateway's prepareNodeSkills compares: frontmatter name/description (YAML, trimmed) equal
    the fields sent beside the content."""
    doc = skill(gpio_config({"relay": {"pin": "GPIO17"}}), node_name)
    assert doc is not None
    head = doc["content"].split("---\n")[1]
    front = yaml.safe_load(head)
    assert front["name"].strip() == doc["name"]
    assert front["description"].strip() == doc["description"]
    assert "\n" not in doc["description"]
