"""A scripted OpenAI-compatible model on loopback, for tests that need evidence of what the gateway's
agent is offered (tools) and receives (messages, image parts), and that must steer it (tool calls).

The gateway reaches it as a custom provider (`models.providers.<id>` with `api: "openai-completions"`,
the adapter the gateway's docs name for self-hosted `/v1/chat/completions` servers). It answers both
streaming (SSE `chat.completion.chunk`) and plain JSON requests, records every request body, and
replies from a script: a queue of `Reply`s, then a default text reply.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROVIDER_ID = "edgeclaw-fake"
MODEL_ID = "fake-1"


@dataclass
class Reply:
    """One scripted model turn: text, or one tool call (the agent then runs the tool and asks again)."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], Reply | None]


class FakeModel:
    """Loopback HTTP server speaking `/v1/chat/completions`; thread-safe request log."""

    def __init__(self, default_text: str = "ok") -> None:
        self.default_text = default_text
        self.requests: list[dict[str, Any]] = []
        self._script: list[Reply | Responder] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakemodel", daemon=True)

    # lifecycle ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeModel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # script ---------------------------------------------------------------------------------------
    def script(self, *replies: Reply | Responder) -> None:
        """Queue replies; a callable gets the request body and may return None to fall through."""
        with self._lock:
            self._script.extend(replies)

    def pending(self) -> list[Reply | Responder]:
        """Scripted replies not used yet (a test can assert its whole script was played)."""
        with self._lock:
            return list(self._script)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            while self._script:
                item = self._script[0]
                if isinstance(item, Reply):
                    self._script.pop(0)
                    return item
                got = item(body)
                if got is not None:
                    self._script.pop(0)
                    return got
                break
        return Reply(text=self.default_text)

    def provider_config(self) -> dict[str, Any]:
        """The `models.providers` entry the gateway needs to reach this server (image-capable)."""
        return {
            "baseUrl": self.base_url,
            "apiKey": "fake-key",
            "api": "openai-completions",
            "models": [
                {
                    "id": MODEL_ID,
                    "name": "EdgeClaw fake model",
                    "reasoning": False,
                    "input": ["text", "image"],
                    "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                    "contextWindow": 128000,
                    "maxTokens": 4096,
                }
            ],
        }

    @property
    def model_ref(self) -> str:
        return f"{PROVIDER_ID}/{MODEL_ID}"

    # evidence -------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def wait_request(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str = "model request"
    ) -> dict[str, Any]:
        """The first recorded request matching predicate (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.snapshot():
                if predicate(body):
                    return body
            time.sleep(0.1)
        seen = [user_text(b)[-200:] for b in self.snapshot()]
        raise TimeoutError(f"{what} not seen within {timeout} s; requests' user text: {seen!r}")

    # HTTP -----------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _json(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "bad json"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"unsupported path {self.path}"}})
                    return
                with model._lock:
                    model.requests.append(body)
                reply = model._next_reply(body)
                if body.get("stream"):
                    self._stream(reply)
                else:
                    self._json(200, _completion(reply))

            def _stream(self, reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in _chunks(reply):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


def _completion(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    finish = "stop"
    if reply.tool:
        message["tool_calls"] = [_tool_call(reply)]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _tool_call(reply: Reply) -> dict[str, Any]:
    return {
        "id": "call_" + uuid.uuid4().hex[:12],
        "type": "function",
        "function": {"name": reply.tool, "arguments": json.dumps(reply.arguments)},
    }


def _chunks(reply: Reply) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion.chunk", "model": MODEL_ID}
    base["created"] = int(time.time())
    out: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    if reply.text:
        out.append({**base, "choices": [{"index": 0, "delta": {"content": reply.text}}]})
    finish = "stop"
    if reply.tool:
        call = {"index": 0, **_tool_call(reply)}
        out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
        finish = "tool_calls"
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    out.append(
        {**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    )
    return out


# request inspection helpers -----------------------------------------------------------------------
def tool_names(body: dict[str, Any]) -> list[str]:
    """Names of the tools offered in a chat-completions request."""
    names = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") or {}
        if fn.get("name"):
            names.append(str(fn["name"]))
    return names


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content or [] if isinstance(p, dict)]


def user_text(body: dict[str, Any]) -> str:
    """All user-message text in the request, joined (where the node's message lands)."""
    return "\n".join(
        str(p.get("text", ""))
        for m in body.get("messages") or []
        if m.get("role") == "user"
        for p in _parts(m)
        if p.get("type") == "text"
    )


def image_urls(body: dict[str, Any]) -> list[str]:
    """The image parts' URLs (data: URLs for inline images) in the request's user messages."""
    urls = []
    for m in body.get("messages") or []:
        if m.get("role") != "user":
            continue
        for p in _parts(m):
            if p.get("type") == "image_url":
                url = p.get("image_url")
                urls.append(str(url.get("url") if isinstance(url, dict) else url))
    return urls


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool-result messages in the request (after the agent ran a scripted tool call)."""
    return [m for m in body.get("messages") or [] if m.get("role") == "tool"]
