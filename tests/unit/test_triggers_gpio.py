"""`gpio.pins.<name>.on_edge: agent` as an implicit trigger: edges come over the event bus into the one
trigger spool (in order, offline included), an old gpio-spool.json is migrated, gpio sources fire."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.gpio import create as create_gpio
from edgeclaw.capabilities.triggers.capability import TriggersCapability
from edgeclaw.platform import events
from tests.unit.test_gpio_capability import PINS, drive, gpio_config, until
from tests.unit.triggerharness import TriggerServices, start_triggers

SPOOL_PINS = {
    "button": {
        "pin": 22,
        "kind": "button",
        "bounce_time": 0,
        "on_edge": "agent",
        "trigger_on": "both",
        "message": "{name} went {state}",
    }
}


async def pair(
    tmp: Path, *, connected: bool = True, pins: dict[str, Any] | None = None, rules: Any = None, **gpio: Any
) -> tuple[Any, TriggersCapability, TriggerServices]:
    section = {"enabled": True, "pins": pins if pins is not None else PINS, **gpio}
    svc = TriggerServices(tmp, connected=connected, gpio=section)
    gcap = create_gpio(gpio_config(section["pins"], **gpio), svc)
    await gcap.start()
    svc.gpio_cap = gcap
    tcap = await start_triggers(svc, rules)
    return gcap, tcap, svc


async def stop(*caps: Any) -> None:
    for cap in caps:
        await cap.stop()


async def test_gpio_edges_are_published_on_the_bus(tmp_path: Path) -> None:
    gcap, tcap, svc = await pair(tmp_path)
    seen: list[dict[str, Any]] = []
    svc.bus.subscribe(lambda name, fields: seen.append(fields) if name == events.GPIO_EDGE else None)
    try:
        await drive(gcap, "door", True)
        await until(lambda: len(seen) == 1)
        assert seen[0]["pin_name"] == "door" and seen[0]["active"] is True and seen[0]["state"] == "active"
        assert seen[0]["pin"] == "GPIO23" and isinstance(seen[0]["ts"], float)
    finally:
        await stop(tcap, gcap)


async def test_on_edge_agent_requests_are_spooled_in_order_while_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcap, tcap, svc = await pair(tmp_path, connected=False)
    try:
        for _ in range(3):
            await drive(gcap, "button", False)
            await asyncio.sleep(0.07)
            await drive(gcap, "button", True)
            await asyncio.sleep(0.07)
        assert tcap.spool is not None
        await until(lambda: len(tcap.spool.entries) == 3)
        assert svc.sent == []
        on_disk = json.loads((svc.state_dir / "triggers-spool.json").read_text())
        assert [e["message"] for e in on_disk["entries"]] == [
            "button pressed #1",
            "button pressed #3",
            "button pressed #5",
        ]
        assert (svc.state_dir / "triggers-spool.json").stat().st_mode & 0o077 == 0
        # surface not approved yet: the first try is refused as PAIRING_CHANGED, then it goes through
        svc.refuse.append(InvokeError("PAIRING_CHANGED", "pairing changed"))
        svc.connected = True
        import edgeclaw.capabilities.triggers.capability as capmod

        monkeypatch.setattr(capmod, "RETRY_S", 0.05)
        await tcap.on_session_ready()
        await until(lambda: len(svc.sent) == 1)
        event, payload = svc.sent[0]
        assert event == "agent.request" and payload["sessionKey"] == "edgeclaw-garage-pi"
        # the backlog is one request, in order (the gateway runs separate requests concurrently)
        lines = payload["message"].splitlines()
        assert lines[0].startswith("3 events, oldest first")
        assert [line.split("] ", 1)[1] for line in lines[1:]] == [
            "button pressed #1",
            "button pressed #3",
            "button pressed #5",
        ]
        assert tcap.spool.entries == [] and tcap.spool.counters.sent == 3
        assert tcap.status_report()["triggers"]["gpio.button"]["fired"] == 3
    finally:
        await stop(tcap, gcap)


async def test_old_gpio_spool_is_migrated_in_order_with_its_drop_count(tmp_path: Path) -> None:
    now = time.time()
    good = {"pin": "button", "session_key": "edgeclaw-garage-pi", "time_in_message": False}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "gpio-spool.json").write_text(
        json.dumps(
            {
                "version": 1,
                "next_id": 4,
                "entries": [
                    {"id": 1, "ts": now - 30, "message": "first", **good},
                    {"id": 2, "ts": "yesterday", "message": "poison", **good},
                    {"id": 3, "ts": now - 20, "message": "third", **good},
                ],
                "counters": {"unreported_drops": 2, "sent": 5},
            }
        )
    )
    gcap, tcap, svc = await pair(tmp_path, connected=False, pins=SPOOL_PINS)
    try:
        assert tcap.spool is not None
        assert [e.message for e in tcap.spool.entries] == ["first", "third"]
        assert not (svc.state_dir / "gpio-spool.json").exists()
        assert (svc.state_dir / "gpio-spool.json.migrated").exists()
        assert tcap.spool.counters.quarantined == 1
        svc.connected = True
        await tcap.on_session_ready()
        await until(lambda: len(svc.sent) == 1)
        message = svc.sent[0][1]["message"]
        assert "1. [" in message and "] first" in message and "2. [" in message and "] third" in message
        assert message.index("first") < message.index("third")
        assert "3 earlier trigger event(s) were dropped" in message  # 2 carried over + the poison one
    finally:
        await stop(tcap, gcap)


async def test_a_late_single_request_names_its_time_and_later_ones_do_not(tmp_path: Path) -> None:
    gcap, tcap, svc = await pair(tmp_path, connected=False, pins=SPOOL_PINS, spool_max_age=60)
    try:
        await drive(gcap, "button", False)
        assert tcap.spool is not None
        await until(lambda: len(tcap.spool.entries) == 1)
        tcap.spool.entries[0].ts -= 30
        svc.connected = True
        await tcap.on_session_ready()
        await until(lambda: len(svc.sent) == 1)
        assert svc.sent[0][1]["message"].startswith("button went pressed (at ")
        await drive(gcap, "button", True)
        await until(lambda: len(svc.sent) == 2)
        assert svc.sent[1][1]["message"] == "button went released"
        assert tcap.spool.max_age == 60  # gpio.spool_max_age still bounds the one spool
    finally:
        await stop(tcap, gcap)


async def test_gpio_source_rule_with_pin_reads_and_edge_filter(tmp_path: Path) -> None:
    rules = {
        "doorbell": {
            "source": {"gpio": {"pin": "door", "edge": "inactive"}},
            "actions": [{"read_pins": ["relay"]}],
            "message": "{node}: {name} {state}; relay is {pins[relay]}",
            "session_key": "bell",
        }
    }
    gcap, tcap, svc = await pair(tmp_path, rules=rules)
    try:
        await drive(gcap, "door", True)
        await asyncio.sleep(0.1)
        assert svc.sent == []  # an active edge: not this rule's
        await drive(gcap, "door", False)
        await until(lambda: len(svc.sent) == 1)
        assert svc.sent[0][1] == {"message": "Garage Pi: door inactive; relay is off", "sessionKey": "bell"}
    finally:
        await stop(tcap, gcap)


async def test_a_gpio_source_must_name_a_configured_input(tmp_path: Path) -> None:
    rules = {"x": {"source": {"gpio": {"pin": "relay"}}}}
    svc = TriggerServices(tmp_path, gpio={"enabled": True, "pins": PINS})
    with pytest.raises(ValueError, match="output"):
        await start_triggers(svc, rules)
    with pytest.raises(ValueError, match="not a configured gpio pin"):
        await start_triggers(svc, {"x": {"source": {"gpio": {"pin": "nope"}}}})


async def test_a_crash_in_the_spool_pump_is_restarted_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcap, tcap, svc = await pair(tmp_path, connected=False, pins=SPOOL_PINS)
    try:
        assert tcap.spool is not None
        real_expire = tcap.spool.expire
        crashes = [RuntimeError("injected into the spool pump")]

        def expire_once(now: float) -> int:
            if crashes:
                raise crashes.pop()
            return real_expire(now)

        monkeypatch.setattr(tcap.spool, "expire", expire_once)
        await drive(gcap, "button", False)
        await until(lambda: len(tcap.spool.entries) == 1)
        svc.connected = True
        tcap._wake.set()
        await until(lambda: svc.supervisor.snapshot()["test/triggers/spool-pump"]["restarts"] == 1)
        assert "injected" in svc.supervisor.snapshot()["test/triggers/spool-pump"]["last_error"]
        tcap._wake.set()  # the restarted pump waits for the next wake-up, as after any start
        await until(lambda: len(svc.sent) == 1)
    finally:
        await stop(tcap, gcap)
