"""Run one capture subprocess with a hard deadline; on timeout or cancellation its whole process group
is killed and reaped, so a hung camera stack never outlives the invoke that started it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.platform import procgroup

log = logging.getLogger("edgeclaw.camera")

STDERR_TAIL = 2000
KILL_GRACE_S = 0.5  # a capture stack gets SIGTERM first, so a camera is released cleanly where possible


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str


class CaptureTimeout(Exception):
    """The subprocess was still running at its deadline and has been killed."""


async def run(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Finished:
    """Run `argv`, collecting stdout (the image, when a backend writes to a pipe) and a stderr tail.

    Raises CaptureTimeout after `timeout` seconds, InvokeError(CAMERA_UNAVAILABLE) when the program is
    missing, and re-raises CancelledError — each time after everything it started is dead (the node's
    one kill strategy, edgeclaw.platform.procgroup: helpers that left the group included).
    """
    if timeout <= 0:
        raise CaptureTimeout()
    log.debug("camera: starting %s", " ".join(argv))
    try:
        code, stdout, stderr = await procgroup.communicate(argv, timeout=timeout, grace=KILL_GRACE_S, env=env)
    except FileNotFoundError:
        raise InvokeError("CAMERA_UNAVAILABLE", f"{argv[0]} is not installed") from None
    except PermissionError:
        raise InvokeError("CAMERA_UNAVAILABLE", f"{argv[0]} is not executable") from None
    except TimeoutError:
        log.warning("camera: %s still running after %.1f s; killed", os.path.basename(argv[0]), timeout)
        raise CaptureTimeout() from None
    except asyncio.CancelledError:
        log.info("camera: capture cancelled; its processes were killed")
        raise
    return Finished(code, stdout, stderr.decode("utf-8", "replace")[-STDERR_TAIL:])
