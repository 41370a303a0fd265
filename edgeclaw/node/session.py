"""One WebSocket connection to the gateway: handshake, request/response correlation, link liveness.

Everything that can go wrong on the wire ends this session with a SessionEnded saying why; the runner
decides what happens next. Malformed frames are logged and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from edgeclaw.node.wsclient import (
    ClientConnection,
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    connect,
    proxy_setting,
)
from edgeclaw.protocol import frames
from edgeclaw.protocol.frames import Event, GatewayError, Response
from edgeclaw.protocol.handshake import Challenge, HelloOk

log = logging.getLogger("edgeclaw.session")

# An invoke request can carry up to policy.maxPayload (25 MiB by default) of params.
MAX_INBOUND_FRAME = 32 * 1024 * 1024
# Before hello-ok the peer has not proved it is our gateway, and nothing it sends is big: a real
# hello-ok with its snapshot is about 14.3 kB (wire captures 02, 04-06), a challenge under 0.5 kB.
MAX_PRE_HELLO_FRAME = 256 * 1024
TICK_TIMEOUT_CODE = 4000
FRAME_TOO_BIG_CODE = 1009


# the coded reason logged and shown for each way a connection ends (`reason_code` overrides it)
REASON_CODES = {
    "unreachable": "GATEWAY_UNREACHABLE",
    "tls-pin": "TLS_PIN_MISMATCH",
    "handshake": "HANDSHAKE_FAILED",
    "rejected": "CONNECT_REJECTED",
    "closed": "GATEWAY_CLOSED",
    "tick-timeout": "TICK_TIMEOUT",
    "ping-timeout": "PING_TIMEOUT",
    "shutdown": "GATEWAY_SHUTDOWN",
}


class SessionEnded(Exception):
    """The connection is over; `kind` tells the runner how it ended."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        code: int | None = None,
        error: GatewayError | None = None,
        reason_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = (
            kind  # unreachable | tls-pin | handshake | rejected | closed | tick-timeout | ping-timeout
            # | shutdown | local
        )
        self.message = message
        self.code = code
        self.error = error
        self.reason_code = reason_code or REASON_CODES.get(kind, "CONNECTION_FAILED")


class RequestFailed(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


@dataclass
class TlsOptions:
    fingerprint: str | None = None  # normalised lowercase hex


def _ssl_context(url: str, tls: TlsOptions) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context()
    if tls.fingerprint:
        # A pinned leaf replaces CA validation (a self-signed gateway cert is the usual case).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Session:
    def __init__(
        self,
        url: str,
        *,
        tls: TlsOptions | None = None,
        connect_timeout: float = 15.0,
        ping_interval: float | None = None,
        ping_timeout: float = 4.0,
    ) -> None:
        self.url = url
        self.tls = tls or TlsOptions()
        self.connect_timeout = connect_timeout
        # A ping after this much inbound silence (None: tick liveness only); no pong within
        # ping_timeout means the link or the gateway is dead.
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.pings_sent = 0
        self.ws: ClientConnection | None = None
        self.hello: HelloOk | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self.last_inbound = 0.0
        self.shutdown_payload: dict[str, Any] | None = None
        self.closed_reason: SessionEnded | None = None
        self._pong: asyncio.Future[float] | None = None
        self._ping_sent_at = 0.0

    # connection -----------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            self.ws = await connect(
                self.url,
                ssl=_ssl_context(self.url, self.tls),
                open_timeout=self.connect_timeout,
                max_size=MAX_PRE_HELLO_FRAME,  # raised to MAX_INBOUND_FRAME after hello-ok
                compression=None,
                ping_interval=None,  # our own idle-only probe in serve(), see _probe()
                close_timeout=2,
                user_agent_header=None,
                proxy=proxy_setting(),
            )
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            raise SessionEnded("unreachable", f"cannot connect to {self.url}: {_describe(exc)}") from None
        self.last_inbound = asyncio.get_running_loop().time()
        if self.tls.fingerprint:
            self._check_pin()

    def _check_pin(self) -> None:
        assert self.ws is not None
        ssl_object = self.ws.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = hashlib.sha256(der).hexdigest() if der else "none"
        if got != self.tls.fingerprint:
            self.ws.transport.abort()
            raise SessionEnded(
                "tls-pin",
                f"TLS certificate pin mismatch for {self.url}: expected sha256 {self.tls.fingerprint}, got {got}",
            )

    async def _recv_frame(self, timeout: float) -> frames.Frame | None:
        """Next valid frame, or None when a bad one was skipped."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(timeout):  # not wait_for: that wraps recv() in a new Task per frame
                raw = await self.ws.recv()
        except TimeoutError:
            raise
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        self.last_inbound = asyncio.get_running_loop().time()
        try:
            return frames.decode(raw)
        except frames.FrameError as exc:
            log.warning("ignoring a bad frame from the gateway (%d bytes): %s", len(raw), exc)
            return None

    def _closed(self, exc: ConnectionClosed) -> SessionEnded:
        sent = exc.sent
        if sent is not None and sent.code == FRAME_TOO_BIG_CODE:
            limit = MAX_PRE_HELLO_FRAME if self.hello is None else MAX_INBOUND_FRAME
            when = "before hello-ok" if self.hello is None else "in one frame"
            return SessionEnded(
                "closed",
                f"the gateway sent more than {limit // 1024} KiB {when}; closed with 1009 (frame too big)",
                code=FRAME_TOO_BIG_CODE,
            )
        rcvd = exc.rcvd
        code = rcvd.code if rcvd is not None else 1006
        reason = rcvd.reason if rcvd is not None else "connection lost"
        kind = "shutdown" if self.shutdown_payload is not None else "closed"
        return SessionEnded(kind, f"gateway closed the connection ({code} {reason})".strip(), code=code)

    # handshake ------------------------------------------------------------------------------------
    async def handshake(self, build_params: Callable[[Challenge], dict[str, Any]]) -> HelloOk:
        """Wait for the challenge, send connect; returns hello-ok or raises SessionEnded('rejected'|...)."""
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        challenge: Challenge | None = None
        while challenge is None:
            frame = await self._recv_until(deadline, "connect.challenge")
            if isinstance(frame, Event) and frame.event == "connect.challenge":
                try:
                    challenge = Challenge.from_payload(frame.payload)
                except ValueError as exc:
                    log.warning("bad connect.challenge: %s", exc)
        rid = self.next_id()
        try:
            await self.send_json(frames.encode_request(rid, "connect", build_params(challenge)))
        except ConnectionError:  # closed right after the challenge (a restarting gateway: 1012)
            code = self.ws.close_code or 1006
            reason = self.ws.close_reason or "connection lost"
            raise SessionEnded(
                "closed", f"gateway closed the connection ({code} {reason})", code=code
            ) from None
        while True:
            frame = await self._recv_until(deadline, "the connect response")
            if isinstance(frame, Response) and frame.id == rid:
                break
        if not frame.ok:
            error = frame.error or GatewayError("UNKNOWN", "connect refused")
            await self.close(1000, "connect refused")
            raise SessionEnded("rejected", f"{error.code}: {error.message}", error=error)
        try:
            self.hello = HelloOk.from_payload(frame.payload)
        except ValueError as exc:
            await self.close(1002, "bad hello")
            raise SessionEnded(
                "handshake", f"unexpected connect response: {exc}", reason_code="HELLO_INVALID"
            ) from None
        _set_max_frame(self.ws, MAX_INBOUND_FRAME)
        return self.hello

    async def _recv_until(self, deadline: float, what: str) -> frames.Frame | None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            await self.close(1002, "handshake timeout")
            raise SessionEnded("handshake", f"gateway did not send {what} in time")
        try:
            return await self._recv_frame(remaining)
        except TimeoutError:
            await self.close(1002, "handshake timeout")
            raise SessionEnded("handshake", f"gateway did not send {what} in time") from None

    # serving --------------------------------------------------------------------------------------
    async def serve(self, on_event: Callable[[Event], None]) -> None:
        """Read frames until the connection ends; raises SessionEnded. Checks tick liveness."""
        assert self.ws is not None and self.hello is not None
        tick_timeout = 2 * self.hello.tick_interval_ms / 1000
        loop = asyncio.get_running_loop()
        try:
            while True:
                idle = loop.time() - self.last_inbound
                if idle > tick_timeout:
                    # the link is presumed dead: say why, but do not wait long for a close handshake
                    log.warning("no frame from the gateway for %.0f s (2 × tick): closing with 4000", idle)
                    await self.close(TICK_TIMEOUT_CODE, "tick timeout", timeout=0.5)
                    raise SessionEnded(
                        "tick-timeout", f"no frame from the gateway for {idle:.0f} s (2 × tick)"
                    )
                wait = tick_timeout - idle
                if self.ping_interval is not None:
                    wait = min(wait, await self._probe(loop.time()))
                try:
                    frame = await self._recv_frame(max(0.05, wait))
                except TimeoutError:
                    continue
                if frame is None:
                    continue
                if isinstance(frame, Response):
                    future = self._pending.pop(frame.id, None)
                    if future is not None and not future.done():
                        future.set_result(frame)
                    continue
                if isinstance(frame, Event):
                    if frame.event == "shutdown":
                        self.shutdown_payload = frame.payload if isinstance(frame.payload, dict) else {}
                        log.info("gateway is shutting down: %s", self.shutdown_payload)
                    try:
                        on_event(frame)
                    except Exception:
                        log.exception("event handler failed for %s", frame.event)
                    continue
                log.debug("ignoring a request frame from the gateway: %s", frame)
        except SessionEnded as ended:
            self.closed_reason = ended
            raise
        except Exception as exc:  # websockets internals can raise odd things on abnormal closes (e.g. 1009)
            failure = SessionEnded("closed", f"connection failed: {_describe(exc)}")
            self.closed_reason = failure
            raise failure from None
        finally:
            self._fail_pending()

    async def _probe(self, now: float) -> float:
        """Ping after `ping_interval` of inbound silence; no pong in `ping_timeout` ends the session.
        Returns how long serve() may wait before calling again. Any inbound frame proves the link,
        so a busy or tick-fed connection sends no pings; a quiet one sends one per interval."""
        assert self.ws is not None and self.ping_interval is not None
        if self._pong is not None:
            if self._pong.done():
                self._pong = None
            elif now - self._ping_sent_at >= self.ping_timeout:
                waited = now - self._ping_sent_at
                log.warning("no pong from the gateway %.1f s after a ping: the link is dead", waited)
                self.ws.transport.abort()  # a close handshake cannot cross a dead link
                raise SessionEnded(
                    "ping-timeout",
                    f"no pong from the gateway within {self.ping_timeout:g} s "
                    f"(silent for {now - self.last_inbound:.1f} s)",
                )
            else:
                return self._ping_sent_at + self.ping_timeout - now
        due = self.last_inbound + self.ping_interval - now
        if due > 0:
            return due
        try:
            async with asyncio.timeout(self.ping_timeout):  # a full send buffer must not stall serve()
                pong = cast("asyncio.Future[float]", await self.ws.ping())
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        except TimeoutError:
            pong = asyncio.get_running_loop().create_future()  # never done: fails at the deadline
        self.pings_sent += 1
        self._ping_sent_at = now
        self._pong = pong
        pong.add_done_callback(self._on_pong)
        return self.ping_timeout

    def _on_pong(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self.last_inbound = asyncio.get_running_loop().time()

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))
        self._pending.clear()

    # requests -------------------------------------------------------------------------------------
    def next_id(self) -> str:
        return f"{next(self._ids)}:{uuid.uuid4()}"

    async def send_json(self, text: str) -> None:
        if self.ws is None:
            raise ConnectionError("not connected")
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise ConnectionError(f"connection closed: {exc}") from None

    async def request(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        """Send a request and wait for its response payload; raises RequestFailed on `ok:false`."""
        rid = self.next_id()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self.send_json(frames.encode_request(rid, method, params))
            async with asyncio.timeout(timeout):
                response = await future
        finally:
            self._pending.pop(rid, None)
            if future.done() and not future.cancelled():
                future.exception()  # a send that failed first leaves it failed and unawaited: not an error
        if not response.ok:
            raise RequestFailed(response.error or GatewayError("UNKNOWN", "request failed"))
        return response.payload

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 3.0) -> None:
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(code, reason), timeout)
        except Exception:
            self.ws.transport.abort()

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()


def _set_max_frame(ws: ClientConnection, size: int) -> None:
    """Raise the inbound frame limit once the gateway is known (websockets >= 15 names it
    max_message_size, older versions max_size). A frame already arriving with hello-ok is still held
    to the small limit; the gateway sends nothing large before the node has spoken."""
    protocol: Any = ws.protocol
    if hasattr(protocol, "max_message_size"):
        protocol.max_message_size = size
    else:
        protocol.max_size = size


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    text = str(exc) or type(exc).__name__
    return text
