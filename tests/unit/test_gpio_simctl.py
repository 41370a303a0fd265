"""The simulation socket's shell client (the demo's `run/demo/press` and `run/demo/set`): what it sends
for a press (active, held, inactive) and a set, and that a missing node or a refused pin is a clear
message and a non-zero exit, not a traceback. Driving real mock pins through the socket is covered with
the whole node in tests/gateway (test_demo_gateway, test_triggers_gateway)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.gpio.simctl import SOCKET_NAME, main


class FakeBoard:
    """A socket answering like the node's SimControl: knows one input, `doorbell`."""

    def __init__(self, runtime_dir: Path) -> None:
        self.requests: list[tuple[float, dict[str, Any]]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(runtime_dir / SOCKET_NAME))
        self.server.listen(4)
        self.server.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                req = json.loads(conn.makefile().readline())
                self.requests.append((time.monotonic(), req))
                ok = req.get("name") == "doorbell"
                answer = (
                    {"ok": True} if ok else {"ok": False, "error": f"KeyError: no pin named {req['name']!r}"}
                )
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def board(tmp_path: Path) -> Any:
    b = FakeBoard(tmp_path)
    yield b
    b.close()


def test_press_drives_active_holds_then_releases(tmp_path: Path, board: FakeBoard, capsys: Any) -> None:
    assert main([str(tmp_path), "press", "doorbell", "--hold-ms", "200"]) == 0
    (t1, first), (t2, second) = board.requests
    assert first == {"op": "drive", "name": "doorbell", "active": True}
    assert second == {"op": "drive", "name": "doorbell", "active": False}
    assert t2 - t1 >= 0.19
    assert "doorbell: pressed for 200 ms and released" in capsys.readouterr().out


def test_set_leaves_the_input_in_the_state_asked(tmp_path: Path, board: FakeBoard) -> None:
    assert main([str(tmp_path), "set", "doorbell", "on"]) == 0
    assert main([str(tmp_path), "set", "doorbell", "off"]) == 0
    assert [r for _, r in board.requests] == [
        {"op": "drive", "name": "doorbell", "active": True},
        {"op": "drive", "name": "doorbell", "active": False},
    ]


def test_an_unknown_pin_is_refused_and_a_press_stops_there(
    tmp_path: Path, board: FakeBoard, capsys: Any
) -> None:
    assert main([str(tmp_path), "press", "gate"]) == 1
    assert len(board.requests) == 1  # never "released" after a refused press
    assert "refused: KeyError: no pin named 'gate'" in capsys.readouterr().err


def test_no_running_node_is_a_clear_message(tmp_path: Path, capsys: Any) -> None:
    assert main([str(tmp_path), "press", "doorbell"]) == 2
    assert "is the node running?" in capsys.readouterr().err
