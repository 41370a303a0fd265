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
            # non-blocking: when PID 1 falls behind and the socket's queue is full, a blocking send
            # would stop the event loop, and with it the node, until PID 1 caught up
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    def send(self, *lines: str, must_arrive: bool = False) -> bool:
        """STATUS= and WATCHDOG=1 are dropped when the queue is full (the next one follows); a state
        change (`must_arrive`: READY, RELOADING, STOPPING) waits up to 1 s for room."""
        # UTF-8, as systemd requires: sdnotify encoded latin-1, so systemd dropped every STATUS= with a
        # "·" ("not UTF-8 clean") and a non-latin-1 display name silently lost READY=1 itself
        if self._sock is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        status = next((line[7:] for line in lines if line.startswith("STATUS=")), None)
        if status is not None:  # READY=1/RELOADING=1 carry a STATUS= too: the next status() compares to it
            self._last_status = status
        try:
            self._sock.sendto(data, self._addr)
            return True
        except BlockingIOError:
            if not must_arrive:
                log.debug("sd_notify queue full; dropped %s", lines[0].split("=", 1)[0])
                return False
            try:
                self._sock.settimeout(1.0)
                self._sock.sendto(data, self._addr)
                return True
            except OSError as exc:
                log.warning("sd_notify %s not delivered: %s", lines[0], exc)
                return False
            finally:
                self._sock.setblocking(False)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []), must_arrive=True)

    def status(self, text: str) -> None:
        text = text.replace("\n", " ")[:400]
        if text != self._last_status and self.send(f"STATUS={text}"):
            self._last_status = text  # a dropped one is sent again with the next update

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration", must_arrive=True)

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: draining invokes", must_arrive=True)

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
