"""Gateway frames (req/res/event) encoded and decoded strictly, so bad input becomes a typed error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class FrameError(ValueError):
    """A frame the gateway sent that we cannot make sense of; the session logs it and goes on."""


@dataclass(frozen=True)
class GatewayError:
    """The `error` object of a failed response: branch on `code` and `detail_code`, never on `message`."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False
    retry_after_ms: int | None = None

    @property
    def detail_code(self) -> str | None:
        value = self.details.get("code")
        return value if isinstance(value, str) else None

    @classmethod
    def from_obj(cls, obj: Any) -> GatewayError:
        if not isinstance(obj, dict):
            return cls(code="UNKNOWN", message=str(obj))
        details = obj.get("details")
        retry_after = obj.get("retryAfterMs")
        return cls(
            code=str(obj.get("code") or "UNKNOWN"),
            message=str(obj.get("message") or ""),
            details=details if isinstance(details, dict) else {},
            retryable=bool(obj.get("retryable", False)),
            retry_after_ms=int(retry_after) if isinstance(retry_after, (int, float)) else None,
        )


@dataclass(frozen=True)
class Request:
    id: str
    method: str
    params: Any = None


@dataclass(frozen=True)
class Response:
    id: str
    ok: bool
    payload: Any = None
    error: GatewayError | None = None


@dataclass(frozen=True)
class Event:
    event: str
    payload: Any = None
    seq: int | None = None


Frame = Request | Response | Event


def decode(text: str | bytes) -> Frame:
    """Parse one WebSocket message into a frame, or raise FrameError saying what is wrong."""
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is a {type(obj).__name__}, not an object")
    kind = obj.get("type")
    if kind == "event":
        name = obj.get("event")
        if not isinstance(name, str) or not name:
            raise FrameError("event frame without an event name")
        seq = obj.get("seq")
        return Event(event=name, payload=obj.get("payload"), seq=seq if isinstance(seq, int) else None)
    if kind == "res":
        rid = obj.get("id")
        ok = obj.get("ok")
        if not isinstance(rid, str) or not rid:
            raise FrameError("response frame without an id")
        if not isinstance(ok, bool):
            raise FrameError(f"response {rid} has no boolean 'ok'")
        error = None if ok else GatewayError.from_obj(obj.get("error"))
        return Response(id=rid, ok=ok, payload=obj.get("payload"), error=error)
    if kind == "req":
        rid = obj.get("id")
        method = obj.get("method")
        if not isinstance(rid, str) or not rid or not isinstance(method, str) or not method:
            raise FrameError("request frame without id or method")
        return Request(id=rid, method=method, params=obj.get("params"))
    raise FrameError(f"unknown frame type {kind!r}")


def encode_request(rid: str, method: str, params: Any = None) -> str:
    frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
    if params is not None:
        frame["params"] = params
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
