"""Link liveness and pre-hello frame limits against the in-process fake gateway: a frozen gateway is
noticed by the ping probe within ping_interval + ping_timeout (not 2 × tick), and a peer that has not
sent hello-ok cannot make the node buffer big frames."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.config import ConfigError
from edgeclaw.node.session import MAX_PRE_HELLO_FRAME
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import make_config, running_node

pytestmark = pytest.mark.timeout(60)


async def _until(check: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _which_works(gw: FakeGateway) -> None:
    rid = await gw.invoke("system.which", {"bins": ["sh"]})
    result = await gw.result_for(rid)
    assert result["ok"], result


async def test_frozen_gateway_is_seen_by_the_ping_probe_long_before_two_ticks(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw.tick_interval_ms = 30_000  # tick liveness alone would take 60 s
    async with running_node(tmp_path, gw, gateway={"ping_interval_s": 1, "ping_timeout_s": 1}) as node:
        await gw.wait_hello(1)
        await asyncio.sleep(2.5)  # a healthy gateway answers the pings: still the same connection
        assert gw.hello_count == 1 and node.session is not None and node.session.pings_sent >= 1
        loop = asyncio.get_running_loop()
        frozen_at = loop.time()
        gw.freeze()
        await gw.wait_hello(2, timeout=10)
        detected = loop.time() - frozen_at
        # ping interval + pong timeout, plus slack for a loaded CI machine; two ticks would be 60 s
        assert detected <= 1 + 1 + 3.0, f"frozen gateway seen after {detected:.1f} s"
        assert "disconnected: PING_TIMEOUT: no pong from the gateway within 1 s" in caplog.text
        await _which_works(gw)


async def test_traffic_suppresses_pings(tmp_path: Path, gw: FakeGateway) -> None:
    """Any inbound frame proves the link: a node fed ticks faster than the interval never pings."""
    gw.tick_interval_ms = 400  # a tick every 0.2 s
    async with running_node(tmp_path, gw, gateway={"ping_interval_s": 1, "ping_timeout_s": 1}) as node:
        await gw.wait_hello(1)
        await asyncio.sleep(2.0)
        assert node.session is not None and node.session.pings_sent == 0
        assert gw.hello_count == 1


@pytest.mark.parametrize(
    ("key", "value"), [("ping_interval_s", 0.5), ("ping_interval_s", 301), ("ping_timeout_s", 0)]
)
def test_ping_settings_are_validated(tmp_path: Path, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"gateway.{key}"):
        make_config(tmp_path, "ws://127.0.0.1:1", gateway={key: value})


def test_ping_can_be_switched_off(tmp_path: Path) -> None:
    assert (
        make_config(tmp_path, "ws://127.0.0.1:1", gateway={"ping_interval_s": 0}).gateway.ping_interval_s == 0
    )


async def test_oversize_challenge_is_refused_with_1009_and_the_node_retries(
    tmp_path: Path, gw: FakeGateway
) -> None:
    gw.challenge_padding = MAX_PRE_HELLO_FRAME + 1024
    async with running_node(tmp_path, gw) as node:
        await _until(lambda: len(gw.connections) >= 2, 10, "a second attempt")
        assert gw.connects == [] and gw.hello_count == 0  # the node never answered it
        assert "1009" in (node.status.last_error or "") and "before hello-ok" in node.status.last_error
        gw.challenge_padding = 0
        await gw.wait_hello(1, timeout=10)
        await _which_works(gw)


async def test_oversize_hello_is_refused_but_a_realistic_one_is_accepted(
    tmp_path: Path, gw: FakeGateway
) -> None:
    gw.hello_padding = MAX_PRE_HELLO_FRAME + 1024
    async with running_node(tmp_path, gw) as node:
        await _until(lambda: len(gw.connects) >= 2, 10, "a second connect")
        assert node.status.connection != "connected"
        assert "1009" in (node.status.last_error or "")
        gw.hello_padding = 100 * 1024  # seven times a real hello-ok's snapshot
        await _until(lambda: node.status.connection == "connected", 10, "a connection")
        await _which_works(gw)


async def test_the_limit_is_raised_after_hello(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        big = {"type": "event", "event": "health", "payload": {"pad": "x" * (4 * 1024 * 1024)}}
        await gw.send_raw(json.dumps(big))
        await _which_works(gw)
        assert gw.hello_count == 1  # the 4 MiB frame did not end the connection
