"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.fakegateway import FakeGateway


@pytest.fixture
async def gw() -> AsyncIterator[FakeGateway]:
    """An in-process fake gateway on a free loopback port, stopped after the test."""
    gateway = FakeGateway()
    await gateway.start()
    yield gateway
    await gateway.stop()
