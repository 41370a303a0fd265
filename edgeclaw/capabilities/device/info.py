"""device.info: what this board is — model, revision, OS, kernel, versions, boot time, capabilities."""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw import __version__
from edgeclaw.capabilities.device.procfs import key_values, os_release, read_float, read_text

# Raspberry Pi "new-style" revision codes (bit 23 set): see the Raspberry Pi documentation,
# "Raspberry Pi revision codes". Only the fields that help an operator are decoded.
_PI_MEMORY_MB = {0: 256, 1: 512, 2: 1024, 3: 2048, 4: 4096, 5: 8192, 6: 16384}
_PI_MANUFACTURER = {0: "Sony UK", 1: "Egoman", 2: "Embest", 3: "Sony Japan", 4: "Embest", 5: "Stadium"}
_PI_PROCESSOR = {0: "BCM2835", 1: "BCM2836", 2: "BCM2837", 3: "BCM2711", 4: "BCM2712"}


@dataclass
class HostFacts:
    """What does not come from the filesystem: injected so tests give exact values."""

    machine: str = field(default_factory=platform.machine)
    python: str = field(default_factory=platform.python_version)
    python_bits: int = field(default_factory=lambda: struct.calcsize("P") * 8)


def decode_pi_revision(code: str) -> dict[str, Any]:
    """`c03114` → memory, processor, manufacturer, PCB revision; old-style codes keep just the code."""
    out: dict[str, Any] = {"code": code}
    try:
        value = int(code, 16)
    except ValueError:
        return out
    if not value & (1 << 23):
        return out
    memory = _PI_MEMORY_MB.get((value >> 20) & 0x7)
    if memory:
        out["memory_mb"] = memory
    manufacturer = _PI_MANUFACTURER.get((value >> 16) & 0xF)
    if manufacturer:
        out["manufacturer"] = manufacturer
    processor = _PI_PROCESSOR.get((value >> 12) & 0xF)
    if processor:
        out["processor"] = processor
    out["pcb_revision"] = f"1.{value & 0xF}"
    return out


def board_model(root: Path) -> str | None:
    """Device-tree model on ARM boards; DMI vendor + product on PCs."""
    model = read_text(root, "proc/device-tree/model") or read_text(root, "sys/firmware/devicetree/base/model")
    if model:
        return model
    vendor = read_text(root, "sys/class/dmi/id/sys_vendor")
    product = read_text(root, "sys/class/dmi/id/product_name")
    text = " ".join(p for p in (vendor, product) if p)
    return text or None


def board_revision(root: Path) -> dict[str, Any] | None:
    cpuinfo = key_values(read_text(root, "proc/cpuinfo"))
    code = cpuinfo.get("Revision")
    if not code:
        return None
    return decode_pi_revision(code.lower())


def boot_time(root: Path) -> int | None:
    for line in (read_text(root, "proc/stat") or "").splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def read_info(root: Path, *, capabilities: list[str], facts: HostFacts | None = None) -> dict[str, Any]:
    facts = facts or HostFacts()
    info: dict[str, Any] = {}
    model = board_model(root)
    if model:
        info["model"] = model
    revision = board_revision(root)
    if revision:
        info["board_revision"] = revision
    serial = key_values(read_text(root, "proc/cpuinfo")).get("Serial")
    if serial and serial.strip("0"):
        info["serial"] = serial
    info["architecture"] = facts.machine
    info["userland_bits"] = facts.python_bits
    release = os_release(root)
    if release.get("PRETTY_NAME"):
        info["os"] = release["PRETTY_NAME"]
    if release.get("VERSION_CODENAME"):
        info["os_codename"] = release["VERSION_CODENAME"]
    kernel = read_text(root, "proc/sys/kernel/osrelease")
    if kernel:
        info["kernel"] = kernel
    info["python"] = facts.python
    info["edgeclaw_version"] = __version__
    hostname = read_text(root, "proc/sys/kernel/hostname") or read_text(root, "etc/hostname")
    if hostname:
        info["hostname"] = hostname
    booted = boot_time(root)
    if booted is not None:
        info["boot_time"] = booted
    uptime = read_float(root, "proc/uptime")
    if uptime is not None:
        info["uptime_s"] = round(uptime)
    present = read_text(root, "sys/devices/system/cpu/present")
    if present:
        info["cpu_count"] = _count_cpu_list(present)
    info["capabilities"] = sorted(capabilities)
    return info


def _count_cpu_list(text: str) -> int:
    """`0-3` or `0,2-3` → number of CPUs."""
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            count += (int(hi) - int(lo) + 1) if hi else 1
        except ValueError:
            continue
    return count
