"""Start a subprocess and kill *everything* it started: the one kill strategy of the node (issue 16), used by
system.run, the camera capture and the system.notify hook.

Why not just `killpg`: a grandchild that calls `setsid` leaves the group and survived it. So:

- the node is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): an orphan is re-parented to the node,
  never to PID 1, so it stays reachable and its zombie is ours to reap;
- each tree gets a marker in its environment (`EDGECLAW_TREE=<token>`); an orphan re-parented to the node
  is attributed to its tree by that marker, everything below it by parentage (/proc);
- killing a tree = SIGTERM to every member, SIGKILL after a grace, until no member is left;
- zombies re-parented to the node are reaped; only ours: children this module did not start (libuv's,
  Popen's elsewhere) are never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MARKER = "EDGECLAW_TREE"
PR_SET_CHILD_SUBREAPER = 36

_spawn_lock = threading.Lock()  # a fork and its registration happen together: the reaper never sees one half
_leaders: set[int] = set()  # direct children started here and not yet reaped by their owner
_active = 0  # trees alive; unattributed orphans are killed only when none is
_subreaper: bool | None = None


def enable_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (once; False where prctl is refused)."""
    global _subreaper
    if _subreaper is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _subreaper = False
    return _subreaper


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgrp: int
    session: int
    zombie: bool


def stat(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0] == b"Z")


def processes() -> dict[int, ProcInfo]:
    table: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := stat(int(name))) is not None:
            table[info.pid] = info
    return table


def _has_marker(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{MARKER}={marker}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _children_file(pid: int) -> list[int] | None:
    """Direct children from /proc/<pid>/task/*/children (cheap: no scan of the whole /proc); None where the
    kernel has no such file (CONFIG_PROC_CHILDREN off)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread just ended
            return None
        except OSError:
            continue
    return out


def _child_lookup() -> Callable[[int], list[int]]:
    """pid -> its children: from the per-task children files, else from one scan of /proc."""
    if _children_file(os.getpid()) is not None:
        return lambda pid: _children_file(pid) or []
    table: dict[int, list[int]] = {}
    for p in processes().values():
        table.setdefault(p.ppid, []).append(p.pid)
    return lambda pid: table.get(pid, [])


def members(leader: int, marker: str | None, *, leader_alive: bool = True) -> set[int]:
    """Live processes of one tree: the leader (while it is unreaped: afterwards its pid may be reused),
    its descendants, and orphans re-parented to us that belong to it (its group or session, a live id is
    never reused, or its marker) with theirs. Complete because we are the subreaper: whatever the tree
    starts stays below the leader or below us. Zombies are left out (nothing to kill)."""
    me = os.getpid()
    kids = _child_lookup()
    roots = [leader] if leader_alive else []
    for pid in kids(me):
        if pid in _leaders or (info := stat(pid)) is None or info.zombie:
            continue
        if leader in (info.pgrp, info.session) or (marker is not None and _has_marker(pid, marker)):
            roots.append(pid)
    found: set[int] = set()
    stack = roots
    while stack:
        pid = stack.pop()
        if pid in found or pid == me:
            continue
        found.add(pid)
        stack.extend(kids(pid))
    return {p for p in found if (info := stat(p)) is not None and not info.zombie}


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_orphans(*, kill_unattributed: bool = False) -> int:
    """Reap zombies re-parented to this process (never a child someone here is waiting for). With
    `kill_unattributed`, also SIGKILL live orphans whose session leader is gone: what a classic daemonizing
    double fork leaves (no child anyone here started looks like that: ours lead their own session, libuv's
    and Popen's elsewhere share the node's). Catches a run that scrubbed its environment marker; only
    called when the last tree finishes, so a running tree's escapee is not cut short. Returns reaped."""
    if not _spawn_lock.acquire(blocking=False):
        return 0  # a fork is in flight: its child is not registered yet; the next call reaps
    try:
        me, mysession = os.getpid(), os.getsid(0)
        reaped = 0
        orphans = []
        for pid in _child_lookup()(me):
            if pid in _leaders or (p := stat(pid)) is None or p.ppid != me or p.session == mysession:
                continue  # not an orphan of ours: libuv's/Popen's children share the node's session
            orphans.append(p)
        # zombies first: a dead session leader is not gone until reaped
        for p in orphans:
            if p.zombie:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(p.pid, os.WNOHANG)[0]:
                        reaped += 1
        for p in orphans:
            if kill_unattributed and not p.zombie and p.session != p.pid:
                leader = stat(p.session)
                if leader is None or leader.zombie:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p.pid, signal.SIGKILL)
        return reaped
    finally:
        _spawn_lock.release()


class Child:
    """A child started off the event loop (fork/exec blocks the calling thread until the child has
    exec'd; on a busy board that is milliseconds to hundreds of ms), watched on the loop with a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes], marker: str, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = popen.pid
        self.marker = marker
        self.returncode: int | None = None
        self._popen = popen
        self._loop = loop
        self._exited: asyncio.Future[None] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)

    async def watch(self) -> None:
        await add_reader(self._loop, self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        # no lock here: it is held across whole forks in other threads, and this runs on the loop
        _, status = os.waitpid(self.pid, 0)
        _leaders.discard(self.pid)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.returncode  # Popen must not reap it again
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int | None:
        await asyncio.shield(self._exited)
        return self.returncode

    def tree(self) -> set[int]:
        return members(self.pid, self.marker, leader_alive=self.returncode is None)

    def alive(self) -> bool:
        return self.returncode is None or bool(self.tree())


async def add_reader(loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[[], Any]) -> None:
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


def popen(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    executable: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Fork/exec (blocking: call it in a thread) into a new session, stdin /dev/null, with a fresh marker.
    `executable`: the file to run when it differs from argv[0] (argv[0] stays what the caller gave)."""
    enable_subreaper()
    marker = secrets.token_hex(8)
    child_env = dict(os.environ if env is None else env)
    child_env[MARKER] = marker
    with _spawn_lock:
        proc = subprocess.Popen(
            list(argv),
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
        )
        _leaders.add(proc.pid)
    return proc, marker


async def start(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    executable: str | None = None,
) -> tuple[Child, int | None, int | None]:
    """Start and watch a child; returns it with raw read fds of its piped streams (the caller closes them).
    Raises OSError when it cannot start. Cancelled while forking: the new tree is killed, never leaked."""
    global _active
    loop = asyncio.get_running_loop()
    spawning = asyncio.ensure_future(
        asyncio.to_thread(popen, argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, executable=executable)
    )
    try:
        proc, marker = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # the fork finishes in its thread, and what it started may already have forked on (even setsid):
        # wait for it and kill the whole tree before the cancel goes on; cancelled again, best effort
        try:
            proc, marker = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            spawning.add_done_callback(_abandon)
            raise
        except Exception:
            raise asyncio.CancelledError from None
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        child = Child(proc, marker, loop)
        _active += 1
        try:
            await child.watch()
            await kill_tree(child, 0.0)
        finally:
            finish(child)
        raise
    fds: list[int | None] = []
    for pipe in (proc.stdout, proc.stderr):
        fds.append(os.dup(pipe.fileno()) if pipe is not None else None)
        if pipe is not None:
            pipe.close()
    child = Child(proc, marker, loop)
    _active += 1
    try:
        await child.watch()
    except BaseException:
        _active -= 1
        _signal_all({child.pid}, signal.SIGKILL)
        for fd in fds:
            if fd is not None:
                os.close(fd)
        raise
    return child, fds[0], fds[1]


def _abandon(spawning: asyncio.Future[tuple[subprocess.Popen[bytes], str]]) -> None:
    if spawning.cancelled() or spawning.exception() is not None:
        return
    proc, _ = spawning.result()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    # its zombie is left to reap_orphans (no blocking wait on the loop); Popen must not wait for it
    proc.returncode = -signal.SIGKILL
    _leaders.discard(proc.pid)


async def kill_tree(child: Child, grace: float) -> None:
    """SIGTERM every member, SIGKILL whatever is left after `grace`, until none is left (bounded); reap
    the leader and the orphans. Safe to call twice. A cancel while it runs (the gateway's cancel and the
    dispatcher's deadline can land one after the other) is deferred until the tree is gone, then
    re-raised: a kill cut short in its grace left the whole tree running."""
    killing = asyncio.ensure_future(_kill_tree(child, grace))
    cancelled = False
    while not killing.done():
        try:
            await asyncio.shield(killing)
        except asyncio.CancelledError:
            cancelled = True
    killing.result()
    if cancelled:
        raise asyncio.CancelledError


async def _kill_tree(child: Child, grace: float) -> None:
    loop = asyncio.get_running_loop()
    _signal_all(child.tree(), signal.SIGTERM)
    end = loop.time() + grace
    try:
        while loop.time() < end and child.alive():
            await asyncio.sleep(0.02)
    finally:
        _signal_all(child.tree(), signal.SIGKILL)
    end = loop.time() + 3.0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(child.wait(), 3.0)
    # SIGKILL is asynchronous, and a member may fork while we look: repeat until the tree is empty, so
    # the caller's result never arrives while a piece of it still exists
    while (left := child.tree()) and loop.time() < end:
        _signal_all(left, signal.SIGKILL)
        await asyncio.sleep(0.02)
        reap_orphans()


def finish(child: Child) -> None:
    """The tree's owner is done with it: reap its orphans' zombies; the last tree out also kills
    orphans nobody claims."""
    global _active
    _active = max(0, _active - 1)
    reap_orphans(kill_unattributed=_active == 0)


async def read_fd(fd: int, sink: Callable[[bytes], None]) -> None:
    """Feed everything readable from `fd` to `sink` until EOF, on the loop (non-blocking); closes `fd`."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)
            return
        sink(chunk)

    try:
        await add_reader(loop, fd, readable)
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def communicate(
    argv: Sequence[str],
    *,
    timeout: float,
    grace: float,
    env: dict[str, str] | None = None,
    stdout: bool = True,
) -> tuple[int, bytes, bytes]:
    """Run to completion within `timeout` seconds, collecting stdout (unless False: /dev/null) and stderr.
    Raises TimeoutError, and re-raises CancelledError, only after the whole tree is dead; OSError when
    it cannot start. Used by the camera capture and the system.notify hook."""
    child, out_fd, err_fd = await start(
        argv, env=env, stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    out, err = bytearray(), bytearray()
    readers = [read_fd(err_fd, err.extend)] if err_fd is not None else []
    if out_fd is not None:
        readers.append(read_fd(out_fd, out.extend))
    pumps = asyncio.gather(*readers)
    try:
        try:
            await asyncio.wait_for(child.wait(), timeout)
        finally:
            if child.alive():  # timed out, cancelled, or the leader left helpers behind
                await kill_tree(child, grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), 2.0)
    finally:
        if not pumps.done():
            pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
        finish(child)
    assert child.returncode is not None
    return child.returncode, bytes(out), bytes(err)
