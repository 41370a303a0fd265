"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.fakegateway import FakeGateway


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """A daemon under test applies `log.level` to the root logger (a reload to debug): put it back, or
    every later test runs at DEBUG and pytest's log capture keeps each record's arguments (exceptions,
    their tracebacks, the sessions in them) alive, e.g. 7 Sessions after test_lifecycle_reload."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
async def gw() -> AsyncIterator[FakeGateway]:
    """An in-process fake gateway on a free loopback port, stopped after the test."""
    gateway = FakeGateway()
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    """NOTIFY_SOCKET for the daemon under test: a non-blocking datagram socket the test reads."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock
