"""The in-process runner (no systemd) contains what a run starts: a grandchild that leaves the process group
with `setsid` is still killed at the timeout, a cancel and the leader's exit; runs never get the state
directory as HOME, so a planted `$HOME/.profile` never runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.shell.process import run_process
from tests.unit.test_shell_run import FULL, ctx, make

ESCAPE = "setsid sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 300' & "


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.fixture
def escaped() -> Iterator[list[int]]:
    """pids the test's command started outside its group; killed at the end if the runner did not."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _pid(pidfile: Path) -> int:
    for _ in range(250):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError("the escaping grandchild never started")


async def _run(script: str, *, timeout: float | None, env: dict[str, str] | None = None) -> Any:
    loop = asyncio.get_running_loop()
    return await run_process(
        ["sh", "-c", script],
        cwd=None,
        env=dict(os.environ) if env is None else env,
        timeout=timeout,
        deadline=loop.time() + 30,
        cap=10_000,
        grace=0.3,
    )


async def test_setsid_grandchild_is_killed_at_the_timeout(tmp_path: Path, escaped: list[int]) -> None:
    pidfile = tmp_path / "pid"
    result = await _run(ESCAPE.format(pidfile=pidfile) + "sleep 300", timeout=1.0)
    escaped.append(await _pid(pidfile))
    assert result.timed_out and result.exit_code == 124
    assert not alive(escaped[0]), "the setsid grandchild survived the timeout"


async def test_setsid_grandchild_is_killed_on_cancel(tmp_path: Path, escaped: list[int]) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(_run(ESCAPE.format(pidfile=pidfile) + "sleep 300", timeout=None))
    escaped.append(await _pid(pidfile))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not alive(escaped[0]), "the setsid grandchild survived the cancel"


async def test_a_second_cancel_during_the_kill_grace_does_not_leave_the_tree_behind(
    tmp_path: Path, escaped: list[int]
) -> None:
    """The gateway's cancel and the dispatcher's deadline can land one after the other: the second
    cancel arrives while the first one's kill waits out its grace for a TERM-ignoring tree."""
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(
        _run(ESCAPE.format(pidfile=pidfile) + "trap '' TERM; sleep 300", timeout=None)
    )
    escaped.append(await _pid(pidfile))
    task.cancel()
    await asyncio.sleep(0.1)  # inside kill_tree's 0.3 s grace: the tree ignores SIGTERM
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not Path(f"/proc/{escaped[0]}").exists(), "the grandchild is still there (alive or unreaped)"


async def test_daemonized_grandchild_dies_with_its_run(tmp_path: Path, escaped: list[int]) -> None:
    # the leader exits at once; its setsid child double-forks away from it and scrubs its environment
    pidfile = tmp_path / "pid"
    script = f"setsid sh -c 'env -i /bin/sh -c \"echo \\$\\$ > {pidfile}; exec sleep 300\" &' ; sleep 0.3"
    result = await _run(script, timeout=10)
    escaped.append(await _pid(pidfile))
    assert result.exit_code == 0
    assert not alive(escaped[0]), "a daemonized grandchild outlived its run"


async def test_run_home_is_not_the_state_dir_and_its_profile_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # under systemd the service user's home is its state directory
    monkeypatch.setenv("HOME", str(state))
    (state / ".profile").write_text(f"touch {state}/profile-ran\n")
    h, _ = await make(state, approvals=FULL)
    out = await h["system.run"](ctx({"command": ["/bin/sh", "-lc", 'echo "$HOME"; ls -A "$HOME"']}))
    assert out["success"], out
    home = out["stdout"].splitlines()[0]
    assert Path(home).resolve() != state.resolve()
    assert out["stdout"].splitlines()[1:] == [], "a run's HOME must start empty"
    assert not (state / "profile-ran").exists(), "$HOME/.profile from the state directory ran"
    assert not Path(home).exists(), "the run's HOME outlived the run"


# --- the same kill strategy for the camera capture and the notify hook (issue 16) --------------------------
async def test_notify_hook_timeout_kills_its_whole_tree(tmp_path: Path, escaped: list[int]) -> None:
    from edgeclaw.capabilities.base import InvokeContext, InvokeError
    from edgeclaw.capabilities.system import Config as SystemConfig
    from edgeclaw.capabilities.system.notify import handle_notify

    pidfile = tmp_path / "pid"
    hook = ["/bin/sh", "-c", f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait"]
    config = SystemConfig(notify_hook=hook, notify_hook_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    call = InvokeContext("i", "system.notify", {"title": "t"}, loop.time() + 30, 30_000)
    with pytest.raises(InvokeError) as exc:
        await handle_notify(call, config)
    escaped.append(await _pid(pidfile))
    assert exc.value.code == "NOTIFICATIONS_UNAVAILABLE" and "timed out" in exc.value.message
    assert not alive(escaped[0]), "the notify hook's child outlived the hook's timeout"


async def test_camera_capture_timeout_kills_a_helper_that_left_the_group(
    tmp_path: Path, escaped: list[int]
) -> None:
    from edgeclaw.capabilities.camera import proc

    pidfile = tmp_path / "pid"
    with pytest.raises(proc.CaptureTimeout):
        await proc.run(["/bin/sh", "-c", ESCAPE.format(pidfile=pidfile) + "sleep 300"], timeout=1.0)
    escaped.append(await _pid(pidfile))
    assert not alive(escaped[0]), "a capture helper that called setsid outlived the capture"


async def test_orphaned_zombies_of_a_run_are_reaped_by_the_node() -> None:
    # `exec` leaves the exited background children un-waited; when the leader exits they are re-parented
    # to the node (a subreaper): months of such runs must not pile up zombies against TasksMax
    script = "for i in 1 2 3 4 5; do sh -c 'sleep 0.1' & done; exec sleep 0.5"
    result = await _run(script, timeout=10)
    assert result.exit_code == 0
    me = os.getpid()
    zombies = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{name}/stat").read_text()
                fields = stat[stat.rfind(")") + 2 :].split()
                if fields[0] == "Z" and int(fields[1]) == me:
                    zombies.append(int(name))
    assert zombies == [], f"zombies left in the node: {zombies}"
