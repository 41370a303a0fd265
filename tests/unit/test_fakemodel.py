"""The scripted model the gateway tier points the real gateway at (tests/support/fakemodel.py): it
listens on loopback only, records what it is sent, and answers in the OpenAI chat-completions shapes
(SSE stream and plain JSON) the gateway's `openai-completions` adapter parses, tool calls included."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fakemodel import FakeModel, Reply, image_urls, tool_names, user_text


@pytest.fixture
def fake() -> Iterator[FakeModel]:
    with FakeModel(default_text="fine") as model:
        yield model


def _post(model: FakeModel, body: dict[str, Any]) -> tuple[str, bytes]:
    req = urllib.request.Request(
        model.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with direct.open(req, timeout=10) as res:
        return str(res.headers.get("Content-Type")), res.read()


def _sse(data: bytes) -> list[Any]:
    lines = [ln[len(b"data: ") :] for ln in data.split(b"\n") if ln.startswith(b"data: ")]
    assert lines[-1] == b"[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_listens_on_loopback_only(fake: FakeModel) -> None:
    assert fake._server.server_address[0] == "127.0.0.1"
    assert fake.base_url.startswith("http://127.0.0.1:")


def test_streams_a_scripted_tool_call_then_falls_back_to_text_and_records_requests(fake: FakeModel) -> None:
    def only_with_tools(body: dict[str, Any]) -> Reply | None:
        return (
            Reply(tool="gpio_relay_write", arguments={"name": "relay", "value": 1})
            if tool_names(body)
            else None
        )

    fake.script(only_with_tools)
    jpeg_url = "data:image/jpeg;base64,/9j/AA=="
    body = {
        "model": "fake-1",
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "press"},
                    {"type": "image_url", "image_url": {"url": jpeg_url}},
                ],
            }
        ],
    }
    # no tools offered: the responder falls through, the default text answers, the script waits
    kind, data = _post(fake, body)
    assert kind == "text/event-stream"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in _sse(data) if c["choices"])
    assert text == "fine" and len(fake.pending()) == 1

    body["tools"] = [{"type": "function", "function": {"name": "gpio_relay_write", "parameters": {}}}]
    chunks = _sse(_post(fake, body)[1])
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["gpio_relay_write"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"name": "relay", "value": 1}
    assert [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]][-1] == "tool_calls"
    assert not fake.pending()

    recorded = fake.snapshot()
    assert len(recorded) == 2
    assert user_text(recorded[0]) == "press" and image_urls(recorded[0]) == [jpeg_url]
    assert tool_names(recorded[1]) == ["gpio_relay_write"]


def test_answers_plain_json_when_not_streaming(fake: FakeModel) -> None:
    fake.script(Reply(text="done"))
    kind, data = _post(fake, {"model": "fake-1", "messages": [{"role": "user", "content": "hi"}]})
    assert kind == "application/json"
    doc = json.loads(data)
    assert doc["choices"][0]["message"]["content"] == "done"
    assert doc["choices"][0]["finish_reason"] == "stop"
