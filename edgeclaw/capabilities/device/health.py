"""device.status: the board's health right now, read from procfs/sysfs under a root path.

A field is present when the board has it and absent when it does not: a Pi without Wi-Fi has no
`wifi`, a PC has no `throttling`, a board without swap has no `swap`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.device.procfs import (
    exists,
    key_values,
    list_dir,
    meminfo_bytes,
    read_float,
    read_int,
    read_text,
)

THROTTLED_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"

# Bits of the firmware's get_throttled word (Raspberry Pi documentation, `vcgencmd get_throttled`).
THROTTLE_FLAGS: dict[str, int] = {
    "under_voltage_now": 0,
    "frequency_capped_now": 1,
    "throttled_now": 2,
    "soft_temp_limit_now": 3,
    "under_voltage_since_boot": 16,
    "frequency_capped_since_boot": 17,
    "throttled_since_boot": 18,
    "soft_temp_limit_since_boot": 19,
}

# eMMC 5.0 EXT_CSD: DEVICE_LIFE_TIME_EST_TYP_A/B in steps of 10 % used; PRE_EOL_INFO of the reserved blocks.
_PRE_EOL = {1: "normal", 2: "warning", 3: "urgent"}
TIME_ERROR = 5  # adjtimex(2) return value while the kernel clock is not synchronised

StatVfs = Callable[[str], os.statvfs_result]


@dataclass
class StatusSources:
    """Inputs that are not files: injected so tests can give exact values."""

    statvfs: StatVfs = os.statvfs
    vcgencmd_throttled: str | None = None  # output of `vcgencmd get_throttled` when sysfs lacks it
    clock_state: int | None = None  # adjtimex() return value, None when unknown
    clk_tck: int = 100


def temperatures(root: Path) -> list[dict[str, Any]]:
    zones = []
    for name in list_dir(root, "sys/class/thermal"):
        if not name.startswith("thermal_zone"):
            continue
        milli = read_int(root, f"sys/class/thermal/{name}/temp")
        if milli is None:
            continue
        kind = read_text(root, f"sys/class/thermal/{name}/type") or name
        zones.append({"zone": kind, "celsius": round(milli / 1000, 1)})
    return zones


def cpu_temperature(zones: list[dict[str, Any]]) -> float | None:
    """The zone that is the SoC/CPU (cpu-thermal on a Pi, x86_pkg_temp on Intel), else the first."""
    for zone in zones:
        kind = str(zone["zone"]).lower()
        if "cpu" in kind or "soc" in kind or kind == "x86_pkg_temp":
            return float(zone["celsius"])
    return float(zones[0]["celsius"]) if zones else None


def decode_throttled(value: int) -> dict[str, Any]:
    flags = {name: bool(value >> bit & 1) for name, bit in THROTTLE_FLAGS.items()}
    return {
        "raw": hex(value),
        **flags,
        "now": [n.removesuffix("_now") for n, on in flags.items() if on and n.endswith("_now")],
        "since_boot": [
            n.removesuffix("_since_boot") for n, on in flags.items() if on and n.endswith("_since_boot")
        ],
    }


def parse_throttled_text(text: str) -> int | None:
    """`50005` (sysfs) or `throttled=0x50005` (vcgencmd) → 0x50005."""
    value = text.strip().rpartition("=")[2].strip()
    try:
        return int(value, 16)
    except ValueError:
        return None


def throttling(root: Path, vcgencmd_output: str | None) -> dict[str, Any] | None:
    text = read_text(root, THROTTLED_SYSFS)
    source = "sysfs"
    if text is None and vcgencmd_output:
        text, source = vcgencmd_output, "vcgencmd"
    value = parse_throttled_text(text) if text else None
    if value is None:
        return None
    return {**decode_throttled(value), "source": source}


def load(root: Path) -> list[float] | None:
    text = read_text(root, "proc/loadavg")
    try:
        return [float(x) for x in (text or "").split()[:3]] or None
    except ValueError:
        return None


def memory(root: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    info = meminfo_bytes(root)
    mem = swap = None
    total = info.get("MemTotal")
    if total:
        available = min(info.get("MemAvailable", info.get("MemFree", 0)), total)
        mem = {
            "total_bytes": total,
            "available_bytes": available,
            "used_percent": round(100 * (total - available) / total, 1),
        }
    swap_total = info.get("SwapTotal")
    if swap_total:
        free = min(info.get("SwapFree", 0), swap_total)
        swap = {
            "total_bytes": swap_total,
            "free_bytes": free,
            "used_percent": round(100 * (swap_total - free) / swap_total, 1),
        }
    return mem, swap


def disk_usage(path: str, statvfs: StatVfs) -> dict[str, Any] | None:
    try:
        st = statvfs(path)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    if total <= 0:
        return None
    free = st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    return {
        "path": path,
        "total_bytes": total,
        "free_bytes": free,
        "used_percent": round(100 * used / (used + free), 1) if used + free else 0.0,
    }


def storage(root: Path) -> list[dict[str, Any]]:
    """SD cards and eMMC (mmcblk*): kind, name, and the wear estimates an eMMC reports."""
    out = []
    for dev in list_dir(root, "sys/block"):
        if not dev.startswith("mmcblk"):
            continue
        base = f"sys/block/{dev}/device"
        entry: dict[str, Any] = {"device": dev}
        kind = read_text(root, f"{base}/type")
        if kind:
            entry["type"] = kind
        name = read_text(root, f"{base}/name")
        if name:
            entry["name"] = name
        life = (read_text(root, f"{base}/life_time") or "").split()
        for label, raw in zip(("life_used_a", "life_used_b"), life, strict=False):
            try:
                step = int(raw, 16)
            except ValueError:
                continue
            if 1 <= step <= 10:
                entry[label] = f"{(step - 1) * 10}-{step * 10}%"
            elif step == 11:
                entry[label] = "exceeded"
        eol = read_int(root, f"{base}/pre_eol_info", 16)
        if eol in _PRE_EOL:
            entry["pre_eol"] = _PRE_EOL[eol]
        out.append(entry)
    return out


def wireless(root: Path) -> dict[str, dict[str, Any]]:
    """/proc/net/wireless: `wlan0: 0000   58.  -52.  -256 ...` → link quality and signal in dBm."""
    out: dict[str, dict[str, Any]] = {}
    for line in (read_text(root, "proc/net/wireless") or "").splitlines()[2:]:
        name, found, rest = line.partition(":")
        parts = rest.split()
        if not found or len(parts) < 3:
            continue
        try:
            quality = float(parts[1].rstrip("."))
            signal = float(parts[2].rstrip("."))
        except ValueError:
            continue
        entry: dict[str, Any] = {"link_quality": int(quality)}
        if signal < 0:  # dBm; 0/-256 mean "not reported"
            entry["signal_dbm"] = int(signal)
        out[name.strip()] = entry
    return out


def network(root: Path) -> list[dict[str, Any]]:
    wifi = wireless(root)
    out = []
    for name in list_dir(root, "sys/class/net"):
        base = f"sys/class/net/{name}"
        if read_int(root, f"{base}/type") == 772:  # loopback
            continue
        entry: dict[str, Any] = {"name": name}
        state = read_text(root, f"{base}/operstate")
        if state:
            entry["state"] = state
        mac = read_text(root, f"{base}/address")
        if mac:
            entry["mac"] = mac
        speed = read_int(root, f"{base}/speed")
        if speed is not None and speed > 0:
            entry["speed_mbps"] = speed
        for key, rel in (("rx_bytes", "statistics/rx_bytes"), ("tx_bytes", "statistics/tx_bytes")):
            value = read_int(root, f"{base}/{rel}")
            if value is not None:
                entry[key] = value
        if exists(root, f"{base}/wireless") or exists(root, f"{base}/phy80211") or name in wifi:
            entry["wireless"] = True
            if name in wifi:
                entry["wifi"] = wifi[name]
        out.append(entry)
    return out


def clock(root: Path, clock_state: int | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if exists(root, "run/systemd/timesync/synchronized"):
        out["synchronized"] = True
        out["source"] = "systemd-timesyncd"
    elif clock_state is not None:
        out["synchronized"] = clock_state != TIME_ERROR
        out["source"] = "kernel"
    rtcs = list_dir(root, "sys/class/rtc")
    if rtcs:
        out["rtc"] = rtcs[0]
    return out or None


def process(root: Path, clk_tck: int) -> dict[str, Any]:
    """This process's RSS and uptime, from /proc/self (so it is the node's own footprint)."""
    out: dict[str, Any] = {}
    rss = key_values(read_text(root, "proc/self/status")).get("VmRSS", "").split()
    if rss and rss[0].isdigit():
        out["rss_bytes"] = int(rss[0]) * 1024
    stat = read_text(root, "proc/self/stat") or ""
    fields = stat.rpartition(")")[2].split()
    uptime = read_float(root, "proc/uptime")
    if len(fields) > 19 and fields[19].isdigit() and uptime is not None and clk_tck > 0:
        out["uptime_s"] = round(max(0.0, uptime - int(fields[19]) / clk_tck))
    return out


def read_status(
    root: Path,
    *,
    disk_paths: dict[str, str],
    sources: StatusSources,
    counters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    zones = temperatures(root)
    if zones:
        status["cpu_temperature_c"] = cpu_temperature(zones)
        status["temperatures"] = zones
    throttled = throttling(root, sources.vcgencmd_throttled)
    if throttled:
        status["throttling"] = throttled
    loadavg = load(root)
    if loadavg:
        status["load"] = loadavg
    mem, swap = memory(root)
    if mem:
        status["memory"] = mem
    if swap:
        status["swap"] = swap
    disks = {k: d for k, p in disk_paths.items() if (d := disk_usage(p, sources.statvfs)) is not None}
    if disks:
        status["disks"] = disks
    cards = storage(root)
    if cards:
        status["storage"] = cards
    nics = network(root)
    if nics:
        status["network"] = nics
    clk = clock(root, sources.clock_state)
    if clk:
        status["clock"] = clk
    node = process(root, sources.clk_tck)
    for key in ("reconnects", "invokes", "invokes_in_flight", "connection", "pairing"):
        if counters and key in counters:
            node[key] = counters[key]
    if node:
        status["node"] = node
    return status
