"""The state machine around sessions: connect → (pairing wait) → serve → backoff, forever.

Authentication failures are not network failures: each connect outcome has its own state and message,
and only credentials that can never work stop the node (with an exit status systemd won't loop on).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from edgeclaw import __version__
from edgeclaw.capabilities.base import Capability, InvokeError, NotConnected
from edgeclaw.config import Config, normalise_fingerprint
from edgeclaw.node.dispatch import Dispatcher
from edgeclaw.node.hoststats import host_stats
from edgeclaw.node.session import RequestFailed, Session, SessionEnded, TlsOptions
from edgeclaw.node.setupcode import parse_setup_code
from edgeclaw.node.status import NodeStatus, StatusFile
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.logsetup import REDACTOR
from edgeclaw.platform.state import StateDir, StoredToken
from edgeclaw.protocol.frames import Event, GatewayError
from edgeclaw.protocol.handshake import (
    FALLBACK_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    ClientInfo,
    ConnectAction,
    build_connect_params,
    classify_connect_error,
    is_pairing_changed,
    surface_request_id,
)
from edgeclaw.protocol.identity import DeviceIdentity

log = logging.getLogger("edgeclaw.runner")

EX_DATAERR = 65
EX_PROTOCOL = 76
EX_NOPERM = 77
FAST_PROBE_INTERVAL_S = 0.25
FAST_PROBE_WINDOW_S = 120.0
SURFACE_RECHECK_S = 30.0
STATE_RETRY_S = 10.0  # an unsaved device token is written again this often
INVOKE_STATUS_INTERVAL_S = 2.0  # invoke counts reach STATUS= and status.json at most this often
STATE_WRITE_FAILED = "STATE_WRITE_FAILED"


class FatalError(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_model_identifier() -> str | None:
    try:
        raw = Path("/proc/device-tree/model").read_bytes()
    except OSError:
        return None
    text = raw.rstrip(b"\x00").decode("utf-8", "replace").strip()
    return text or None


class NodeRunner:
    """Owns the connection lifecycle and offers NodeServices to capabilities."""

    def __init__(
        self,
        config: Config,
        identity: DeviceIdentity,
        state: StateDir,
        *,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.state = state
        self.bus = bus or EventBus()
        self.node_id = identity.device_id
        self.display_name = config.node.display_name or identity.device_id[:12]
        self.capabilities: list[Capability] = []
        self.session: Session | None = None
        self.protocol = PROTOCOL_VERSION
        self.status = NodeStatus(
            device_id=self.node_id, display_name=self.display_name, gateway_url=config.gateway.url
        )
        self.status_file = StatusFile(config.runtime_dir)
        self.dispatcher = Dispatcher(
            node_id=self.node_id,
            bus=self.bus,
            send_result=self._send_invoke_result,
            max_payload=self._max_payload,
            max_concurrent=config.node.max_concurrent_invokes,
            queue=config.node.invoke_queue,
        )
        self.connected_event = asyncio.Event()
        self.approved_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session_tasks: set[asyncio.Task[Any]] = set()
        self._fast_probe_until = 0.0
        self._invoke_status_stale = False
        self._invoke_status_timer: asyncio.TimerHandle | None = None
        self._attempt = 0
        self._logged_request_ids: set[str] = set()
        self._bootstrap_token: str | None = None
        self.setup_code_used = False  # the gateway took the setup code and issued a device token
        self._unsaved_token: str | None = None  # issued by the gateway, not yet on disk (state dir full/RO)
        self._state_retry: asyncio.Task[Any] | None = None
        self._state_problems: dict[str, str] = {}
        self._token_override: str | None = config.gateway_token
        self._instance_id = state.instance_id()
        self._model = read_model_identifier()
        self._published_tool_commands: set[str] = set()
        self._last_withheld_logged: list[str] | None = None
        self._reconnect_reason: str | None = None
        self.next_attempt_at: float | None = None
        self.pairing = state.load_pairing()
        if config.setup_code:
            try:
                code = parse_setup_code(config.setup_code)
                self._bootstrap_token = code.bootstrap_token
                REDACTOR.add(code.bootstrap_token)
            except ValueError as exc:
                log.error("ignoring the setup code in %s: %s", config.gateway.setup_code_file, exc)
        REDACTOR.add(config.gateway_token)
        self.bus.subscribe(self._track_invokes)

    # NodeServices ---------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.state.path

    @property
    def simulated(self) -> bool:
        return self.config.node.hardware == "simulated"

    def is_connected(self) -> bool:
        return self.session is not None and self.session.hello is not None

    async def request(self, method: str, params: Any, *, timeout: float = 10.0) -> Any:
        """A node-role request; PAIRING_CHANGED right after a (re)connect is retried, as the gateway asks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.2
        while True:
            session = self.session
            if session is None or session.hello is None:
                raise NotConnected(f"not connected to the gateway ({method})")
            try:
                return await session.request(method, params, timeout=max(0.1, deadline - loop.time()))
            except RequestFailed as exc:
                if exc.error.retryable and is_pairing_changed(exc.error) and loop.time() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise InvokeError(exc.error.detail_code or exc.error.code, exc.error.message) from None
            except (TimeoutError, ConnectionError) as exc:
                raise NotConnected(f"{method}: {exc or 'timed out'}") from None

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        params = {"event": event, "payloadJSON": json.dumps(payload, separators=(",", ":"))}
        return await self.request("node.event", params, timeout=timeout)

    def request_reconnect(self, reason: str) -> None:
        self._reconnect_reason = reason
        session = self.session
        if session is not None:
            self._spawn(session.close(1012, reason), "reconnect-close")
        self._wake.set()

    def node_snapshot(self) -> dict[str, Any]:
        status = self.status
        return {
            "connection": status.connection,
            "pairing": status.pairing,
            "reconnects": status.reconnects,
            "invokes": self.dispatcher.invoke_count,
            "invokes_in_flight": self.dispatcher.in_flight,
            "capabilities": sorted(cap.manifest.name for cap in self.capabilities),
            "commands": self.declared_commands(),
            "withheld_commands": list(status.withheld_commands),
        }

    # lifecycle ------------------------------------------------------------------------------------
    def set_capabilities(self, capabilities: list[Capability]) -> None:
        self.capabilities = capabilities
        self.dispatcher.set_capabilities(capabilities)
        self.status.commands = self.declared_commands()

    def update_config(self, config: Config) -> list[str]:
        """Adopt a reloaded config; returns what the gateway learns only from a new connect (display
        name, shared token), for the caller to reconnect on."""
        changes: list[str] = []
        name = config.node.display_name or self.identity.device_id[:12]
        if name != self.display_name:
            self.display_name = self.status.display_name = name
            changes.append("display name changed")
        if config.gateway_token != self._token_override:
            REDACTOR.add(config.gateway_token)
            self._token_override = config.gateway_token
            changes.append("gateway token changed")
        self.config = config
        return changes

    def declared_commands(self) -> list[str]:
        return self.dispatcher.commands

    def declared_caps(self) -> list[str]:
        caps: set[str] = set()
        for cap in self.capabilities:
            caps.update(cap.caps())
        return sorted(caps)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

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

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop: no new invokes, let running ones finish and deliver, then close the session cleanly."""
        self.status.set_connection("stopping")
        self._publish_status(force=True)
        cut = await self.dispatcher.drain(drain_timeout)
        if cut:
            log.warning("%d invoke(s) did not finish within %.0f s of stopping", cut, drain_timeout)
        self.stop()
        session = self.session
        if session is not None:
            await session.close(1000, "node stopping")
        self.status.set_connection("stopped")
        self.status_file.remove()

    # one connection -------------------------------------------------------------------------------
    def _auth(self) -> Auth:
        if self._unsaved_token:  # newer than anything on disk
            return Auth(device_token=self._unsaved_token)
        stored = self.state.load_token(self.config.gateway.url, self.node_id)
        if stored is not None:
            REDACTOR.add(stored.token)
            return Auth(device_token=stored.token)
        if self._bootstrap_token:
            return Auth(bootstrap_token=self._bootstrap_token)
        return Auth(token=self._token_override)

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
            return self._on_failed_attempt(ended.message)
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
        log.warning("disconnected: %s", end.message)
        self.status.last_error = end.message
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

    def _after_hello(self, device_token: str | None, auth: Auth) -> None:
        if device_token:
            REDACTOR.add(device_token)
            stored = self.state.load_token(self.config.gateway.url, self.node_id)
            if stored is None or stored.token != device_token:
                self._unsaved_token = device_token
                self._persist_token()
        if auth.bootstrap_token and device_token:
            self.setup_code_used = True
            self._bootstrap_token = None
            self._consume_setup_code()
        self.pairing.device_approved = True
        self.pairing.device_request_id = None
        self.status.device_request_id = None
        if self.status.pairing in ("unknown", "device-pending"):
            self.status.pairing = "approved" if self.pairing.surface_approved else "unknown"
        self._save_pairing()

    def _persist_token(self) -> bool:
        """Write the in-memory device token to the state directory; False (and said why) if it can't."""
        token = self._unsaved_token
        if token is None:
            return True
        try:
            self.state.save_token(
                StoredToken(
                    gateway_url=self.config.gateway.url,
                    device_id=self.node_id,
                    role="node",
                    scopes=[],
                    token=token,
                )
            )
        except OSError as exc:
            self._state_write_failed(
                "device-token",
                f"cannot store the device token in {self.state.path}",
                exc,
                f"the node keeps using it from memory and retries every {STATE_RETRY_S:.0f} s; a restart "
                "before it is stored falls back to the shared token or a new pairing",
            )
            return False
        self._unsaved_token = None
        self._state_write_ok("device-token", "stored the device token issued by the gateway")
        return True

    def _drop_stored_token(self) -> None:
        try:
            self.state.clear_token()
        except OSError as exc:  # a read-only state dir: the stale token would be tried again
            self._state_write_failed(
                "device-token",
                f"cannot remove the refused device token in {self.state.path}",
                exc,
                "the gateway will refuse it again on the next connect",
            )
            return
        self._state_write_ok("device-token")

    async def _state_retry_loop(self) -> None:
        """While a state write is failing: try it again every STATE_RETRY_S (the token first)."""
        while self._state_problems and not self._stop.is_set():
            await asyncio.sleep(STATE_RETRY_S)
            if self._unsaved_token is not None:
                self._persist_token()
            elif "device-token" in self._state_problems:
                self._drop_stored_token()
            if "pairing" in self._state_problems:
                self._save_pairing()

    def _state_write_failed(self, what: str, message: str, exc: OSError, consequence: str) -> None:
        """A write to the state directory failed: one error line per distinct problem (with a code and
        the fix), and the problem in `edgeclaw status` until the write succeeds."""
        name = errno.errorcode.get(exc.errno or 0, "EIO")
        fix = {
            errno.ENOSPC: "the file system is full: free space on it",
            errno.EDQUOT: "the disk quota is exhausted: free space or raise it",
            errno.EROFS: "the file system is read-only: remount it read-write (fsck it if the kernel did so)",
            errno.EACCES: "the node's user may not write there: fix the owner/mode of the state directory",
            errno.EPERM: "the node's user may not write there: fix the owner/mode of the state directory",
        }.get(exc.errno or 0, "check the state directory's file system")
        text = f"{STATE_WRITE_FAILED}: {message}: {exc.strerror or exc} ({name}); {fix}"
        if self._state_problems.get(what) != text:
            log.error("%s; %s", text, consequence)
        self._state_problems[what] = text
        self.status.state_error = " | ".join(self._state_problems.values())
        self._publish_status(force=True)
        if self._state_retry is None or self._state_retry.done():
            self._state_retry = self._spawn(self._state_retry_loop(), "state-write-retry")

    def _state_write_ok(self, what: str, message: str | None = None) -> None:
        had = self._state_problems.pop(what, None)
        if message:
            log.info("%s%s", message, " (the state directory accepts writes again)" if had else "")
        elif had:
            log.info("the state directory accepts writes again (%s)", what)
        if had:
            self.status.state_error = " | ".join(self._state_problems.values()) or None
            self._publish_status(force=True)

    def _consume_setup_code(self) -> None:
        path = self.config.gateway.setup_code_file
        if path:
            try:
                Path(path).unlink()
                log.info("setup code used; removed %s", path)
            except OSError as exc:
                log.warning("setup code used; could not remove %s: %s", path, exc)

    def _on_rejected(self, error: GatewayError, auth: Auth) -> float:
        verdict = classify_connect_error(error, auth=auth)
        action = verdict.action
        self.status.last_error = f"{error.detail_code or error.code}: {error.message}"
        if action is ConnectAction.PAIRING_WAIT:
            rid = verdict.request_id
            self.status.set_connection("pairing-wait")
            self.status.pairing = "device-pending"
            self.status.device_request_id = rid
            self.pairing.device_approved = False
            self.pairing.device_request_id = rid
            self._save_pairing()
            if rid and rid not in self._logged_request_ids:
                self._logged_request_ids.add(rid)
                log.warning(
                    "pairing required: approve this device on the gateway with `openclaw devices approve %s` "
                    "(device id %s); retrying every %.0f s",
                    rid,
                    self.node_id,
                    self.config.gateway.pairing_retry_s,
                )
            self.bus.emit(events.PAIRING, stage="device-pending", request_id=rid)
            delay = self.config.gateway.pairing_retry_s * random.uniform(0.9, 1.1)
            return self._schedule(delay)
        if action is ConnectAction.DROP_DEVICE_TOKEN:
            log.warning("the gateway no longer accepts our device token; dropping it and pairing again")
            self._unsaved_token = None
            self._drop_stored_token()
            return self._schedule(0.2)
        if action is ConnectAction.DROP_BOOTSTRAP_TOKEN:
            log.error("the setup code was already used or has expired; falling back to the configured token")
            self._bootstrap_token = None
            self._consume_setup_code()
            return self._schedule(0.2)
        if action is ConnectAction.PROTOCOL_FALLBACK:
            log.warning("gateway expects protocol %s; falling back", FALLBACK_PROTOCOL_VERSION)
            self.protocol = FALLBACK_PROTOCOL_VERSION
            return self._schedule(0.1)
        if action is ConnectAction.FATAL_PROTOCOL:
            self._fatal(
                EX_PROTOCOL, f"no protocol in common with the gateway: {error.message} {error.details}"
            )
        if action is ConnectAction.FATAL_AUTH:
            self._fatal(
                EX_NOPERM,
                f"the gateway refused our credentials ({error.detail_code or error.code}: {error.message}); "
                "fix gateway.token_file (or pair again with a new setup code) and restart",
            )
        if action is ConnectAction.RETRY_AFTER and verdict.retry_after_ms is not None:
            log.info("gateway busy (%s); retrying in %.1f s", error.message, verdict.retry_after_ms / 1000)
            self.status.set_connection("backoff")
            return self._schedule(verdict.retry_after_ms / 1000)
        return self._on_failed_attempt(f"connect refused: {error.detail_code or error.code}: {error.message}")

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
    def _spawn(self, coro: Any, name: str, *, session_scoped: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        bucket = self._session_tasks if session_scoped else self._tasks
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(_log_task_failure)
        return task

    def _start_session_tasks(self) -> None:
        self._spawn(self._after_connect(), "after-connect", session_scoped=True)
        self._spawn(self._stats_loop(), "host-stats", session_scoped=True)

    async def _cancel_session_tasks(self) -> None:
        tasks = list(self._session_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _after_connect(self) -> None:
        known_approved = self.status.pairing == "approved"
        await self.publish_tools()
        for cap in self.capabilities:
            try:
                await cap.on_session_ready()
            except Exception:
                log.exception("%s: on_session_ready failed", cap.manifest.name)
        await self._check_surface()
        if not known_approved and self.status.pairing == "approved":
            # An empty echo means "pending" or "withheld"; only now (approved) can publish_tools tell which.
            await self.publish_tools()

    async def _check_surface(self) -> None:
        """Learn whether the command surface is approved; the gateway names the pending request only in a
        message, so we ask with a harmless node-role method and read the answer."""
        while self.is_connected():
            try:
                await self.request(
                    "node.runnerInventory.update",
                    {"protocolFeatures": []},
                    timeout=10,
                )
            except InvokeError as exc:
                rid = surface_request_id(GatewayError(exc.code, exc.message))
                if rid is None:
                    log.debug("surface probe: %s", exc)
                    return
                self._set_surface_pending(rid)
                await asyncio.sleep(SURFACE_RECHECK_S)
                continue
            except NotConnected:
                return
            self._set_surface_approved()
            return

    def _set_surface_pending(self, rid: str) -> None:
        if self.status.pairing != "surface-pending" or self.status.surface_request_id != rid:
            log.warning(
                "connected; the node's commands await approval: run `openclaw nodes approve %s` on the gateway",
                rid,
            )
            self.bus.emit(events.PAIRING, stage="surface-pending", request_id=rid)
        self.status.pairing = "surface-pending"
        self.status.surface_request_id = rid
        self.pairing.surface_approved = False
        self.pairing.surface_request_id = rid
        self.approved_event.clear()
        self._save_pairing()
        self._publish_status(force=True)

    def _set_surface_approved(self) -> None:
        was = self.status.pairing
        self.status.pairing = "approved"
        self.status.surface_request_id = None
        self.pairing.surface_approved = True
        self.pairing.surface_request_id = None
        self._save_pairing()
        self.approved_event.set()
        if was != "approved":
            log.info("the node's command surface is approved")
            self.bus.emit(events.PAIRING, stage="approved", request_id=None)
        self._publish_status(force=True)

    async def publish_tools(self) -> None:
        """Publish plugin tools and skills for this connection; a tool the gateway drops reveals a
        command it withholds (not in gateway.nodes.commands.allow)."""
        tools: list[dict[str, Any]] = []
        skills: list[dict[str, Any]] = []
        for cap in self.capabilities:
            try:
                tools.extend(cap.plugin_tools())
                skills.extend(cap.skills())
            except Exception:
                log.exception("%s: building tools failed", cap.manifest.name)
        try:
            if skills:
                await self.request("node.skills.update", {"skills": skills}, timeout=10)
            answer = await self.request("node.pluginTools.update", {"tools": tools}, timeout=10)
        except (InvokeError, NotConnected) as exc:
            log.debug("publishing tools failed: %s", exc)
            return
        self._published_tool_commands = {t["command"] for t in tools if "command" in t}
        echoed = answer.get("tools") if isinstance(answer, dict) else None
        if tools and isinstance(echoed, list) and echoed:
            kept = {t.get("command") for t in echoed if isinstance(t, dict)}
            self._report_withheld(sorted(self._published_tool_commands - kept))
        elif tools and isinstance(echoed, list) and self.status.pairing == "approved":
            self._report_withheld(sorted(self._published_tool_commands))

    def _report_withheld(self, withheld: list[str]) -> None:
        changed = withheld != self._last_withheld_logged
        self._last_withheld_logged = withheld
        self.status.withheld_commands = withheld
        self.pairing.withheld_commands = withheld
        self._save_pairing()
        if withheld and changed:  # once per distinct set, not on every reconnect
            allow = json.dumps(sorted(set(withheld)))
            log.error(
                "the gateway withholds %s (not in its command allowlist); on the gateway run: "
                "openclaw config set gateway.nodes.commands.allow '%s' (merge with any existing entries), "
                "then approve the node again",
                ", ".join(withheld),
                allow,
            )
        self._publish_status(force=True)

    async def _stats_loop(self) -> None:
        interval = self.config.node.stats_interval_s
        while self.is_connected():
            try:
                await self.send_event("node.host.stats", host_stats(str(self.state.path)), timeout=10)
            except (InvokeError, NotConnected) as exc:
                log.debug("node.host.stats not sent: %s", exc)
            await asyncio.sleep(interval)

    def _on_event(self, event: Event) -> None:
        name = event.event
        if name == "node.invoke.request":
            self.dispatcher.on_invoke_request(event.payload)
        elif name == "node.invoke.cancel":
            self.dispatcher.on_invoke_cancel(event.payload)
        elif name == "node.pair.resolved":
            payload = event.payload if isinstance(event.payload, dict) else {}
            if payload.get("decision") == "approved":
                self._set_surface_approved()
                self._spawn(self._after_approval(), "after-approval", session_scoped=True)
            else:
                log.warning("the gateway %s the node's command surface", payload.get("decision", "resolved"))
        elif name == "tick":
            self.status.ticks += 1
            self.status.last_tick_at = time.time()
        else:
            log.debug("ignoring gateway event %s", name)

    async def _after_approval(self) -> None:
        await self.publish_tools()
        with contextlib.suppress(InvokeError, NotConnected):
            await self.send_event("node.host.stats", host_stats(str(self.state.path)))

    async def _send_invoke_result(self, params: dict[str, Any]) -> None:
        try:
            await self.request("node.invoke.result", params, timeout=15)
        except InvokeError as exc:
            log.warning("gateway refused the result of %s: %s", params.get("id"), exc)
        except NotConnected:
            log.warning("result of invoke %s not delivered: not connected", params.get("id"))

    def _max_payload(self) -> int:
        session = self.session
        if session is not None and session.hello is not None:
            return session.hello.max_payload
        return 25 * 1024 * 1024

    # status ---------------------------------------------------------------------------------------
    def _track_invokes(self, name: str, fields: dict[str, Any]) -> None:
        if name == events.INVOKE_STOP:
            self.status.invokes = self.dispatcher.invoke_count
            self.status.last_invoke_at = time.time()
            self._invoke_status_stale = True
            if self._invoke_status_timer is None:
                self._flush_invoke_status()

    def _flush_invoke_status(self) -> None:
        """The first invoke after a quiet spell shows at once, a busy stretch at most every
        INVOKE_STATUS_INTERVAL_S, and its last count always: not one STATUS= datagram to PID 1 (and one
        status.json rewrite) per invoke."""
        self._invoke_status_timer = None
        if self._invoke_status_stale:
            self._invoke_status_stale = False
            self._publish_status(force=True)
            self._invoke_status_timer = asyncio.get_running_loop().call_later(
                INVOKE_STATUS_INTERVAL_S, self._flush_invoke_status
            )

    def _save_pairing(self) -> None:
        try:
            self.state.save_pairing(self.pairing)
        except OSError as exc:
            self._state_write_failed(
                "pairing",
                f"cannot save the pairing state in {self.state.path}",
                exc,
                "`edgeclaw status` without a running daemon may show it out of date",
            )
            return
        self._state_write_ok("pairing")
        if self._unsaved_token is not None:
            self._persist_token()  # the directory takes writes again: store the token now

    def _publish_status(self, *, force: bool = False) -> None:
        self.status_file.write(self.status, force=force)
        self.bus.emit(events.STATE, state=self.status.connection, detail=self.status.line())

    def health(self, now: float, *, grace: float = 5.0) -> str | None:
        """None when the connection state machine is making progress, else why not (for the watchdog)."""
        session = self.session
        if session is not None and session.hello is not None:
            limit = 2 * session.hello.tick_interval_ms / 1000 + grace
            idle = now - session.last_inbound
            if idle > limit:
                return f"no inbound traffic for {idle:.0f} s while connected"
        elif self.next_attempt_at is not None and now > self.next_attempt_at + grace + 5:
            return f"reconnect attempt overdue by {now - self.next_attempt_at:.0f} s"
        overdue = self.dispatcher.oldest_overdue(now, grace=30.0)
        if overdue is not None:
            return f"invoke {overdue} is stuck past its deadline"
        return None


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed: %r", task.get_name(), exc)
