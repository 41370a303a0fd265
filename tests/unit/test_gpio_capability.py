"""GPIO capability on gpiozero's MockFactory: commands, debounce, pulses, failsafe, safe stop, edges on
the bus (agent.requests from edges: tests/unit/test_triggers_gpio.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError, NotConnected
from edgeclaw.capabilities.gpio import create
from edgeclaw.capabilities.gpio.config import Config
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.supervisor import Supervisor
from edgeclaw.typedconfig import build

PINS: dict[str, Any] = {
    "relay": {
        "pin": "GPIO17",
        "kind": "output",
        "description": "door strike",
        "safe_state": 0,
        "safe_on_failsafe": True,
    },
    "lamp": {"pin": "BOARD12", "kind": "output", "safe_state": 1, "safe_on_shutdown": True},
    "fan": {"pin": 13, "kind": "pwm", "frequency": 50, "safe_state": 0, "safe_on_failsafe": False},
    "button": {
        "pin": "GPIO22",
        "kind": "button",
        "bounce_time": 0.05,
        "on_edge": "agent",
        "message": "{name} {state} #{seq}",
    },
    "door": {"pin": "GPIO23", "kind": "input", "pull": "down", "bounce_time": 0},
}


class FakeServices:
    def __init__(self, tmp: Path, *, connected: bool = True) -> None:
        self.node_id = "n" * 64
        self.display_name = "Garage Pi"
        self.config = SimpleNamespace(runtime_dir=tmp / "run")
        self.bus = EventBus()
        self.supervisor = Supervisor("test", bus=self.bus, backoff_initial_s=0.01, backoff_max_s=0.05)
        self._state = tmp / "state"
        self._state.mkdir(exist_ok=True)
        self.connected = connected
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.refuse: list[InvokeError] = []

    @property
    def state_dir(self) -> Path:
        return self._state

    @property
    def simulated(self) -> bool:
        return True

    def is_connected(self) -> bool:
        return self.connected

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        if not self.connected:
            raise NotConnected("offline")
        if self.refuse:
            raise self.refuse.pop(0)
        self.sent.append((event, payload))
        return {"ok": True}

    async def request(self, method: str, params: Any, *, timeout: float = 10.0) -> Any:
        raise NotConnected("unused")

    def request_reconnect(self, reason: str) -> None:
        pass


def gpio_config(pins: dict[str, Any] | None = None, **extra: Any) -> Config:
    return build(Config, {"enabled": True, "pins": pins if pins is not None else PINS, **extra}, path="gpio")


async def started(
    tmp: Path, *, connected: bool = True, pins: dict[str, Any] | None = None, **extra: Any
) -> Any:
    svc = FakeServices(tmp, connected=connected)
    cap = create(gpio_config(pins, **extra), svc)
    await cap.start()
    return cap, svc


def ctx(command: str, **params: Any) -> InvokeContext:
    return InvokeContext(
        invoke_id="i",
        command=command,
        params=params,
        deadline=asyncio.get_running_loop().time() + 30,
        timeout_ms=30000,
    )


async def call(cap: Any, command: str, **params: Any) -> Any:
    return await cap.handlers()[command](ctx(command, **params))


async def code_of(cap: Any, command: str, **params: Any) -> str:
    with pytest.raises(InvokeError) as info:
        await call(cap, command, **params)
    return info.value.code


def pin(cap: Any, name: str) -> Any:
    return cap.pins[name].device.pin


async def drive(cap: Any, name: str, level: bool) -> None:
    """Drive the mock pin from another thread, as gpiozero's callbacks arrive on a real board."""
    p = pin(cap, name)
    await asyncio.to_thread(p.drive_high if level else p.drive_low)


async def until(pred: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.01)


async def test_list_read_write_pwm(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        listing = await call(cap, "gpio.list")
        by_name = {p["name"]: p for p in listing["pins"]}
        assert set(by_name) == set(PINS)
        assert by_name["relay"]["value"] == 0 and by_name["relay"]["description"] == "door strike"
        assert by_name["button"]["state"] == "released"  # pull-up, not pressed
        assert listing["simulated"] is True

        out = await call(cap, "gpio.write", name="relay", value=1)
        assert out["value"] == 1 and out["state"] == "on"
        assert pin(cap, "relay").state == 1
        assert (await call(cap, "gpio.read", name="relay"))["value"] == 1
        await call(cap, "gpio.write", name="relay", value=False)
        assert pin(cap, "relay").state == 0

        # BOARD12 is GPIO18 on the 40-pin header
        assert cap.pins["lamp"].device.pin.info.name == "GPIO18"

        out = await call(cap, "gpio.pwm", name="fan", value=0.25, frequency=200)
        assert out["value"] == 0.25 and out["frequency"] == 200
        assert pin(cap, "fan").state == pytest.approx(0.25)
        assert pin(cap, "fan").frequency == 200

        await drive(cap, "door", True)
        assert (await call(cap, "gpio.read", name="door"))["value"] == 1
        await drive(cap, "button", False)  # pull-up: low = pressed
        assert (await call(cap, "gpio.read", name="button"))["state"] == "pressed"
    finally:
        await cap.stop()


async def test_refusals_have_codes(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        assert await code_of(cap, "gpio.read", name="GPIO4") == "GPIO_PIN_NOT_ALLOWED"
        assert await code_of(cap, "gpio.write", name="nope", value=1) == "GPIO_PIN_NOT_ALLOWED"
        assert await code_of(cap, "gpio.events", name="nope") == "GPIO_PIN_NOT_ALLOWED"
        assert await code_of(cap, "gpio.read") == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.write", name="door", value=1) == "INVALID_REQUEST"  # input
        assert await code_of(cap, "gpio.pwm", name="relay", value=0.5) == "INVALID_REQUEST"  # digital
        assert await code_of(cap, "gpio.write", name="relay", value=2) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.pwm", name="fan", value=1.5) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.pwm", name="fan", value=0.5, frequency=-1) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.pulse", name="relay", ms=0) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.pulse", name="relay", ms=10_001) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.pulse", name="door", ms=10) == "INVALID_REQUEST"
        assert await code_of(cap, "gpio.events", since=-1) == "INVALID_REQUEST"
        assert pin(cap, "relay").state == 0  # nothing above changed an output
    finally:
        await cap.stop()


async def test_failing_pin_is_unavailable_and_others_keep_working(tmp_path: Path) -> None:
    pins = {**PINS, "ghost": {"pin": "GPIO99", "kind": "output"}}  # no such pin on the board
    cap, _ = await started(tmp_path, pins=pins)
    try:
        assert await code_of(cap, "gpio.read", name="ghost") == "GPIO_UNAVAILABLE"
        assert await code_of(cap, "gpio.write", name="ghost", value=1) == "GPIO_UNAVAILABLE"
        listing = await call(cap, "gpio.list")
        assert "error" in {p["name"]: p for p in listing["pins"]}["ghost"]
        await call(cap, "gpio.write", name="relay", value=1)
        assert pin(cap, "relay").state == 1

        def broken(_value: Any) -> None:
            raise OSError(5, "Input/output error")

        cap.pins["lamp"].device.pin._set_state = broken  # the hardware starts failing mid-run
        assert await code_of(cap, "gpio.write", name="lamp", value=1) == "GPIO_UNAVAILABLE"
    finally:
        await cap.stop()


async def test_edges_are_debounced_timestamped_and_served(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        before = time.time()
        # a bouncing contact: press with chatter, all within the 50 ms bounce window
        for level in (False, True, False, True, False):
            await drive(cap, "button", level)
        await asyncio.sleep(0.15)
        got = await call(cap, "gpio.events", name="button")
        assert [e["state"] for e in got["events"]] == ["pressed"]
        assert before - 0.01 <= got["events"][0]["ts_ms"] / 1000 <= time.time()
        # release, also bouncing; it ends released -> one more edge
        for level in (True, False, True):
            await drive(cap, "button", level)
        await asyncio.sleep(0.15)
        got = await call(cap, "gpio.events", name="button")
        assert [e["state"] for e in got["events"]] == ["pressed", "released"]
        # a bounce that ends where it started settles to nothing new
        seq = got["latest_seq"]
        await drive(cap, "button", False)
        await drive(cap, "button", True)
        await asyncio.sleep(0.15)
        after = await call(cap, "gpio.events", since=seq)
        assert [e["state"] for e in after["events"]] == ["pressed", "released"][: len(after["events"])]
        assert len(after["events"]) in (0, 2)  # leading edge reported, then the settled release
        # bounce_time 0: every change counts
        for level in (True, False, True):
            await drive(cap, "door", level)
        await until(lambda: cap.ring.seq >= got["latest_seq"] + 3)
        doors = await call(cap, "gpio.events", name="door")
        assert [e["value"] for e in doors["events"]] == [1, 0, 1]
        # since/limit paging
        page = await call(cap, "gpio.events", limit=1)
        assert len(page["events"]) == 1 and page["more"] is True
        rest = await call(cap, "gpio.events", since=page["next_since"])
        assert rest["events"][0]["seq"] == page["events"][0]["seq"] + 1
    finally:
        await cap.stop()


async def test_event_ring_is_bounded(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path, event_buffer=3)
    try:
        for i in range(5):
            await drive(cap, "door", i % 2 == 0)
        await until(lambda: cap.ring.seq == 5)
        got = await call(cap, "gpio.events")
        assert [e["seq"] for e in got["events"]] == [3, 4, 5]
        assert got["missed"] == 2
    finally:
        await cap.stop()


async def test_pulse_returns_to_rest_even_when_the_connection_drops(tmp_path: Path) -> None:
    cap, svc = await started(tmp_path)
    try:
        task = asyncio.create_task(call(cap, "gpio.pulse", name="relay", ms=300))
        await until(lambda: pin(cap, "relay").state == 1)
        svc.connected = False
        await cap.on_disconnected()
        svc.bus.emit(events.DISCONNECT, code=1006, reason="gone", connected_s=1)
        task.cancel()  # the gateway stops waiting for the invoke
        await until(lambda: pin(cap, "relay").state == 0, timeout=2)
        with pytest.raises(asyncio.CancelledError):
            await task
        states = [s.state for s in pin(cap, "relay").states]
        assert states == [False, True, False]
    finally:
        await cap.stop()


async def test_pulse_result_and_write_during_pulse(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        t0 = time.monotonic()
        out = await call(cap, "gpio.pulse", name="relay", ms=100)
        assert time.monotonic() - t0 >= 0.09
        assert out["restored_to"] == 0 and pin(cap, "relay").state == 0
        # an explicit write during a pulse wins over the pulse's restore
        task = asyncio.create_task(call(cap, "gpio.pulse", name="relay", ms=200))
        await until(lambda: pin(cap, "relay").state == 1)
        await call(cap, "gpio.write", name="relay", value=1)
        out = await asyncio.wait_for(task, 2)
        assert out["interrupted"] is True
        await asyncio.sleep(0.3)
        assert pin(cap, "relay").state == 1
    finally:
        await cap.stop()


async def test_failsafe_after_gateway_unreachable(tmp_path: Path) -> None:
    cap, svc = await started(tmp_path, failsafe_after=0.2)
    try:
        await call(cap, "gpio.write", name="relay", value=1)
        await call(cap, "gpio.pwm", name="fan", value=0.8)
        svc.connected = False
        svc.bus.emit(events.DISCONNECT, code=1006, reason="gone", connected_s=1)
        await asyncio.sleep(0.1)
        # back before the deadline: nothing happens
        svc.connected = True
        svc.bus.emit(events.HELLO_OK, server_version="x", protocol=4, tick_interval_ms=30000, elapsed_s=0)
        await asyncio.sleep(0.3)
        assert pin(cap, "relay").state == 1
        svc.connected = False
        await cap.on_disconnected()
        await asyncio.sleep(0.4)
        assert pin(cap, "relay").state == 0  # safe_on_failsafe
        assert pin(cap, "fan").state == pytest.approx(0.8)  # not marked for the failsafe
        listing = await call(cap, "gpio.list")
        assert listing["failsafe"]["applied_at"] is not None
    finally:
        await cap.stop()


async def test_failsafe_when_gateway_never_reached(tmp_path: Path) -> None:
    cap, _ = await started(
        tmp_path,
        connected=False,
        failsafe_after=0.1,
        pins={"relay": {"pin": 17, "initial_value": 1, "safe_state": 0, "safe_on_failsafe": True}},
    )
    try:
        assert pin(cap, "relay").state == 1
        await until(lambda: pin(cap, "relay").state == 0, timeout=2)
    finally:
        await cap.stop()


async def test_stop_puts_outputs_in_safe_state(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    await call(cap, "gpio.write", name="relay", value=1)
    await call(cap, "gpio.write", name="lamp", value=0)
    await call(cap, "gpio.pwm", name="fan", value=0.5)
    relay, lamp, fan = pin(cap, "relay"), pin(cap, "lamp"), pin(cap, "fan")
    await cap.stop()
    assert relay.state == 0 and lamp.state == 1 and fan.state == 0
    assert relay.function == "output"  # kept driven, not returned to a floating input
    assert not cap.pins


async def test_node_event_edges(tmp_path: Path) -> None:
    pins = {"pir": {"pin": 5, "kind": "input", "bounce_time": 0, "on_edge": "event", "trigger_on": "both"}}
    cap, svc = await started(tmp_path, pins=pins)
    try:
        await drive(cap, "pir", True)
        await until(lambda: len(svc.sent) == 1)
        event, payload = svc.sent[0]
        assert event == "gpio.edge" and payload["name"] == "pir" and payload["value"] == 1
    finally:
        await cap.stop()


async def test_reload_keeps_unchanged_pins_and_safes_removed_ones(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        await call(cap, "gpio.write", name="relay", value=1)
        lamp = pin(cap, "lamp")
        await call(cap, "gpio.write", name="lamp", value=0)
        new = {k: v for k, v in PINS.items() if k != "lamp"}
        new["buzzer"] = {"pin": 6, "kind": "output"}
        await cap.reload(gpio_config(new))
        assert set(cap.pins) == {"relay", "fan", "button", "door", "buzzer"}
        assert pin(cap, "relay").state == 1  # untouched, no glitch
        assert lamp.state == 1  # removed pin left in its safe state
        assert any(t["name"] == "gpio_buzzer_write" for t in cap.plugin_tools())
    finally:
        await cap.stop()


async def test_tools_and_skill(tmp_path: Path) -> None:
    cap, _ = await started(tmp_path)
    try:
        tools = {t["name"]: t for t in cap.plugin_tools()}
        assert {
            "gpio_list",
            "gpio_events",
            "gpio_relay_write",
            "gpio_relay_pulse",
            "gpio_relay_read",
            "gpio_fan_pwm",
            "gpio_button_read",
        } <= set(tools)
        assert "gpio_button_write" not in tools and "gpio_relay_pwm" not in tools
        write = tools["gpio_relay_write"]
        assert write["command"] == "gpio.write" and "door strike" in write["description"]
        assert write["parameters"]["properties"]["name"]["enum"] == ["relay"]
        assert write["parameters"]["required"] == ["name", "value"]
        import re

        assert all(re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", n) for n in tools)
        (skill,) = cap.skills()
        assert "| relay | door strike | output | GPIO17 |" in skill["content"]
        assert "gpio_relay_pulse" in skill["content"]
    finally:
        await cap.stop()


async def test_enabled_without_pins_declares_nothing_and_opens_nothing(tmp_path: Path) -> None:
    svc = FakeServices(tmp_path)
    cap = create(gpio_config({}), svc)
    await cap.start()
    assert cap.handlers() == {} and cap.plugin_tools() == [] and cap.factory is None
    await cap.stop()


async def test_a_crash_in_the_failsafe_timer_is_restarted_and_the_outputs_still_go_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap, svc = await started(tmp_path, connected=True, failsafe_after=0.2)
    try:
        await call(cap, "gpio.write", name="relay", value=1)
        real_set = cap._set
        crashes = [RuntimeError("injected into the failsafe timer")]

        def set_once(name: str, value: float, *, why: str) -> bool:
            if why == "failsafe" and crashes:
                raise crashes.pop()
            return real_set(name, value, why=why)

        monkeypatch.setattr(cap, "_set", set_once)
        svc.connected = False
        await cap.on_disconnected()
        await until(lambda: pin(cap, "relay").state == 0)
        assert svc.supervisor.snapshot()["test/gpio/failsafe"]["restarts"] == 1
        assert svc.supervisor.total_restarts() == 1
    finally:
        await cap.stop()
