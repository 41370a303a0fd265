"""The `node.host.stats` payload the gateway shows in `nodes status` (sent at connect and every 60 s)."""

from __future__ import annotations

import contextlib
import os
from typing import Any


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def host_stats(disk_path: str = "/") -> dict[str, Any]:
    mem = _meminfo()
    total = mem.get("MemTotal", 0)
    free = min(mem.get("MemAvailable", mem.get("MemFree", 0)), total)
    stats: dict[str, Any] = {
        "cpuCount": os.cpu_count() or 1,
        "memoryTotalBytes": total,
        "memoryFreeBytes": free,
    }
    with contextlib.suppress(OSError):
        stats["loadAverage"] = [round(x, 2) for x in os.getloadavg()]
    try:
        st = os.statvfs(disk_path)
        stats["diskTotalBytes"] = st.f_blocks * st.f_frsize
        stats["diskAvailableBytes"] = st.f_bavail * st.f_frsize
    except OSError:
        pass
    return stats
