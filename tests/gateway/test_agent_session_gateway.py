"""What an agent woken by the node can do, through the real gateway and a scripted loopback model
(tests.support.fakemodel): the evidence is what the gateway sends the model, not the node's logs.

- A button press (GPIO `on_edge: agent`) reaches the model as the node's message; the node-started
  run is offered only the gateway's fixed node allowlist (TOOL_ALLOW_BY_MESSAGE_PROVIDER.node, see
  docs/agent-tools.md) — never the node's GPIO tools or Tool Search, even under the widest tool policy.
- The owner's next turn in the same session (chat.send) sees the press in its history, finds the node's
  GPIO tool with tool_search and runs it with tool_call, and the relay pin really moves:
  button → agent → owner → node tool → pin.
- An agent.request image attachment reaches the model as an image part, bytes intact.
- The gateway's HTTP hook entry does start a run with the node's tools (and exec): why EdgeClaw does not
  put a hook token on boards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.node.session import Session
from edgeclaw.platform.state import StateDir
from edgeclaw.protocol import frames
from edgeclaw.protocol.frames import Response
from edgeclaw.protocol.handshake import Auth, ClientInfo, build_connect_params
from tests.gateway.test_gpio_gateway import gpio_section, press, probe
from tests.support.fakemodel import FakeModel, Reply, image_urls, tool_names, tool_results, user_text
from tests.support.gateway import Gateway, Operator

pytestmark = pytest.mark.gateway

HOOK_TOKEN = "edgeclaw-test-hook-token-" + "h" * 24

# the gateway's fixed tool allowlist for runs whose message provider is "node" (agent-tools-*.mjs)
NODE_PROVIDER_ALLOW = {"canvas", "pdf", "tts", "view_image", "web_fetch", "web_search"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with FakeModel(default_text="noted") as model:
        yield model


@pytest.fixture(scope="module")
def model_gateway(gateway_factory: Any, fake: FakeModel) -> Gateway:
    # the widest tool policy the gateway's docs offer, naming the node's tool and the Tool Search
    # controls outright: the node-started run must still be held to the node allowlist
    widest = {"tools": {"profile": "full", "alsoAllow": ["gpio_relay_write", "tool_search", "tool_call"]}}
    # the gateway's other wake-up entry, HTTP hooks, for the test that shows what it would hand a board
    hooks = {"hooks": {"enabled": True, "token": HOOK_TOKEN, "path": "/hooks", "allowedAgentIds": ["main"]}}
    gw: Gateway = gateway_factory(model=fake, extra_config={**widest, **hooks})
    return gw


def _press_request(body: dict[str, Any]) -> bool:
    return "button went " in user_text(body) and not tool_results(body)


async def test_button_wakes_agent_and_owner_turn_drives_the_relay_through_the_node_tool(
    model_gateway: Gateway, fake: FakeModel, node_factory: Any
) -> None:
    # the README's setup: wake-ups go to the agent's main session, where the owner's DMs land too
    # (session.dmScope "main", the gateway's default), so the owner's answer has the press in its history
    node = node_factory(model_gateway, name="door-board", extra=gpio_section(session_key="main"))
    key = "main"
    assert probe(node, "relay")["state"] == 0

    # 1. the press wakes the agent: the model gets the node's message ...
    press(node, "button", True)
    woken = await asyncio.to_thread(fake.wait_request, _press_request, 60, "the press reaching the model")
    offered = set(tool_names(woken))
    # ... but the node-started run carries only the gateway's node allowlist: no node tools, no
    # tool_search. If a gateway release widens this, this assertion says so (docs/agent-tools.md).
    assert offered <= NODE_PROVIDER_ALLOW, sorted(offered)
    assert {"web_fetch", "view_image"} <= offered, sorted(offered)  # it has tools, just not the node's
    assert not {"gpio_relay_write", "tool_search", "tool_call"} & offered

    # 2. the owner's turn in the same session reaches the node's tool through tool_search/tool_call
    fake.script(_search_for_relay, _call_relay, Reply(text="The door is open."))
    async with Operator(model_gateway) as op:
        res = await op.call(
            "chat.send",
            {"sessionKey": key, "message": OWNER_ASK, "idempotencyKey": "door-1"},
        )
        assert res.get("ok"), res
        asked = await asyncio.to_thread(fake.wait_request, _owner_turn, 60, "the owner's turn")
        assert {"tool_search", "tool_call"} <= set(tool_names(asked)), tool_names(asked)
        assert "button went pressed" in user_text(asked)  # the woken turn is in the session history

        # the gateway's catalog search found the node's relay tool (its description names the node)
        found = await asyncio.to_thread(
            fake.wait_request, lambda b: _last_tool_result(b, "tool_search") is not None, 60, "search result"
        )
        listing = _last_tool_result(found, "tool_search") or ""
        assert "gpio_relay_write" in listing and "door-board" in listing, listing[:2000]

        # the agent ran the node tool: its result comes back to the model and the pin really moved
        called = await asyncio.to_thread(
            fake.wait_request, lambda b: _last_tool_result(b, "tool_call") is not None, 60, "tool_call result"
        )
        result = _last_tool_result(called, "tool_call") or ""
        assert "relay" in result and "error" not in result.lower(), result[:2000]
    assert probe(node, "relay")["state"] == 1
    assert probe(node, "relay")["changes"] == 1
    # the model's scripted replies were all used: search, call, final text
    assert not fake.pending(), fake.pending()


OWNER_ASK = "Open the door for the visitor"


def _owner_turn(body: dict[str, Any]) -> bool:
    return OWNER_ASK in user_text(body) and not tool_results(body)


def _last_tool_result(body: dict[str, Any], tool: str) -> str | None:
    """The text of the newest tool result in the request if it answers a call of `tool`."""
    calls = {
        c.get("id"): (c.get("function") or {}).get("name")
        for m in body.get("messages") or []
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
    }
    results = tool_results(body)
    if not results or calls.get(results[-1].get("tool_call_id")) != tool:
        return None
    content = results[-1].get("content")
    return content if isinstance(content, str) else json.dumps(content)


def _search_for_relay(body: dict[str, Any]) -> Reply | None:
    if _owner_turn(body) and "tool_search" in tool_names(body):
        return Reply(tool="tool_search", arguments={"query": "switch the door strike relay gpio"})
    return None


def _call_relay(body: dict[str, Any]) -> Reply | None:
    if "gpio_relay_write" in (_last_tool_result(body, "tool_search") or ""):
        return Reply(
            tool="tool_call", arguments={"id": "gpio_relay_write", "args": {"name": "relay", "value": 1}}
        )
    return None


async def test_a_gateway_http_hook_run_gets_the_node_tools_and_exec_which_is_why_boards_do_not_hold_a_hook_token(
    model_gateway: Gateway, fake: FakeModel, node_factory: Any
) -> None:
    """The gateway does start tool-carrying runs from outside: `POST /hooks/agent` with the hook token.
    Such a run is offered Tool Search (which finds the node's GPIO tools) *and* exec/write: a board
    holding that token could drive the agent into anything. docs/agent-tools.md, "Not used"."""
    node = node_factory(model_gateway, name="hook-board", extra=gpio_section())
    async with Operator(model_gateway) as op:

        async def published() -> bool:
            eff = await op.call("tools.effective", {"sessionKey": "agent:main:main"})
            ids = {t["id"] for g in eff.get("payload", {}).get("groups", []) for t in g.get("tools", [])}
            return "gpio_relay_write" in ids

        deadline = time.monotonic() + 30
        while not await published():
            assert time.monotonic() < deadline, "the node's tools were not published within 30 s"
            await asyncio.sleep(0.3)

    def search(body: dict[str, Any]) -> Reply | None:
        if "HOOK-EVENT" in user_text(body) and not tool_results(body):
            return Reply(tool="tool_search", arguments={"query": "relay gpio write"})
        return None

    fake.script(search)
    request = urllib.request.Request(
        f"http://127.0.0.1:{model_gateway.port}/hooks/agent",
        data=json.dumps(
            {"message": "HOOK-EVENT: the doorbell rang", "agentId": "main", "deliver": False}
        ).encode(),
        headers={"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"},
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    answer = await asyncio.to_thread(direct.open, request, None, 30)
    assert answer.status == 200
    asked = await asyncio.to_thread(
        fake.wait_request, lambda b: "HOOK-EVENT" in user_text(b) and not tool_results(b), 60, "the hook run"
    )
    offered = set(tool_names(asked))
    assert {"tool_search", "tool_call", "exec", "write"} <= offered, sorted(offered)
    found = await asyncio.to_thread(
        fake.wait_request,
        lambda b: "HOOK-EVENT" in user_text(b) and bool(tool_results(b)),
        60,
        "search result",
    )
    listing = _last_tool_result(found, "tool_search") or ""
    assert "gpio_relay_write" in listing and "hook-board" in listing, listing[:2000]
    assert not fake.pending()
    assert probe(node, "relay")["changes"] == 0  # nothing here called it


def _jpeg(tmp_path: Path) -> bytes:
    out = tmp_path / "frame.jpg"
    subprocess.run(
        [
            *("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=1"),
            *("-frames:v", "1", str(out)),
        ],
        check=True,
        timeout=30,
    )
    return out.read_bytes()


async def _raw_node_event(gateway: Gateway, state_dir: Path, event: str, payload: dict[str, Any]) -> Any:
    """Send one node.event as the (stopped) node: its own identity and device token, its own client code."""
    state = StateDir(state_dir)
    identity = state.load_identity()
    stored = state.load_token(gateway.url, identity.device_id)
    auth = Auth(token=gateway.token, device_token=stored.token if stored else None)
    session = Session(gateway.url, connect_timeout=15)
    await session.open()
    try:
        await session.handshake(
            lambda ch: build_connect_params(
                identity=identity,
                client=ClientInfo(display_name="image-board", version="test", instance_id="raw-event"),
                auth=auth,
                nonce=ch.nonce,
                signed_at_ms=ch.ts,
                caps=[],
                commands=[],
            )
        )
        rid = session.next_id()
        params = {"event": event, "payloadJSON": json.dumps(payload)}
        await session.send_json(frames.encode_request(rid, "node.event", params))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            frame = await session._recv_frame(max(0.1, deadline - time.monotonic()))
            if isinstance(frame, Response) and frame.id == rid:
                assert frame.ok, frame
                return frame.payload
        raise TimeoutError("no answer to node.event")
    finally:
        await session.close()


async def test_agent_request_image_attachment_reaches_the_model_as_an_image_part(
    model_gateway: Gateway, fake: FakeModel, node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(model_gateway, name="image-board")
    node.stop()  # the test speaks for the node, with the node's own paired identity
    jpeg = _jpeg(tmp_path)
    await _raw_node_event(
        model_gateway,
        node.state_dir,
        "agent.request",
        {
            "message": "Doorbell rang; snapshot attached",
            "sessionKey": "edgeclaw-image-board",
            "attachments": [
                {
                    "type": "image",
                    "mimeType": "image/jpeg",
                    "fileName": "doorbell.jpg",
                    "content": base64.b64encode(jpeg).decode(),
                }
            ],
        },
    )
    try:  # the gateway queues a session's run behind any run still in its lane: a generous bound
        body = await asyncio.to_thread(
            fake.wait_request, lambda b: "Doorbell rang" in user_text(b), 150, "the image request"
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\ngateway log:\n{model_gateway.tail()}") from None
    urls = image_urls(body)
    assert len(urls) == 1, urls
    head, data = urls[0].split(",", 1)
    assert head == "data:image/jpeg;base64"
    assert base64.b64decode(data) == jpeg
