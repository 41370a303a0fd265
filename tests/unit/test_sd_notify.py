"""sd_notify as systemd reads it: one UTF-8 datagram per message on $NOTIFY_SOCKET (systemd ignores a
STATUS= that is not UTF-8 clean; the systemd tier found sdnotify sending latin-1)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgeclaw.platform.systemd import Notifier, watchdog_interval


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
