"""An optional localhost-only `/metrics` endpoint: a dozen lines of HTTP/1.0 on asyncio, no web framework."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger("edgeclaw.telemetry")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464`, `localhost:9464` → (host, port); ValueError unless loopback."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"must be HOST:PORT on loopback, e.g. 127.0.0.1:9464 (got {value!r})")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
        raise ValueError(f"/metrics listens on loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
    return host, int(port_text)


class MetricsServer:
    def __init__(self, listen: str, render: Callable[[], str]) -> None:
        self.host, self.port = parse_listen(listen)
        self.listen = listen
        self.render = render
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_REQUEST_BYTES)
        log.info("serving metrics on http://%s/metrics (loopback only)", self.listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                self._reply(writer, 405, "method not allowed\n", "text/plain")
            elif path != "/metrics":
                self._reply(writer, 404, "not found: the metrics are at /metrics\n", "text/plain")
            else:
                body = self.render()
                self._reply(
                    writer, 200, body if method == "GET" else "", CONTENT_TYPE, length=len(body.encode())
                )
            await asyncio.wait_for(writer.drain(), 5)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _reply(
        writer: asyncio.StreamWriter, code: int, body: str, ctype: str, *, length: int | None = None
    ) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[code]
        raw = body.encode("utf-8")
        head = (
            f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(raw) if length is None else length}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + raw)
