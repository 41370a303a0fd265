"""Run one command on a small board without letting it hurt the node.

- its own session and process group, stdin from /dev/null, no shell unless argv is one;
- stdout and stderr read concurrently in fixed-size chunks; only the first `cap` bytes of each are kept,
  the rest is counted and dropped, so memory stays bounded whatever the process writes;
- at the params timeout, the invoke deadline, a cancel, or when the leader exits leaving children behind,
  the whole group gets SIGTERM, then SIGKILL after a grace, and the leader is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

CHUNK = 64 * 1024
TIMEOUT_EXIT_CODE = 124  # what `timeout(1)` and OpenClaw's node host report for a params timeout
TRUNCATED_MARK = "\n... (truncated)"


@dataclass
class RunResult:
    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    error: str | None
    truncated: bool = False
    deadline_hit: bool = False
    pgid: int | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


class _Capture:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        out = bytes(self.data).decode("utf-8", "replace")
        if self.dropped:
            if out.endswith("\ufffd"):
                out = out.rstrip("\ufffd")  # a multi-byte character cut at the cap
            out += TRUNCATED_MARK
        return out


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Child:
    """A child started off the event loop (fork/exec blocks the calling thread until the child has
    exec'd; on a busy board that is milliseconds to hundreds of ms), watched on the loop with raw fds:
    a pidfd for its exit, non-blocking reads for its pipes. No transports: nothing to leak or race."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.pid = popen.pid
        self.returncode: int | None = None
        self._popen = popen
        self._loop = loop
        self._exited: asyncio.Future[None] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)

    async def watch(self) -> None:
        await _add_reader(self._loop, self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.returncode  # Popen must not reap it again
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int | None:
        await asyncio.shield(self._exited)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


async def _add_reader(loop: asyncio.AbstractEventLoop, fd: int, callback: Any) -> None:
    """loop.add_reader, tolerating a reused fd number: uvloop refuses an fd that a just-closed
    transport still holds until its close completes, a loop tick or so later."""
    for attempt in range(50):
        try:
            loop.add_reader(fd, callback)
            return
        except RuntimeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.001 * attempt)


async def _pump_fd(fd: int, capture: _Capture) -> None:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)
            return
        capture.feed(chunk)

    try:
        await _add_reader(loop, fd, readable)
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _spawn(
    argv: list[str], cwd: str | None, env: dict[str, str], executable: str | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        executable=executable,  # the file the approvals checked; argv[0] stays what the caller gave
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


def _abandon(spawning: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A run cancelled while its process was being started: kill the new group, close its pipes.
    (subprocess reaps the zombie on its next use.)"""
    if spawning.cancelled() or spawning.exception() is not None:
        return
    popen = spawning.result()
    _signal_group(popen.pid, signal.SIGKILL)
    for pipe in (popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()


async def kill_group(proc: _Child, pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL whatever is left after `grace`, reap the leader. Safe to call twice."""
    _signal_group(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    end = loop.time() + grace
    try:
        while loop.time() < end:
            if proc.returncode is not None and not group_alive(pgid):
                return
            await asyncio.sleep(0.02)
    finally:
        # also reached when this cleanup itself is cancelled: never leave survivors
        _signal_group(pgid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()
    # SIGKILL is asynchronous: wait (bounded) until every member has died and been reaped, so the
    # caller's result never arrives while a piece of the group still exists
    end = loop.time() + 2.0
    while group_alive(pgid) and loop.time() < end:
        await asyncio.sleep(0.02)


def _launch_error(exc: OSError, cwd: str | None) -> str:
    code = errno.errorcode.get(exc.errno or 0, "EUNKNOWN")
    if cwd and exc.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(cwd):
        return f"node exec working directory does not exist on the node host: {cwd} ({code})"
    return f"Command failed during launch or output capture ({code})"


async def run_process(
    argv: list[str],
    *,
    executable: str | None = None,
    cwd: str | None,
    env: dict[str, str],
    timeout: float | None,
    deadline: float,
    cap: int,
    grace: float,
) -> RunResult:
    """Run to completion, or until `timeout` seconds (params) or loop-time `deadline` (invoke) passes."""
    loop = asyncio.get_running_loop()
    spawning = asyncio.ensure_future(asyncio.to_thread(_spawn, argv, cwd, env, executable))
    try:
        popen = await asyncio.shield(spawning)
    except OSError as exc:
        return RunResult(None, False, "", "", _launch_error(exc, cwd))
    except asyncio.CancelledError:
        spawning.add_done_callback(_abandon)  # the fork finishes in its thread: never leave that child
        raise
    assert popen.stdout is not None and popen.stderr is not None
    out_fd, err_fd = os.dup(popen.stdout.fileno()), os.dup(popen.stderr.fileno())
    popen.stdout.close()
    popen.stderr.close()
    proc = _Child(popen, loop)
    try:
        await proc.watch()
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)
        os.close(out_fd)
        os.close(err_fd)
        raise
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    out, err = _Capture(cap), _Capture(cap)
    pumps = asyncio.gather(_pump_fd(out_fd, out), _pump_fd(err_fd, err))
    limit = deadline - loop.time()
    params_limit = timeout if timeout is not None and timeout > 0 else None
    wait_for = min(limit, params_limit) if params_limit is not None else limit
    timed_out = deadline_hit = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), max(0.0, wait_for))
        except TimeoutError:
            if params_limit is not None and params_limit <= limit:
                timed_out = True
            else:
                deadline_hit = True
            await kill_group(proc, pgid, grace)
        else:
            if group_alive(pgid):
                # the leader is gone but left children (maybe holding our pipes): they go too
                await kill_group(proc, pgid, grace)
        try:
            await asyncio.wait_for(asyncio.shield(pumps), 2.0)
        except TimeoutError:
            pumps.cancel()  # a process outside the group still holds the pipe: stop reading
    finally:
        if proc.returncode is None or group_alive(pgid):
            await kill_group(proc, pgid, grace)
        if not pumps.done():
            pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
    exit_code: int | None = proc.returncode
    if exit_code is not None and exit_code < 0:
        exit_code = 128 - exit_code  # killed by a signal: report it the way a shell would
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
    return RunResult(
        exit_code=exit_code,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        error=None,
        truncated=bool(out.dropped or err.dropped),
        deadline_hit=deadline_hit,
        pgid=pgid,
    )
