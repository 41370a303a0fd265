"""Run one command on a small board without letting it hurt the node.

- its own session and process group, stdin from /dev/null, no shell unless argv is one;
- its own empty HOME (a temp dir removed afterwards), never the node's: under systemd the node's HOME is
  its state directory, and `sh -lc` would run a `.profile` planted there;
- stdout and stderr read concurrently in fixed-size chunks; only the first `cap` bytes of each are kept,
  the rest is counted and dropped, so memory stays bounded whatever the process writes;
- at the params timeout, the invoke deadline, a cancel, or when the leader exits leaving children behind,
  everything it started gets SIGTERM, then SIGKILL after a grace, `setsid` escapes included
  (edgeclaw.platform.procgroup), and the leader is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass

from edgeclaw.platform import procgroup

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
        await procgroup.add_reader(loop, fd, readable)
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


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
    home = await asyncio.to_thread(tempfile.mkdtemp, prefix="edgeclaw-run-")
    env = {**env, "HOME": home}
    try:
        try:
            proc, out_fd, err_fd = await procgroup.start(argv, cwd=cwd, env=env, executable=executable)
        except OSError as exc:
            return RunResult(None, False, "", "", _launch_error(exc, cwd))
        assert out_fd is not None and err_fd is not None
        try:
            return await _supervise(proc, out_fd, err_fd, timeout, deadline, cap, grace)
        finally:
            procgroup.finish(proc)
    finally:
        await asyncio.to_thread(shutil.rmtree, home, True)


async def _supervise(
    proc: procgroup.Child,
    out_fd: int,
    err_fd: int,
    timeout: float | None,
    deadline: float,
    cap: int,
    grace: float,
) -> RunResult:
    loop = asyncio.get_running_loop()
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
            await procgroup.kill_tree(proc, grace)
        else:
            if proc.alive():
                # the leader is gone but left children (maybe holding our pipes): they go too
                await procgroup.kill_tree(proc, grace)
        try:
            await asyncio.wait_for(asyncio.shield(pumps), 2.0)
        except TimeoutError:
            pumps.cancel()  # a process outside the tree still holds the pipe: stop reading
    finally:
        if proc.alive():
            await procgroup.kill_tree(proc, grace)
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
        pgid=proc.pid,
    )
