"""The connection state machine: connect → (pairing wait) → serve → backoff, forever.

Authentication failures are not network failures: each connect outcome has its own state and message,
and only credentials that can never work stop the node (with an exit status systemd won't loop on).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from edgeclaw import __version__
from edgeclaw.capabilities.base import Capability
from edgeclaw.config import Config, normalise_fingerprint
from edgeclaw.node.session import Session, SessionEnded, TlsOptions
from edgeclaw.node.status import NodeStatus
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.state import PairingState
from edgeclaw.protocol.frames import Event, GatewayError
from edgeclaw.protocol.handshake import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    ClientInfo,
    build_connect_params,
)
from edgeclaw.protocol.identity import DeviceIdentity

log = logging.getLogger("edgeclaw.runner")

EX_DATAERR = 65
EX_PROTOCOL = 76
EX_NOPERM = 77
FAST_PROBE_INTERVAL_S = 0.25
FAST_PROBE_WINDOW_S = 120.0


class FatalError(Exception):
    """Credentials or protocol that can never work: the process exits with `exit_code`."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConnectionMixin:
    """Part of NodeRunner: one connection attempt after another, with backoff between them."""

    config: Config
    identity: DeviceIdentity
    status: NodeStatus
    bus: EventBus
    pairing: PairingState
    capabilities: list[Capability]
    session: Session | None
    protocol: int
    display_name: str
    node_id: str
    connected_event: asyncio.Event
    next_attempt_at: float | None
    _stop: asyncio.Event
    _wake: asyncio.Event
    _attempt: int
    _fast_probe_until: float
    _reconnect_reason: str | None
    _logged_request_ids: set[str]
    _bootstrap_token: str | None
    _unsaved_token: str | None
    _instance_id: str
    _model: str | None

    if TYPE_CHECKING:

        def declared_caps(self) -> list[str]: ...

        def declared_commands(self) -> list[str]: ...

        def _publish_status(self, *, force: bool = False) -> None: ...

        def _auth(self) -> Auth: ...

        def _after_hello(self, device_token: str | None, auth: Auth) -> None: ...

        def _save_pairing(self) -> None: ...

        def _drop_stored_token(self) -> None: ...

        def _consume_setup_code(self) -> None: ...

        def _start_session_tasks(self) -> None: ...

        async def _cancel_session_tasks(self) -> None: ...

        def _on_event(self, event: Event) -> None: ...

        def _on_rejected(self, error: GatewayError, auth: Auth) -> float: ...

    async def run(self) -> None:
        """Connect and serve until stop() is called; raises FatalError for unrecoverable credentials."""
        self._publish_status(force=True)
        try:
            while not self._stop.is_set():
                served = self.status.reconnects
                delay = await self._attempt_unless_stopped()
                if delay is None or self._stop.is_set():
                    break
                if self.status.reconnects != served:
                    # A finished connection is a graph of cycles (websockets' connection and protocol,
                    # transports, exceptions and their frames) that only a full collection frees, and
                    # that comes after hundreds of reconnects: the garbage, and the heap, would grow
                    # until then. Collected here, its memory is reused by the next connection.
                    gc.collect()
                await self._sleep(delay)
        finally:
            await self._cancel_session_tasks()

    async def _attempt_unless_stopped(self) -> float | None:
        """One connection attempt; a stop while still connecting (a slow TCP connect or handshake to an
        unreachable gateway) abandons it at once. A live session is closed cleanly by shutdown() instead."""
        attempt = asyncio.ensure_future(self._one_connection())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                await asyncio.wait({attempt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if attempt.done():
                    return attempt.result()
                if self.session is None:  # still connecting: nothing to close cleanly
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    return None
                await attempt  # serving: shutdown() closes the session, the attempt then returns
                return attempt.result()
        finally:
            stopper.cancel()

    def _connect_params(self, challenge: Challenge, auth: Auth) -> dict[str, Any]:
        return build_connect_params(
            identity=self.identity,
            client=ClientInfo(
                display_name=self.display_name,
                version=__version__,
                instance_id=self._instance_id,
                model_identifier=self._model,
            ),
            auth=auth,
            nonce=challenge.nonce,
            signed_at_ms=challenge.ts,
            caps=self.declared_caps(),
            commands=self.declared_commands(),
            protocol=self.protocol,
        )

    async def _one_connection(self) -> float:
        """One attempt (and, if it succeeds, one served session); returns how long to wait before the next."""
        gw = self.config.gateway
        pin = normalise_fingerprint(gw.tls_fingerprint) if gw.tls_fingerprint else None
        session = Session(
            gw.url,
            tls=TlsOptions(fingerprint=pin),
            connect_timeout=gw.connect_timeout_s,
            ping_interval=gw.ping_interval_s or None,
            ping_timeout=gw.ping_timeout_s,
        )
        self._attempt += 1
        self.status.attempt = self._attempt
        self.status.set_connection("connecting")
        self._publish_status()
        self.bus.emit(events.CONNECT, url=gw.url, attempt=self._attempt)
        auth = self._auth()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await session.open()
            hello = await session.handshake(lambda ch: self._connect_params(ch, auth))
        except SessionEnded as ended:
            if ended.kind == "rejected" and ended.error is not None:
                return self._on_rejected(ended.error, auth)
            return self._on_failed_attempt(f"{ended.reason_code}: {ended.message}")
        except Exception as exc:  # an answer nobody foresaw, or our own bug: a coded reconnect, never a crash
            session.abort()
            log.debug("connect attempt failed", exc_info=True)
            return self._on_failed_attempt(f"CONNECT_FAILED: {type(exc).__name__}: {exc}")
        # connected ------------------------------------------------------------------------------
        self.session = session
        self._attempt = 0
        self._reconnect_reason = None
        if hello.protocol != self.protocol and self.protocol == PROTOCOL_VERSION:
            log.info("gateway answered protocol %s", hello.protocol)
        self._after_hello(hello.device_token, auth)
        self.status.server_version = hello.server_version
        self.status.protocol = self.protocol
        self.status.last_error = None
        self.status.set_connection("connected")
        self.connected_event.set()
        log.info(
            "connected to %s (gateway %s, protocol %s) as %s [%s]",
            gw.url,
            hello.server_version,
            self.protocol,
            self.display_name,
            self.node_id[:12],
        )
        self.bus.emit(
            events.HELLO_OK,
            server_version=hello.server_version,
            protocol=self.protocol,
            tick_interval_ms=hello.tick_interval_ms,
            elapsed_s=loop.time() - started,
        )
        self._publish_status(force=True)
        self._start_session_tasks()
        connected_at = loop.time()
        try:
            await session.serve(self._on_event)
        except SessionEnded as ended:
            end = ended
        finally:
            self.session = None
            self.connected_event.clear()
            await self._cancel_session_tasks()
            for cap in self.capabilities:
                with contextlib.suppress(Exception):
                    await cap.on_disconnected()
        self.status.reconnects += 1
        self.bus.emit(
            events.DISCONNECT, code=end.code, reason=end.message, connected_s=loop.time() - connected_at
        )
        if self._stop.is_set():
            return 0.0
        if self._reconnect_reason:
            log.info("reconnecting: %s", self._reconnect_reason)
            return 0.05
        log.warning("disconnected: %s: %s", end.reason_code, end.message)
        self.status.last_error = f"{end.reason_code}: {end.message}"
        if end.kind == "shutdown":
            payload = session.shutdown_payload or {}
            expected = payload.get("restartExpectedMs")
            window = FAST_PROBE_WINDOW_S
            if isinstance(expected, (int, float)) and expected > 0:
                window = max(window, expected / 1000 + 60)
            self._fast_probe_until = loop.time() + window
        if end.kind in ("tick-timeout", "ping-timeout"):
            return 0.1
        return self._backoff_delay() if loop.time() >= self._fast_probe_until else FAST_PROBE_INTERVAL_S

    def _fatal(self, code: int, message: str) -> None:
        self.status.set_connection("fatal")
        self.status.last_error = message
        self._publish_status(force=True)
        raise FatalError(code, message)

    def _on_failed_attempt(self, message: str) -> float:
        loop = asyncio.get_running_loop()
        if loop.time() < self._fast_probe_until:
            self.status.last_error = message
            self.status.set_connection("backoff")
            return self._schedule(FAST_PROBE_INTERVAL_S)
        delay = self._backoff_delay()
        log.warning("%s; retry in %.1f s (attempt %d)", message, delay, self._attempt)
        self.status.last_error = message
        self.status.set_connection("backoff")
        return self._schedule(delay)

    def _backoff_delay(self) -> float:
        gw = self.config.gateway
        base = min(gw.backoff_max_s, gw.backoff_initial_s * (2 ** max(0, self._attempt - 1)))
        return min(gw.backoff_max_s, base * random.uniform(0.75, 1.25))

    def _schedule(self, delay: float) -> float:
        self.next_attempt_at = asyncio.get_running_loop().time() + delay
        self.status.next_retry_at = time.time() + delay
        self._publish_status(force=True)
        return delay

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, delay))
        self.next_attempt_at = None

    # while connected ------------------------------------------------------------------------------
