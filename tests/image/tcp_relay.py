"""stdin/stdout <-> one TCP connection: QEMU's `guestfwd=...-cmd:` runs this once per guest connection
(the `tcp:` chardev form would connect once, at QEMU's start, and serve a single connection).

    python tcp_relay.py HOST PORT
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> int:
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    sock.settimeout(None)

    def upstream() -> None:
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while data := sock.recv(65536):
            write_all(1, data)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
