"""The `node.host.stats` payload the gateway shows in `nodes status` (sent at connect and every 60 s).

The gateway validates it against a CLOSED schema (NodeHostStatsPayloadSchema in its dist/nodes-*.mjs:
cpuCount 1..4096, loadAverage 3 numbers 0..1e5, memory and disk byte counts with free <= total and the
disk pair both present or both absent) and drops anything else. Board health (temperature, throttling,
SD wear) therefore goes to device.status and edgeclaw.doctor, never here
(tests/gateway/test_hoststats_schema.py checks this payload against the installed gateway's schema)."""

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
        "cpuCount": min(max(os.cpu_count() or 1, 1), 4096),
        "memoryTotalBytes": total,
        "memoryFreeBytes": free,
    }
    with contextlib.suppress(OSError):
        stats["loadAverage"] = [min(max(round(x, 2), 0.0), 1e5) for x in os.getloadavg()]
    try:
        st = os.statvfs(disk_path)
        disk_total = st.f_blocks * st.f_frsize
        stats["diskTotalBytes"] = disk_total
        stats["diskAvailableBytes"] = min(st.f_bavail * st.f_frsize, disk_total)
    except OSError:
        pass
    return stats
