"""The live side of device.*: the real root, the node's counters, vcgencmd and the kernel clock state."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.device.health import THROTTLED_SYSFS, StatusSources, read_status
from edgeclaw.capabilities.device.info import read_info

if TYPE_CHECKING:
    from edgeclaw.capabilities.base import NodeServices
    from edgeclaw.capabilities.device import Config

log = logging.getLogger("edgeclaw.device")
ROOT = Path("/")


def info(services: NodeServices) -> dict[str, Any]:
    return read_info(ROOT, capabilities=_capabilities(services))


async def status(services: NodeServices, config: Config, *, timeout: float = 3.0) -> dict[str, Any]:
    sources = StatusSources(
        vcgencmd_throttled=await _vcgencmd_throttled(config.vcgencmd, timeout),
        clock_state=kernel_clock_state(),
        clk_tck=os.sysconf("SC_CLK_TCK"),
    )
    paths = {"root": "/", "state_dir": str(services.state_dir)}
    return read_status(ROOT, disk_paths=paths, sources=sources, counters=services.node_snapshot())


def _capabilities(services: NodeServices) -> list[str]:
    snapshot = services.node_snapshot()
    return list(snapshot.get("capabilities", []))


async def _vcgencmd_throttled(binary: str, timeout: float) -> str | None:
    """Only when the kernel has no sysfs get_throttled (older firmware drivers); needs the `video` group."""
    if not binary or (ROOT / THROTTLED_SYSFS).exists():
        return None
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "get_throttled", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError as exc:
        log.debug("vcgencmd did not start: %s", exc)
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode("ascii", "replace") if proc.returncode == 0 else None


def kernel_clock_state() -> int | None:
    """adjtimex(2) in read-only mode: 5 (TIME_ERROR) while the clock is not NTP-synchronised."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0 reads only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return state if state >= 0 else None
