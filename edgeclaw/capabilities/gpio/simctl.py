"""Simulation control: on a simulated board only, a Unix socket in the runtime directory lets a test (or
a developer) act as the world outside the board — press a button, move an object in front of a distance
sensor, probe an output pin — while the daemon's own code runs unchanged above the mock pins.

Socket: `<node.runtime_dir>/gpio-sim.sock`, mode 0600, created only when `node.hardware: simulated`
and removed on stop. One JSON request per line, one JSON answer per line:

- `{"op": "drive", "name": "<input pin>", "active": true}` → drives the mock pin to the level that
  means active for that pin (pull-ups are active low), from a worker thread as real edges would arrive;
- `{"op": "probe", "name": "<pin>"}` → `{"function", "state", "frequency", "changes"}` of the mock pin
  (the physical level, not the logical value);
- `{"op": "distance", "name": "<distance pin>", "metres": 0.2}` → moves the simulated object.

Errors answer `{"ok": false, "error": "..."}`. There is no such socket on real hardware.

From a shell (the demo's `run/demo/press` wraps this):

    python -m edgeclaw.capabilities.gpio.simctl RUNTIME_DIR press NAME [--hold-ms 150]
    python -m edgeclaw.capabilities.gpio.simctl RUNTIME_DIR set NAME on|off
    python -m edgeclaw.capabilities.gpio.simctl RUNTIME_DIR probe NAME
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeclaw.gpio.sim")

SOCKET_NAME = "gpio-sim.sock"
MAX_LINE = 4096


class SimControl:
    def __init__(self, capability: Any, runtime_dir: Path) -> None:
        self.cap = capability
        self.path = Path(runtime_dir) / SOCKET_NAME
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("simulated board: gpio simulation control at %s", self.path)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break
                if not line:
                    break
                try:
                    answer = await self._handle(json.loads(line))
                except Exception as exc:
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def _handle(self, req: Any) -> dict[str, Any]:
        from edgeclaw.capabilities.gpio.backend import drive_mock_input, mock_pin_state, set_mock_distance

        if not isinstance(req, dict):
            raise ValueError("expected a JSON object")
        op, name = req.get("op"), req.get("name")
        handle = self.cap.pins.get(name)
        if handle is None:
            raise KeyError(f"no pin named {name!r}")
        if op == "drive":
            if handle.cfg.is_output:
                raise ValueError(f"{name} is an output; only inputs can be driven")
            await asyncio.to_thread(drive_mock_input, handle, bool(req.get("active")))
            return {"ok": True}
        if op == "probe":
            return {"ok": True, **mock_pin_state(handle)}
        if op == "distance":
            set_mock_distance(handle, float(req["metres"]))
            return {"ok": True}
        raise ValueError(f"unknown op {op!r} (drive, probe, distance)")


def sim_request(runtime_dir: Path | str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """A blocking client for tests and `python -c` pokes at a running simulated node."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(Path(runtime_dir) / SOCKET_NAME))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return dict(json.loads(buf))


def main(argv: list[str] | None = None) -> int:
    """`press` drives an input active, holds it (longer than its debounce) and releases it, as a finger
    would; `set` leaves it in a state (a door contact); `probe` shows a pin's physical level."""
    parser = argparse.ArgumentParser(prog="python -m edgeclaw.capabilities.gpio.simctl", description=__doc__)
    parser.add_argument("runtime_dir", help="the simulated node's node.runtime_dir")
    sub = parser.add_subparsers(dest="op", required=True)
    press = sub.add_parser("press", help="press and release an input (button, contact)")
    press.add_argument("name")
    press.add_argument("--hold-ms", type=int, default=150, help="how long it is held (default 150)")
    set_ = sub.add_parser("set", help="drive an input to a state and leave it there")
    set_.add_argument("name")
    set_.add_argument("state", choices=("on", "off", "active", "inactive", "1", "0"))
    sub.add_parser("probe", help="the physical level of a pin").add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.op == "press":
            if not 1 <= args.hold_ms <= 60_000:
                parser.error("--hold-ms must be between 1 and 60000")
            for active in (True, False):
                answer = sim_request(args.runtime_dir, {"op": "drive", "name": args.name, "active": active})
                if not answer.get("ok"):
                    break
                if active:
                    time.sleep(args.hold_ms / 1000)
        elif args.op == "set":
            active = args.state in ("on", "active", "1")
            answer = sim_request(args.runtime_dir, {"op": "drive", "name": args.name, "active": active})
        else:
            answer = sim_request(args.runtime_dir, {"op": "probe", "name": args.name})
    except OSError as exc:
        print(f"no simulated board at {args.runtime_dir} ({exc}); is the node running?", file=sys.stderr)
        return 2
    if not answer.get("ok"):
        print(f"refused: {answer.get('error')}", file=sys.stderr)
        return 1
    if args.op == "probe":
        print(json.dumps({k: v for k, v in answer.items() if k != "ok"}))
    elif args.op == "press":
        print(f"{args.name}: pressed for {args.hold_ms} ms and released")
    else:
        print(f"{args.name}: driven {'active' if active else 'inactive'} (gpio.read shows its state)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
