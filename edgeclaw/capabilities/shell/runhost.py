"""The contained side of system.run: `python -m edgeclaw.capabilities.shell.runhost`, started by systemd
for each connection to edgeclaw-run.socket (Accept=yes, edgeclaw-run@.service) as the unprivileged user
`edgeclaw-run`, in its own cgroup, with its own limits. Standard library only, blocking, one run.

Protocol (the node is the only peer: the socket is 0600 and owned by the node's user):
  node → host   one datagram-like message: a JSON request {"argv", "executable", "env", "cwd"} with two fds
                attached
                (SCM_RIGHTS): the write ends of the run's stdout and stderr pipes;
  host → node   JSON lines: {"started": pid} or {"error": text, "errno": name}, then {"exit": code,
                "oom": bool} once the command and everything it started are gone;
  node → host   "k" (or EOF: the node went away): kill everything, then answer {"exit": …}.
The node does all the reading and timing; this process only starts, watches and kills.
When it exits, systemd stops the unit and kills whatever is left in the unit's cgroup, setsid or not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from edgeclaw.platform import procgroup

MAX_REQUEST = 1 << 20
GRACE_S = 2.0


def _send(conn: socket.socket, doc: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the node went away: the unit's stop cleans up
        conn.sendall(json.dumps(doc).encode() + b"\n")


def _oom_kills() -> int:
    """memory.events oom_kill of this unit's cgroup (cgroup v2 only; 0 where unknown)."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
        events = Path("/sys/fs/cgroup", line[3:].lstrip("/"), "memory.events").read_text()
    except (OSError, StopIteration):
        return 0
    for entry in events.splitlines():
        key, _, value = entry.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def _environment(requested: dict[str, str]) -> dict[str, str]:
    """The node's approved environment, with this unit's identity: HOME, USER and LOGNAME are ours."""
    env = {k: v for k, v in requested.items() if isinstance(k, str) and isinstance(v, str)}
    user = pwd.getpwuid(os.getuid())
    env["HOME"] = os.environ.get("HOME") or "/tmp"
    env["USER"] = env["LOGNAME"] = user.pw_name
    return env


def _cgroup(pid: int | str) -> str | None:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None


def _own_unit(cgroup: str) -> bool:
    """Only a cgroup that is this run's own unit may be emptied (started by hand, we share one)."""
    return any(
        line.rsplit("/", 1)[-1].startswith("edgeclaw-run@") and line.endswith(".service")
        for line in cgroup.splitlines()
    )


def _left(leader: int, marker: str, unreaped: bool) -> set[int]:
    """What the run still has: its tree, and anything else in this unit's cgroup (each run has its own
    cgroup; concurrent runs share the uid, so the uid alone would be wrong)."""
    me, mine = os.getpid(), _cgroup("self")
    same_cgroup: set[int] = set()
    if mine and _own_unit(mine):
        same_cgroup = {p for p in procgroup.processes() if p != me and _cgroup(p) == mine}
    return (procgroup.members(leader, marker, leader_alive=unreaped) | same_cgroup) - {me}


def _kill_all(leader: int, marker: str, grace: float, *, unreaped: bool) -> None:
    """`unreaped`: the leader has not been waited for, so its pid is still its own (dead or alive)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in _left(leader, marker, unreaped):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            procgroup.reap_orphans()
            if not {p for p in _left(leader, marker, unreaped) if not _zombie(p)}:
                _reap_all()
                return
            time.sleep(0.02)


def _reap_all() -> None:
    """Dead is not gone until reaped: a zombie still shows in `ps` as the run's user."""
    end = time.monotonic() + 2.0
    while procgroup.reap_orphans() or _zombie_children():
        if time.monotonic() > end:
            return
        time.sleep(0.01)


def _zombie_children() -> bool:
    me = os.getpid()
    return any(p.ppid == me and p.zombie for p in procgroup.processes().values())


def _zombie(pid: int) -> bool:
    info = procgroup.stat(pid)
    return info is None or info.zombie


def serve(conn: socket.socket, grace: float = GRACE_S) -> int:
    try:
        msg, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 2)
    except OSError:
        return 2  # the node went away before asking anything
    try:
        req = json.loads(msg)
        argv, env, cwd = req["argv"], _environment(req.get("env") or {}), req.get("cwd")
        if len(fds) != 2 or not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ValueError("bad request")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("bad cwd")
        executable = req.get("executable")  # the file the approvals checked; argv[0] stays as given
        if executable is not None and not isinstance(executable, str):
            raise ValueError("bad executable")
    except (ValueError, KeyError, TypeError, AttributeError):
        for fd in fds:
            os.close(fd)
        _send(conn, {"error": "malformed run request", "errno": "EINVAL"})
        return 2
    try:
        proc, marker = procgroup.popen(
            argv, cwd=cwd, env=env, stdout=fds[0], stderr=fds[1], executable=executable
        )
    except OSError as exc:
        _send(
            conn, {"error": exc.strerror or "launch failed", "errno": errno.errorcode.get(exc.errno or 0, "")}
        )
        return 0
    finally:
        for fd in fds:
            os.close(fd)
    _send(conn, {"started": proc.pid})
    oom_before = _oom_kills()
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ)
    sel.register(conn, selectors.EVENT_READ)
    killed = False
    while proc.returncode is None:
        for key, _ in sel.select():
            if key.fd == pidfd:
                proc.wait()
            elif not killed:
                try:
                    data = conn.recv(16)
                except OSError:
                    data = b""
                if not data or b"k" in data:
                    killed = True
                    sel.unregister(conn)
                    _kill_all(proc.pid, marker, grace, unreaped=True)
    os.close(pidfd)
    # the leader is gone: whatever it left behind (setsid or not) goes before the answer
    _kill_all(proc.pid, marker, grace, unreaped=False)
    _send(conn, {"exit": proc.returncode, "oom": _oom_kills() > oom_before, "killed": killed})
    return 0


def main() -> int:
    """stdin is the accepted connection (StandardInput=socket)."""
    procgroup.enable_subreaper()
    conn = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
