"""Triggers through the real gateway on a simulated board (MockFactory GPIO driven over the simulation
socket, a camera backend that really encodes JPEGs with ffmpeg): a press snaps a photo that reaches the
gateway as an image, schedules and thresholds fire on time and once per crossing, a backlog raised while
the gateway is down arrives after it returns, rate limits hold. Evidence is the gateway's own records:
its session list, its transcript (chat.history), the inbound media it stored for a user turn, and its
model calls (a scripted loopback model, tests.support.fakemodel, whose runs complete so each turn of a
session runs in turn and can be counted)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.camera import simscene
from edgeclaw.capabilities.gpio.simctl import sim_request
from tests.support.fakemodel import FakeModel, image_urls
from tests.support.gateway import Operator, wait_for

pytestmark = pytest.mark.gateway

PINS: dict[str, Any] = {
    "doorbell": {"pin": "GPIO22", "kind": "button", "bounce_time": 0.02},
    "door": {"pin": "GPIO23", "kind": "input", "pull": "down", "bounce_time": 0},
}
DOORBELL: dict[str, Any] = {
    "source": {"gpio": {"pin": "doorbell", "edge": "active"}},
    "actions": [{"snap": {"max_width": 320, "quality": 70}}, {"read_pins": ["door"]}],
    "message": "{node}: doorbell at {time}; door is {pins[door]}",
}


def sections(rules: dict[str, Any], **triggers: Any) -> dict[str, Any]:
    return {
        "gpio": {"enabled": True, "pins": PINS},
        "camera": {"enabled": True, "default_delay_ms": 0},
        "triggers": {"rules": rules, **triggers},
    }


def press(node: Any, name: str = "doorbell") -> None:
    for active in (True, False):
        answer = sim_request(node.runtime_dir, {"op": "drive", "name": name, "active": active})
        assert answer["ok"], answer
        time.sleep(0.06)


def inbound_images(gateway: Any) -> list[Path]:
    """JPEGs the gateway stored for agent.request images (its transcript media), oldest first."""
    root = gateway.run_dir / "state" / "media"
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    jpegs = [p for p in files if p.read_bytes()[:3] == b"\xff\xd8\xff"]
    return sorted(jpegs, key=lambda p: p.stat().st_mtime_ns)


async def session_row(op: Operator, key: str) -> dict[str, Any] | None:
    res = await op.call("sessions.list", {})
    rows = [r for r in res["payload"]["sessions"] if r.get("key") == key]
    return rows[0] if rows else None


async def wait_session(op: Operator, key: str, node: Any, timeout: float = 30.0) -> dict[str, Any]:
    for _ in range(int(timeout / 0.2)):
        row = await session_row(op, key)
        if row is not None and row.get("startedAt"):
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"no agent run in {key} within {timeout} s; node log:\n{node.log()[-4000:]}")


async def transcript_values(op: Operator, key: str, pattern: str) -> set[str]:
    """Distinct matches of `pattern` in the session's stored messages (chat.history)."""
    history = await op.call("chat.history", {"sessionKey": key, "limit": 100})
    return set(re.findall(pattern, json.dumps(history.get("payload"), ensure_ascii=False)))


async def wait_transcript_values(op: Operator, key: str, pattern: str, count: int) -> set[str]:
    for _ in range(100):
        if len(found := await transcript_values(op, key, pattern)) >= count:
            return found
        await asyncio.sleep(0.3)
    history = await op.call("chat.history", {"sessionKey": key, "limit": 100})
    raise AssertionError(
        f"fewer than {count} matches of {pattern!r} in {key}: {found}\n{json.dumps(history)[:4000]}\n"
        f"gateway:\n{op.gateway.tail(6000)}"
    )


async def wait_transcript_rings(op: Operator, key: str, count: int) -> list[tuple[int, int]]:
    """(line number, ring seq) of the backlog lines in the session's stored user turn (chat.history)."""
    history: Any = None
    for _ in range(100):
        history = await op.call("chat.history", {"sessionKey": key, "limit": 50})
        text = json.dumps(history.get("payload"), ensure_ascii=False)
        rings = [(int(n), int(seq)) for n, seq in re.findall(r"(\d+)\. \[[^\]]+\] ring (\d+)", text)]
        if len(rings) >= count:
            return rings
        await asyncio.sleep(0.3)
    raise AssertionError(f"no user turn with {count} rings in {key}: {json.dumps(history)[:3000]}")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    """The gateway's default model: image-capable (else the gateway refuses image attachments
    outright) and answering, so each session's turns run one after another and every turn the
    gateway starts is a recorded model request."""
    with FakeModel(default_text="noted") as model:
        yield model


@pytest.fixture(scope="module")
def vision_gateway(gateway_factory: Any, fake: FakeModel) -> Any:
    return gateway_factory(model=fake)


def _last_user(body: dict[str, Any]) -> dict[str, Any]:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return users[-1] if users else {}


def model_turns(fake: FakeModel, pattern: str) -> list[dict[str, Any]]:
    """The gateway's model calls whose newest user message matches `pattern`: one per agent turn
    (these runs offer no tool the model calls, so a turn is exactly one request)."""
    out = []
    for body in fake.snapshot():
        last = _last_user(body)
        text = json.dumps(last.get("content"), ensure_ascii=False)
        if re.search(pattern, text):
            out.append(body)
    return out


async def user_turns(op: Operator, key: str, pattern: str) -> list[str]:
    """The matches of `pattern` in the session's stored user turns (chat.history), oldest first."""
    history = await op.call("chat.history", {"sessionKey": key, "limit": 100})
    messages = (history.get("payload") or {}).get("messages") or []
    found = []
    for m in messages:
        if m.get("role") == "user":
            found += re.findall(pattern, json.dumps(m.get("content"), ensure_ascii=False))
    return found


async def wait_exact_turns(
    op: Operator, fake: FakeModel, key: str, pattern: str, count: int, settle: float = 2.0
) -> list[str]:
    """Wait (bounded) until the gateway recorded `count` turns matching `pattern` in `key`, both in
    its transcript and as model calls, then `settle` s more: a surplus turn fails the caller."""
    turns: list[str] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        turns = await user_turns(op, key, pattern)
        if len(turns) >= count and len(model_turns(fake, pattern)) >= count:
            break
        await asyncio.sleep(0.3)
    else:
        history = await op.call("chat.history", {"sessionKey": key, "limit": 100})
        raise AssertionError(
            f"{len(turns)} of {count} turns matching {pattern!r} in {key}\n{json.dumps(history)[:4000]}\n"
            f"gateway:\n{op.gateway.tail(6000)}"
        )
    await asyncio.sleep(settle)
    return await user_turns(op, key, pattern)


def status_triggers(node: Any) -> dict[str, Any]:
    return dict(node.live_status().get("capabilities", {}).get("triggers", {}).get("triggers", {}))


async def test_a_press_snaps_a_photo_that_reaches_the_gateway_session_as_an_image(
    vision_gateway: Any, node_factory: Any
) -> None:
    gateway = vision_gateway
    rules = {"doorbell": {**DOORBELL, "session_key": "doorbell"}}
    node = node_factory(gateway, name="trg-bell", extra=sections(rules))
    before = set(inbound_images(gateway))
    async with Operator(gateway) as op:
        assert await session_row(op, "agent:main:doorbell") is None
        press(node)
        try:
            await wait_session(op, "agent:main:doorbell", node)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ngateway:\n{gateway.tail(6000)}") from None
    new = wait_for(lambda: [p for p in inbound_images(gateway) if p not in before], 20, what="stored image")
    assert len(new) == 1
    data = new[0].read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9" and len(data) > 1000
    node.wait_log("agent.request sent: 1 event(s), 1 photo(s)", 10)
    wait_for(lambda: status_triggers(node).get("doorbell", {}).get("fired") == 1, 10, what="status")


async def test_schedule_fires_on_time_and_rate_limit_holds(
    vision_gateway: Any, fake: FakeModel, node_factory: Any
) -> None:
    gateway = vision_gateway
    rules = {
        "tick": {"source": {"schedule": {"every_s": 2}}, "message": "tick {count}", "session_key": "tick"},
        "bell": {
            "source": {"gpio": {"pin": "doorbell"}},
            "actions": [{"snap": {"max_width": 160, "quality": 60}}],  # a bell's request has a photo
            "message": "bell {seq}",
            "session_key": "bell-limited",
            "rate_limit": {"count": 2, "per_s": 3600},
        },
    }
    node = node_factory(gateway, name="trg-sched", extra=sections(rules))
    async with Operator(gateway) as op:
        await wait_session(op, "agent:main:tick", node, timeout=15)
        # on time: every 2 s, so 3 more fires (±1) in the next 6 s
        before = status_triggers(node)["tick"]["fired"]
        await asyncio.sleep(6)
        assert 2 <= status_triggers(node)["tick"]["fired"] - before <= 4, status_triggers(node)["tick"]
        for _ in range(5):
            press(node)
            await asyncio.sleep(0.3)
        wait_for(
            lambda: status_triggers(node).get("bell", {}).get("suppressed") == 3, 10, what="3 suppressed"
        )
        assert status_triggers(node)["bell"]["fired"] == 2
        # the gateway's own records: exactly the two admitted rings became agent turns (its transcript),
        # each a model call carrying its photo; the three suppressed never reached it
        rings = await wait_exact_turns(op, fake, "agent:main:bell-limited", r"bell (\d+)", 2)
        assert len(rings) == 2 and len(set(rings)) == 2, rings
        calls = model_turns(fake, r"bell \d+")
        assert len(calls) == 2, [json.dumps(_last_user(c))[:300] for c in calls]
        assert all(len(image_urls({"messages": [_last_user(c)]})) == 1 for c in calls)
        ticks = await user_turns(op, "agent:main:tick", r"tick (\d+)")
        assert {"1", "2", "3"} <= set(ticks), ticks  # the schedule's turns reached the agent
    sent = [line for line in node.log().splitlines() if "agent.request sent" in line]
    photos = sum(int(line.split("event(s), ")[1].split(" photo")[0]) for line in sent)
    assert photos == 2, sent  # the two admitted rings went out, never the three suppressed


async def test_threshold_on_a_fake_thermal_zone_fires_once_per_crossing(
    vision_gateway: Any, fake: FakeModel, node_factory: Any, tmp_path: Path
) -> None:
    gateway = vision_gateway
    zone = tmp_path / "thermal_zone_temp"
    zone.write_text("40000\n")
    rules = {
        "hot": {
            "source": {
                "threshold": {
                    "metric": "cpu_temp_c",
                    "above": 70,
                    "clear_at": 60,
                    "interval_s": 0.5,
                    "thermal_zone": str(zone),
                }
            },
            "message": "CPU at {value} °C",
            "session_key": "hot",
        }
    }
    node = node_factory(gateway, name="trg-hot", extra=sections(rules))
    async with Operator(gateway) as op:
        for milli, fired in ((75000, 1), (80000, 1), (65000, 1), (59000, 1), (72000, 2)):
            zone.write_text(f"{milli}\n")
            wait_for(
                lambda m=milli: status_triggers(node).get("hot", {}).get("last_value") == m / 1000,
                10,
                what=f"reading {milli}",
            )
            assert status_triggers(node)["hot"]["fired"] == fired, milli
        # the gateway's own records: exactly two wake-ups, 75 °C then 72 °C (80 °C did not re-fire),
        # in its transcript and as its model calls
        temps = await wait_exact_turns(op, fake, "agent:main:hot", r"CPU at ([0-9.]+) °C", 2)
        assert temps == ["75.0", "72.0"], temps
        assert len(model_turns(fake, r"CPU at [0-9.]+ °C")) == 2
    assert node.log().count("agent.request sent") == 2


async def test_twenty_presses_while_the_gateway_is_down_arrive_in_order_with_their_photos(
    vision_gateway: Any, node_factory: Any
) -> None:
    gw = vision_gateway
    before = set(inbound_images(gw))
    rules = {"doorbell": {**DOORBELL, "message": "ring {seq}", "session_key": "backlog"}}
    node = node_factory(gw, name="trg-backlog", extra=sections(rules))
    node.wait_log("the node's command surface is approved", 60)
    gw.stop()
    for _ in range(20):
        press(node)
    spool = node.state_dir / "triggers-spool.json"
    wait_for(lambda: spool.exists() and spool.read_text().count('"trigger"') == 20, 60, what="20 spooled")
    gw.start()
    async with Operator(gw) as op:
        await wait_session(op, "agent:main:backlog", node, timeout=120)
        # the gateway's transcript: one user turn listing the 20 rings oldest first
        rings = await wait_transcript_rings(op, "agent:main:backlog", 20)
    images = wait_for(
        lambda: len(new := [p for p in inbound_images(gw) if p not in before]) >= 20 and new,
        60,
        what="20 images",
    )
    assert len(images) == 20
    assert [n for n, _ in rings] == list(range(1, 21)), rings
    seqs = [seq for _, seq in rings]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20, seqs  # the presses' own order
    sent = [line for line in node.log().splitlines() if "agent.request sent" in line]
    assert sent and "20 event(s), 20 photo(s)" in sent[-1], sent


async def test_camera_motion_fires_on_a_scene_change_and_not_on_a_still_scene(
    vision_gateway: Any, node_factory: Any
) -> None:
    """The real MotionWatcher (worker process, ffmpeg frames of the simulated scene): nothing while the
    scene is still, one agent.request with a photo when someone steps in."""
    gw = vision_gateway
    rules = {
        "porch": {
            "source": {"camera_motion": {"width": 160, "height": 120, "fps": 4, "cooldown_s": 60}},
            "actions": [{"snap": {"max_width": 320, "quality": 70}}],
            "message": "motion on {device}: {area} of the picture changed",
            "session_key": "porch",
        }
    }
    node = node_factory(gw, name="trg-motion", extra=sections(rules))

    def motion() -> dict[str, Any]:
        caps = node.live_status().get("capabilities", {})
        return dict(caps.get("triggers", {}).get("motion", {}).get("porch", {}))

    wait_for(lambda: motion().get("frames", 0) >= 8, 40, what="motion frames flowing")
    frames = motion()["frames"]
    scenes = simscene.scene_dir(node.runtime_dir)
    async with Operator(gw) as op:
        wait_for(lambda: motion().get("frames", 0) >= frames + 10, 20, what="10 frames of a still scene")
        assert status_triggers(node)["porch"]["fired"] == 0 and motion()["detections"] == 0
        assert await session_row(op, "agent:main:porch") is None
        await asyncio.to_thread(simscene.place, scenes, "sim0", "person", 0.5, 0.3, 0.3, 0.4)
        await wait_session(op, "agent:main:porch", node)
    # status.json is rewritten at most every 2 s in a busy stretch: wait for the rewrite
    wait_for(lambda: status_triggers(node)["porch"]["fired"] == 1, 10, what="the fire in status")
    assert motion()["detections"] == 1
    node.wait_log("agent.request sent: 1 event(s), 1 photo(s)", 10)
