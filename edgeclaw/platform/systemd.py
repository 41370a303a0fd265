"""sd_notify: READY/STATUS/RELOADING/STOPPING and a watchdog that pings only while the node is healthy."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edgeclaw.systemd")


class Notifier:
    """No-op outside systemd (NOTIFY_SOCKET unset), so the daemon runs the same in a terminal."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        if self.enabled:
            addr = os.environ["NOTIFY_SOCKET"]
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, *lines: str) -> None:
        # UTF-8, as systemd requires: sdnotify encoded latin-1, so systemd dropped every STATUS= with a
        # "·" ("not UTF-8 clean") and a non-latin-1 display name silently lost READY=1 itself
        if self._sock is not None:
            try:
                self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self._addr)
            except OSError as exc:
                log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        text = text.replace("\n", " ")[:400]
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: draining invokes")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Half of WatchdogSec= (systemd passes WATCHDOG_USEC, and WATCHDOG_PID when it targets a process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
