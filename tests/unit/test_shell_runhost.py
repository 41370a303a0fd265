"""The contained runner's protocol without systemd: a stand-in for edgeclaw-run.socket (Accept=yes) starts
the real runhost per connection with the connection as stdin, the way systemd does. The systemd tier
(tests/systemd/test_contained_run.py) checks the user, cgroup and limits in a real systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.shell.contained import run_contained
from tests.unit.test_shell_contain import ESCAPE, _pid, alive
from tests.unit.test_shell_run import FULL, ctx, make

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "run.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    server.settimeout(0.2)
    hosts: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                hosts.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "edgeclaw.capabilities.shell.runhost"],
                        stdin=conn.fileno(),
                        cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
                    )
                )

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(5)
    server.close()
    for host in hosts:
        with contextlib.suppress(subprocess.TimeoutExpired):
            host.wait(10)
        if host.poll() is None:
            host.kill()
            host.wait(5)


async def _run(path: str, argv: list[str], timeout: float | None = None) -> object:
    loop = asyncio.get_running_loop()
    return await run_contained(
        argv,
        cwd=None,
        env={"PATH": os.defpath, "HOME": "/nonexistent-node-home"},
        timeout=timeout,
        deadline=loop.time() + 30,
        cap=1000,
        grace=0.3,
        path=path,
    )


async def test_output_exit_code_and_the_hosts_home(run_socket: str, tmp_path: Path) -> None:
    result = await _run(run_socket, ["/bin/sh", "-c", 'echo out "$HOME"; echo err >&2; exit 3'])
    assert (result.exit_code, result.stdout, result.stderr) == (3, f"out {tmp_path}\n", "err\n")  # type: ignore[attr-defined]


async def test_timeout_kills_a_setsid_grandchild_in_the_host(run_socket: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = await _run(
        run_socket, ["/bin/sh", "-c", ESCAPE.format(pidfile=pidfile) + "sleep 300"], timeout=1.0
    )
    pid = await _pid(pidfile)
    try:
        assert result.timed_out and result.exit_code == 124  # type: ignore[attr-defined]
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_launch_failure_is_reported(run_socket: str) -> None:
    result = await _run(run_socket, ["/no/such/binary"])
    assert result.exit_code is None and "ENOENT" in (result.error or "")  # type: ignore[attr-defined]


async def test_forced_systemd_isolation_without_the_socket_is_unavailable(tmp_path: Path) -> None:
    h, _ = await make(tmp_path, approvals=FULL, isolation="systemd", run_socket=str(tmp_path / "none.sock"))
    with pytest.raises(InvokeError) as exc:
        await h["system.run"](ctx({"command": ["/bin/true"]}))
    assert exc.value.code == "UNAVAILABLE"


async def test_a_run_killed_at_its_memory_limit_is_a_coded_error(tmp_path: Path) -> None:
    # what the host reports when the unit's cgroup counted an OOM kill (MemoryMax= on a real board)
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def host() -> None:
        conn, _ = server.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
            for fd in fds:
                os.close(fd)
            conn.sendall(b'{"started": 4242}\n{"exit": -9, "oom": true, "killed": false}\n')

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    h, _ = await make(tmp_path / "state", approvals=FULL, isolation="systemd", run_socket=path)
    out = await h["system.run"](ctx({"command": ["/usr/bin/python3", "-c", "x = ' ' * 10**10"]}))
    thread.join(5)
    server.close()
    assert out["success"] is False and out["exitCode"] == 137
    assert out["error"].startswith("SYSTEM_RUN_LIMIT")


def test_a_malformed_request_gets_a_coded_answer(run_socket: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(run_socket)
        s.sendall(b'{"argv": "not a list"}')
        answer = s.makefile("rb").readline()
    assert answer == b'{"error": "malformed run request", "errno": "EINVAL"}\n'
