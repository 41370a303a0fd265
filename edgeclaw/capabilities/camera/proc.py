"""Run one capture subprocess with a hard deadline; on timeout or cancellation its whole process group
is killed and reaped, so a hung camera stack never outlives the invoke that started it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from edgeclaw.capabilities.base import InvokeError

log = logging.getLogger("edgeclaw.camera")

STDERR_TAIL = 2000


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str


class CaptureTimeout(Exception):
    """The subprocess was still running at its deadline and has been killed."""


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 5.0)


async def run(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Finished:
    """Run `argv`, collecting stdout (the image, when a backend writes to a pipe) and a stderr tail.

    Raises CaptureTimeout after `timeout` seconds, InvokeError(CAMERA_UNAVAILABLE) when the program is
    missing, and re-raises CancelledError — each time after the process group is dead.
    """
    if timeout <= 0:
        raise CaptureTimeout()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own group: killpg reaches helpers it spawns (ffmpeg under rpicam)
        )
    except FileNotFoundError:
        raise InvokeError("CAMERA_UNAVAILABLE", f"{argv[0]} is not installed") from None
    except PermissionError:
        raise InvokeError("CAMERA_UNAVAILABLE", f"{argv[0]} is not executable") from None
    log.debug("camera: started pid %s: %s", proc.pid, " ".join(argv))
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        log.warning("camera: %s still running after %.1f s; killed", os.path.basename(argv[0]), timeout)
        _kill_group(proc)
        await _reap(proc)
        raise CaptureTimeout() from None
    except asyncio.CancelledError:
        log.info("camera: capture cancelled; killing pid %s", proc.pid)
        _kill_group(proc)
        await _reap(proc)
        raise
    # a helper that the main process left behind in its group dies with it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode is not None
    return Finished(proc.returncode, stdout, stderr.decode("utf-8", "replace")[-STDERR_TAIL:])
