"""sd_notify as systemd reads it: one UTF-8 datagram per message on $NOTIFY_SOCKET (systemd ignores a
STATUS= that is not UTF-8 clean; the systemd tier found sdnotify sending latin-1)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from pathlib import Path

import pytest

from edgeclaw.node.runstatus import INVOKE_STATUS_INTERVAL_S
from edgeclaw.platform.systemd import Notifier, watchdog_interval
from tests.support.fakegateway import FakeGateway
from tests.support.node import NodeProcess


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock


def test_status_and_ready_are_utf8(notify_socket: socket.socket) -> None:
    n = Notifier()
    n.ready("connected to ws://gw:18789 as ガレージ-pi · approved · 0 invokes")
    msg = notify_socket.recv(4096).decode("utf-8")  # raises if not UTF-8
    assert msg.splitlines() == [
        "READY=1",
        "STATUS=connected to ws://gw:18789 as ガレージ-pi · approved · 0 invokes",
    ]
    n.status("reload failed: bad\nvalue")
    assert notify_socket.recv(4096).decode("utf-8") == "STATUS=reload failed: bad value"
    n.status("reload failed: bad\nvalue")  # unchanged: not resent
    n.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


@pytest.mark.timeout(30)
def test_a_full_notify_queue_never_blocks_the_node(notify_socket: socket.socket) -> None:
    """PID 1 behind on reading: STATUS= and WATCHDOG=1 are dropped, not waited for; READY=1 waits ≤ 1 s."""
    n = Notifier()
    started = time.monotonic()
    for i in range(5000):  # far more than any datagram queue holds
        n.status(f"connected · {i} invokes")
        n.watchdog()
    assert time.monotonic() - started < 5
    started = time.monotonic()
    n.ready("still here")  # queue full: waits for room, then gives up with a warning
    assert 0.9 <= time.monotonic() - started < 3
    notify_socket.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            notify_socket.recv(4096)
    n.status("connected · 5000 invokes")  # the queue drained: an update arrives again
    notify_socket.setblocking(True)
    assert notify_socket.recv(4096) == "STATUS=connected · 5000 invokes".encode()


def test_abstract_socket_and_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgeclaw-test-{id(monkeypatch)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    Notifier().stopping()
    assert sock.recv(4096).decode().startswith("STOPPING=1\n")
    monkeypatch.delenv("NOTIFY_SOCKET")
    quiet = Notifier()
    assert not quiet.enabled
    quiet.ready("x")  # a no-op outside systemd


def test_watchdog_interval_is_half_and_only_for_us(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


@pytest.mark.timeout(60)
async def test_a_burst_of_invokes_sends_few_status_updates_and_ends_on_the_last_count(
    tmp_path: Path, gw: FakeGateway, notify_socket: socket.socket
) -> None:
    """One STATUS= datagram per invoke would have PID 1 parse thousands a second under load."""
    node = NodeProcess(tmp_path / "node", None, url=gw.url)
    (node.base / "gateway.token").write_text("fake-token-123456\n")
    node.start()  # inherits NOTIFY_SOCKET
    counts: list[int] = []
    try:
        await gw.wait_hello(1, timeout=30)
        burst_started = time.monotonic()
        for _ in range(60):
            await gw.result_for(await gw.invoke("system.which", {"bins": ["sh"]}))
        burst_s = time.monotonic() - burst_started
        notify_socket.setblocking(False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not counts or counts[-1] < 60):
            try:
                message = notify_socket.recv(4096).decode("utf-8")
            except BlockingIOError:
                await asyncio.sleep(0.05)
                continue
            for line in message.splitlines():
                found = re.search(r"(\d+) invokes", line) if line.startswith("STATUS=") else None
                if found and int(found.group(1)) > 0:
                    counts.append(int(found.group(1)))
    finally:
        node.stop()
    assert counts and counts[-1] == 60, counts
    # the first, a few from the connection settling, at most one per interval while the burst lasts
    # (the burst takes about a second on a quiet machine, many on a loaded one), and the last
    assert len(counts) <= 5 + burst_s / INVOKE_STATUS_INTERVAL_S, (counts, burst_s)
