"""Credentials and pairing state of the runner: which secret to connect with, what a refused connect
means (pairing wait, a dead token, protocol fallback, fatal), storing the device token the gateway
issues, and the state-directory writes behind them (which may fail on a full or read-only
SD card without stopping the node)."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from edgeclaw.config import Config
from edgeclaw.node.connection import EX_NOPERM, EX_PROTOCOL
from edgeclaw.node.status import NodeStatus
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.logsetup import REDACTOR
from edgeclaw.platform.state import PairingState, StateDir, StoredToken
from edgeclaw.platform.supervisor import Restart, Supervisor
from edgeclaw.protocol.frames import GatewayError
from edgeclaw.protocol.handshake import (
    FALLBACK_PROTOCOL_VERSION,
    Auth,
    ConnectAction,
    classify_connect_error,
)

log = logging.getLogger("edgeclaw.runner")

STATE_RETRY_S = 10.0  # an unsaved device token is written again this often
STATE_WRITE_FAILED = "STATE_WRITE_FAILED"


class CredentialsMixin:
    """Part of NodeRunner: the secret for the next connect and the durable pairing state."""

    config: Config
    state: StateDir
    status: NodeStatus
    node_id: str
    pairing: PairingState
    _bootstrap_token: str | None
    _unsaved_token: str | None  # issued by the gateway, not yet on disk (state dir full/RO)
    setup_code_used: bool  # the gateway took the setup code and issued a device token
    _token_override: str | None
    supervisor: Supervisor
    _state_problems: dict[str, str]
    _logged_request_ids: set[str]
    bus: EventBus
    protocol: int
    _stop: asyncio.Event

    if TYPE_CHECKING:

        def _publish_status(self, *, force: bool = False) -> None: ...

        def _schedule(self, delay: float) -> float: ...

        def _on_failed_attempt(self, message: str) -> float: ...

        def _fatal(self, code: int, message: str) -> None: ...

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
        self.supervisor.start_child("state-write-retry", self._state_retry_loop, restart=Restart.TRANSIENT)

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

    def _on_rejected(self, error: GatewayError, auth: Auth) -> float:
        """The gateway refused our connect: wait for pairing, drop a dead token, fall back, or give up."""
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
