"""One guest connection to one loopback TCP port: QEMU's user network runs this per connection for
`guestfwd=tcp:IP:PORT-cmd:python3 guestfwd_relay.py PORT`, with the guest's socket as stdin/stdout.

The `cmd:` form is needed because the chardev form (`-tcp:127.0.0.1:PORT`) connects once, at QEMU's
start, and carries one connection only; the node reconnects. Stdlib only; nothing may be written to
stderr (libslirp points it at the guest's socket too).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    up = socket.create_connection(("127.0.0.1", port), timeout=10)
    up.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "guest")
    sel.register(up, selectors.EVENT_READ, "gateway")
    while True:
        for key, _ in sel.select():
            if key.data == "guest":
                data = os.read(0, 65536)
                if not data:
                    up.shutdown(socket.SHUT_WR)
                    sel.unregister(0)
                    continue
                up.sendall(data)
            else:
                data = up.recv(65536)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view) :]


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except OSError:
        raise SystemExit(1) from None
