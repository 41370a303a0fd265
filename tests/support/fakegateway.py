"""An in-process fake gateway for fault injection (interoperability is only claimed against the real one).

It speaks the handshake for real (challenge, signature verification with our verifier, hello-ok) and lets
a test inject whatever the network or a broken gateway might do.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from edgeclaw.protocol.identity import signature_payload_v3, verify_signature


@dataclass
class FakeGateway:
    token: str = "fake-token-123456"
    tick_interval_ms: int = 30_000
    max_payload: int = 26_214_400
    send_challenge: bool = True
    answer_connect: bool = True
    connect_error: dict[str, Any] | None = None  # one-shot: answer the next connect with this error
    connect_errors: list[dict[str, Any]] = field(default_factory=list)  # queued errors, one per connect
    issue_device_token: str | None = "fake-device-token-abcdef"
    send_ticks: bool = True
    challenge_padding: int = 0  # bytes of filler in the connect.challenge payload
    hello_padding: int = 0  # bytes of filler in the hello-ok payload (a real one is ~14.3 kB)
    server: Server | None = None
    port: int = 0
    connections: list[ServerConnection] = field(default_factory=list)
    connects: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    node_events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    signature_failures: int = 0
    hello_count: int = 0
    _result_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    ssl: Any = None
    close_after_challenge: int = 0  # the next N connections: close 1012 right after connect.challenge
    after_challenge_frames: list[str] = field(default_factory=list)  # one-shot raw frames before hello
    hello_overrides: list[dict[str, Any]] = field(default_factory=list)  # merged into the next hello-oks

    async def start(self, port: int = 0) -> None:
        self.server = await serve(self._handle, "127.0.0.1", port, ssl=self.ssl, max_size=64 * 1024 * 1024)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl else 'ws'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    @property
    def live(self) -> ServerConnection | None:
        for conn in reversed(self.connections):
            if conn.state.name == "OPEN":
                return conn
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            if not self.send_challenge:
                await ws.wait_closed()
                return
            nonce, ts = str(uuid.uuid4()), 1_795_689_164_833
            await ws.send(
                json.dumps(
                    {
                        "type": "event",
                        "event": "connect.challenge",
                        "payload": {"nonce": nonce, "ts": ts, **self._padding(self.challenge_padding)},
                    }
                )
            )
            if self.close_after_challenge > 0:
                self.close_after_challenge -= 1
                await ws.close(1012, "service restart")
                return
            raw = await ws.recv()
            frame = json.loads(raw)
            for extra in self.after_challenge_frames:
                await ws.send(extra)
            self.after_challenge_frames = []
            params = frame.get("params") or {}
            self.connects.append(params)
            if not self.answer_connect:
                await ws.wait_closed()
                return
            error = self.connect_error or (self.connect_errors.pop(0) if self.connect_errors else None)
            self.connect_error = None
            if error is None and not self._signature_ok(params, nonce, ts):
                self.signature_failures += 1
                error = {
                    "code": "INVALID_REQUEST",
                    "message": "device signature invalid",
                    "details": {"code": "DEVICE_AUTH_SIGNATURE_INVALID"},
                }
            if error is not None:
                await ws.send(json.dumps({"type": "res", "id": frame["id"], "ok": False, "error": error}))
                await ws.close(1008, error.get("message", "refused")[:100])
                return
            hello: dict[str, Any] = {
                "type": "hello-ok",
                "protocol": 4,
                "server": {"version": "fake", "connId": str(uuid.uuid4())},
                "auth": {
                    "method": "token",
                    "role": "node",
                    "scopes": [],
                    "deviceToken": self.issue_device_token,
                },
                "policy": {"maxPayload": self.max_payload, "tickIntervalMs": self.tick_interval_ms},
                **self._padding(self.hello_padding),
            }
            if self.hello_overrides:
                hello.update(self.hello_overrides.pop(0))  # a broken hello-ok: not counted as a hello
            else:
                self.hello_count += 1
            await ws.send(json.dumps({"type": "res", "id": frame["id"], "ok": True, "payload": hello}))
            ticker = asyncio.get_running_loop().create_task(self._ticks(ws))
            try:
                async for message in ws:
                    await self._on_message(ws, message)
            finally:
                ticker.cancel()
        except Exception:
            pass

    @staticmethod
    def _padding(size: int) -> dict[str, str]:
        return {"snapshotPad": "x" * size} if size else {}

    def freeze(self) -> None:
        """Act like a SIGSTOPped gateway: the live connection stays open but nothing is read or
        answered (no pongs) and no ticks are sent."""
        self.send_ticks = False
        conn = self.live
        assert conn is not None, "no live node connection"
        conn.transport.pause_reading()

    def _signature_ok(self, params: dict[str, Any], nonce: str, ts: int) -> bool:
        device, client, auth = (
            params.get("device") or {},
            params.get("client") or {},
            params.get("auth") or {},
        )
        if device.get("nonce") != nonce or device.get("signedAt") != ts:
            return False
        payload = signature_payload_v3(
            device_id=device.get("id", ""),
            client_id=client.get("id", ""),
            client_mode=client.get("mode", ""),
            role=params.get("role", ""),
            scopes=params.get("scopes") or [],
            signed_at_ms=ts,
            token=auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken") or "",
            nonce=nonce,
            platform=client.get("platform"),
            device_family=client.get("deviceFamily"),
        )
        return verify_signature(device.get("publicKey", ""), payload, device.get("signature", ""))

    async def _ticks(self, ws: ServerConnection) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_ms / 1000 / 2)
            if self.send_ticks:
                await ws.send(json.dumps({"type": "event", "event": "tick", "payload": {"ts": 1}}))

    async def _on_message(self, ws: ServerConnection, message: Any) -> None:
        frame = json.loads(message)
        self.requests.append(frame)
        method, params = frame.get("method"), frame.get("params") or {}
        if method == "node.invoke.result":
            self.results.append(params)
            for waiter in self._result_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            payload: Any = {"ok": True}
        elif method == "node.event":
            self.node_events.append(params)
            payload = {"ok": True, "event": params.get("event"), "handled": True}
        elif method == "node.pluginTools.update":
            payload = {"nodeId": "x", "tools": params.get("tools", [])}
        else:
            payload = {"ok": True}
        await ws.send(json.dumps({"type": "res", "id": frame["id"], "ok": True, "payload": payload}))

    # injection --------------------------------------------------------------------------------------
    async def send_raw(self, data: str | bytes) -> None:
        conn = self.live
        assert conn is not None, "no live node connection"
        await conn.send(data)

    async def send_event(self, event: str, payload: Any) -> None:
        await self.send_raw(json.dumps({"type": "event", "event": event, "payload": payload}))

    async def invoke(
        self,
        command: str,
        params: Any = None,
        *,
        timeout_ms: int = 10_000,
        invoke_id: str | None = None,
        raw_params_json: Any = ...,
    ) -> str:
        invoke_id = invoke_id or str(uuid.uuid4())
        params_json = json.dumps(params) if raw_params_json is ... else raw_params_json
        await self.send_event(
            "node.invoke.request",
            {
                "id": invoke_id,
                "nodeId": "n",
                "command": command,
                "paramsJSON": params_json,
                "timeoutMs": timeout_ms,
                "idempotencyKey": str(uuid.uuid4()),
            },
        )
        return invoke_id

    async def result_for(self, invoke_id: str, timeout: float = 10.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for result in self.results:
                if result.get("id") == invoke_id:
                    return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no result for {invoke_id}")
            waiter: asyncio.Future[None] = loop.create_future()
            self._result_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self._result_waiters.remove(waiter)

    async def wait_hello(self, count: int, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.hello_count < count:
            if loop.time() > deadline:
                raise TimeoutError(f"expected {count} hello-ok, got {self.hello_count}")
            await asyncio.sleep(0.02)
