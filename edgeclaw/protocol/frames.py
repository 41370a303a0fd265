"""Gateway frames (req/res/event) encoded and decoded strictly, so bad input becomes a typed error."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 64  # real gateway frames nest 8 deep; a deeper one is refused before the parser recurses
# a JSON string (skipped whole, so brackets inside it do not count) or one bracket
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class FrameError(ValueError):
    """A frame the gateway sent that we cannot make sense of; the session logs it and goes on."""

    def __init__(self, message: str, code: str = "FRAME_INVALID") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` without recursing (json.loads would raise RecursionError
    on a 2 KB bomb, and anything walking the result recursively later could too)."""
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char == "[" or char == "{":
            depth += 1
            if depth > limit:
                raise FrameError(f"nested deeper than {limit} levels", "FRAME_TOO_DEEP")
        elif char == "]" or char == "}":
            depth -= 1


def _no_constant(name: str) -> Any:
    raise FrameError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FrameError(f"number out of range {text[:20]}")
    return value


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
            retry_after_ms=int(retry_after)
            if isinstance(retry_after, (int, float)) and math.isfinite(retry_after)
            else None,
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
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        check_depth(text)
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except FrameError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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
