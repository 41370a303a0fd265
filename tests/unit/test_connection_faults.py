"""A connection attempt never crashes the node: a gateway that closes right after the challenge, a
nested-JSON bomb and a mistyped hello-ok each become a logged, coded reconnect (or a skipped frame),
with no traceback, and the node connects normally afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.protocol import frames
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

FAST = {"backoff_initial_s": 0.005, "backoff_max_s": 0.02}
LIST_BOMB = "[" * 1024 + "]" * 1024  # 2 KB: deeper than the JSON parser's recursion allows
DICT_BOMB = '{"a":' * 300 + "1" + "}" * 300


def _run_task() -> asyncio.Task[Any]:
    """The runner's top-level loop (it must never end by itself)."""
    return next(t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("Mixin.run"))


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert bad == []


async def _which_works(gw: FakeGateway) -> None:
    rid = await gw.invoke("system.which", {"bins": ["sh"]})
    result = await gw.result_for(rid)
    assert result["ok"], result


def _messages(caplog: pytest.LogCaptureFixture, code: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if code in r.getMessage()]


async def test_a_gateway_closing_after_the_challenge_50_times_is_50_coded_reconnects(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gw.close_after_challenge = 50
    async with running_node(tmp_path, gw, gateway=FAST) as node:
        run = _run_task()
        await gw.wait_hello(1, timeout=30)
        assert not run.done()
        assert gw.close_after_challenge == 0 and len(gw.connections) == 51
        assert len(_messages(caplog, "GATEWAY_CLOSED")) >= 40  # the fast-probe window logs none
        assert node.status.connection == "connected"
        await _which_works(gw)
    _no_traceback(caplog)


@pytest.mark.parametrize("bomb", [LIST_BOMB, DICT_BOMB], ids=["list", "dict"])
async def test_a_nested_json_bomb_in_the_handshake_is_refused_with_a_code(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture, bomb: str
) -> None:
    gw.after_challenge_frames = [bomb]
    async with running_node(tmp_path, gw, gateway=FAST):
        run = _run_task()
        await gw.wait_hello(1, timeout=10)
        assert not run.done()
        await _which_works(gw)
    assert _messages(caplog, "FRAME_TOO_DEEP")
    _no_traceback(caplog)


async def test_a_nested_json_bomb_while_serving_is_skipped(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_node(tmp_path, gw, gateway=FAST):
        await gw.wait_hello(1)
        await gw.send_raw(LIST_BOMB)
        await gw.send_raw('{"type":"event","event":"x","payload":' + "[" * 70 + "]" * 70 + "}")
        await _which_works(gw)
        assert gw.hello_count == 1  # a refused frame is skipped, the session stays
    assert len(_messages(caplog, "FRAME_TOO_DEEP")) == 2
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "override",
    [
        {"protocol": [4]},
        {"protocol": {"v": 4}},
        {"protocol": "four"},
        {"protocol": True},
        {"policy": {"tickIntervalMs": [30000]}},
        {"server": {"version": ["x"]}},
    ],
    ids=["list", "object", "string", "bool", "policy", "server"],
)
async def test_a_mistyped_hello_ok_is_a_coded_reconnect(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture, override: dict[str, Any]
) -> None:
    caplog.set_level(logging.INFO)
    gw.hello_overrides = [override, override]
    async with running_node(tmp_path, gw, gateway=FAST) as node:
        run = _run_task()
        await gw.wait_hello(1, timeout=10)
        assert not run.done()
        assert len(gw.connects) == 3
        assert node.status.protocol == 4
        await _which_works(gw)
    assert _messages(caplog, "HELLO_INVALID")
    _no_traceback(caplog)


def test_depth_is_checked_without_recursion_and_shallow_frames_pass() -> None:
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(frames.FrameError, match="FRAME_TOO_DEEP"):
        frames.decode(deep)
    ok = {"type": "event", "event": "e", "payload": {"s": "[[[[" * 100, "n": [[[[1]]]]}}
    assert frames.decode(json.dumps(ok)) == frames.Event("e", ok["payload"])
    edge = '{"type":"event","event":"e","payload":' + "[" * 63 + "]" * 63 + "}"
    assert isinstance(frames.decode(edge), frames.Event)
    with pytest.raises(frames.FrameError, match="FRAME_TOO_DEEP"):
        frames.decode('{"type":"event","event":"e","payload":' + "[" * 64 + "]" * 64 + "}")


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(raw: str) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode('{"type":"res","id":"1","ok":false,"error":{"retryAfterMs":' + raw + "}}")
