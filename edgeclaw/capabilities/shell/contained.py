"""The node's side of a contained run: hand the approved argv/env/cwd to edgeclaw-run.socket (systemd starts
edgeclaw-run@.service for the connection, as user edgeclaw-run, in its own cgroup), keep the reading and the
timing here. The run's stdout/stderr are pipes the node creates and passes over the socket, so capture,
caps and truncation are exactly the in-process runner's.

Which runner is used: `shell.isolation` — `systemd` always contained, `inprocess` never, `auto` contained
when the run socket exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat

from edgeclaw.capabilities.shell.process import TIMEOUT_EXIT_CODE, RunResult, _Capture, _pump_fd

RUN_SOCKET = "/run/edgeclaw-run.sock"
LIMIT_ERROR = "SYSTEM_RUN_LIMIT: the command hit the run unit's memory limit and was killed"


def socket_present(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def active_isolation(mode: str, path: str) -> str:
    """`systemd` or `inprocess`: what a run started now would use."""
    if mode == "auto":
        return "systemd" if socket_present(path) else "inprocess"
    return mode


def describe(mode: str, path: str) -> tuple[str, bool]:
    """A one-line account of how runs are contained now, for `edgeclaw status` and `edgeclaw doctor`;
    False when runs will fail (isolation forced to systemd, socket missing)."""
    active = active_isolation(mode, path)
    if active == "systemd" and not socket_present(path):
        return f"systemd (forced), but {path} is missing: every system.run fails UNAVAILABLE", False
    if active == "systemd":
        return f"systemd: each run as edgeclaw-run in its own edgeclaw-run@.service (via {path})", True
    why = "forced by shell.isolation" if mode == "inprocess" else f"no {path}"
    return f"inprocess ({why}): runs are children of the node, killed as a tree, HOME a temp dir", True


class Unavailable(Exception):
    """The run unit could not take the run (socket missing, refused, start limit hit)."""


def _connect(path: str, request: bytes, fds: list[int]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect(path)
        socket.send_fds(sock, [request], fds)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    async def next(self) -> dict[str, object] | None:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buf:
            try:
                chunk = await loop.sock_recv(self.sock, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        doc = json.loads(line)
        return doc if isinstance(doc, dict) else None


async def run_contained(
    argv: list[str],
    *,
    executable: str | None = None,
    cwd: str | None,
    env: dict[str, str],
    timeout: float | None,
    deadline: float,
    cap: int,
    grace: float,
    path: str = RUN_SOCKET,
) -> RunResult:
    """Like process.run_process, in a systemd run unit. Raises Unavailable when the unit cannot be reached."""
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request = json.dumps({"argv": argv, "executable": executable, "env": env, "cwd": cwd}).encode()
    try:
        sock = await asyncio.to_thread(_connect, path, request, [out_w, err_w])
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        raise Unavailable(f"run unit unavailable at {path}: {exc.strerror or exc}") from None
    finally:
        os.close(out_w)
        os.close(err_w)
    out, err = _Capture(cap), _Capture(cap)
    pumps = asyncio.gather(_pump_fd(out_r, out), _pump_fd(err_r, err))
    lines = _Lines(sock)
    timed_out = deadline_hit = False
    end: dict[str, object] | None = None
    try:
        first = await asyncio.wait_for(lines.next(), max(0.1, deadline - loop.time()))
        if first is None or "error" in first:
            text = str((first or {}).get("error") or "the run unit closed the connection")
            code = str((first or {}).get("errno") or "EUNKNOWN")
            return RunResult(
                None, False, "", "", f"Command failed during launch or output capture ({code}): {text}"
            )
        limit = deadline - loop.time()
        params_limit = timeout if timeout is not None and timeout > 0 else None
        wait_for = min(limit, params_limit) if params_limit is not None else limit
        try:
            end = await asyncio.wait_for(lines.next(), max(0.0, wait_for))
        except TimeoutError:
            if params_limit is not None and params_limit <= limit:
                timed_out = True
            else:
                deadline_hit = True
            end = await _kill(sock, lines, grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), 2.0)
    except TimeoutError:
        deadline_hit = True
        end = await _kill(sock, lines, grace)
    except asyncio.CancelledError:
        await _kill(sock, lines, grace)
        raise
    finally:
        sock.close()  # EOF: the host kills what is left; systemd stops the unit and its cgroup
        if not pumps.done():
            pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
    raw = (end or {}).get("exit")
    exit_code = raw if isinstance(raw, int) else None
    if exit_code is not None and exit_code < 0:
        exit_code = 128 - exit_code
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
    return RunResult(
        exit_code=exit_code,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        error=LIMIT_ERROR if (end or {}).get("oom") else None,
        truncated=bool(out.dropped or err.dropped),
        deadline_hit=deadline_hit,
    )


async def _kill(sock: socket.socket, lines: _Lines, grace: float) -> dict[str, object] | None:
    """Ask the host to kill everything and wait (bounded) for its answer: the result never arrives while a
    piece of the run still exists. Completes even when the caller is being cancelled."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        await loop.sock_sendall(sock, b"k")
    try:
        return await asyncio.shield(asyncio.wait_for(lines.next(), grace + 5.0))
    except (TimeoutError, asyncio.CancelledError, ValueError):
        return None
