"""device.info / device.status readers fed from fake procfs/sysfs trees: a Pi 4 with under-voltage flags
set, a Compute Module with eMMC wear data, and a plain x86 box — with exact expected outputs."""

from __future__ import annotations

import os
import platform
import struct
from pathlib import Path

import pytest

from edgeclaw import __version__
from edgeclaw.capabilities.device.health import StatusSources, decode_throttled, read_status
from edgeclaw.capabilities.device.info import HostFacts, decode_pi_revision, read_info

PROC_SELF_STAT = (
    "4242 (python3 -m edgeclaw) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 300052 0 0"
)

PI4: dict[str, str | bytes] = {
    "proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",
    "proc/cpuinfo": (
        "processor\t: 0\nBogoMIPS\t: 108.00\n\nprocessor\t: 1\nBogoMIPS\t: 108.00\n\n"
        "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000abcdef01\n"
        "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    ),
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n',
    "proc/sys/kernel/osrelease": "6.6.51+rpt-rpi-v8\n",
    "proc/sys/kernel/hostname": "pi4-garage\n",
    "proc/stat": "cpu  100 0 100 1000 0 0 0 0 0 0\nintr 1\nctxt 5\nbtime 1767225600\nprocesses 900\n",
    "proc/uptime": "3600.52 14000.00\n",
    "sys/devices/system/cpu/present": "0-3\n",
    "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
    "sys/class/thermal/thermal_zone0/temp": "61832\n",
    "sys/devices/platform/soc/soc:firmware/get_throttled": "50005\n",
    "proc/loadavg": "0.52 0.40 0.31 1/123 4567\n",
    "proc/meminfo": (
        "MemTotal:        3884096 kB\nMemFree:         2000000 kB\nMemAvailable:    2913072 kB\n"
        "SwapTotal:        102396 kB\nSwapFree:          51198 kB\n"
    ),
    "sys/block/mmcblk0/device/type": "SD\n",
    "sys/block/mmcblk0/device/name": "SC64G\n",
    "sys/class/net/lo/type": "772\n",
    "sys/class/net/lo/operstate": "unknown\n",
    "sys/class/net/eth0/type": "1\n",
    "sys/class/net/eth0/operstate": "down\n",
    "sys/class/net/eth0/address": "dc:a6:32:01:02:03\n",
    "sys/class/net/eth0/speed": "-1\n",
    "sys/class/net/eth0/statistics/rx_bytes": "0\n",
    "sys/class/net/eth0/statistics/tx_bytes": "0\n",
    "sys/class/net/wlan0/type": "1\n",
    "sys/class/net/wlan0/operstate": "up\n",
    "sys/class/net/wlan0/address": "dc:a6:32:01:02:04\n",
    "sys/class/net/wlan0/wireless/.keep": "",
    "sys/class/net/wlan0/statistics/rx_bytes": "123456\n",
    "sys/class/net/wlan0/statistics/tx_bytes": "654321\n",
    "proc/net/wireless": (
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        " wlan0: 0000   58.  -52.  -256        0      0      0      7     12        0\n"
    ),
    "proc/self/status": "Name:\tpython3\nVmPeak:\t  40000 kB\nVmRSS:\t   24576 kB\n",
    "proc/self/stat": PROC_SELF_STAT,
}

X86: dict[str, str | bytes] = {
    "sys/class/dmi/id/sys_vendor": "QEMU\n",
    "sys/class/dmi/id/product_name": "Standard PC (Q35 + ICH9, 2009)\n",
    "proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU\n\n",
    "etc/os-release": 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nVERSION_CODENAME=noble\n',
    "proc/sys/kernel/osrelease": "6.8.0-45-generic\n",
    "proc/sys/kernel/hostname": "build-box\n",
    "proc/stat": "cpu  1 2 3 4\nbtime 1767000000\n",
    "proc/uptime": "120.00 200.00\n",
    "sys/devices/system/cpu/present": "0-1,3\n",
    "proc/loadavg": "1.00 2.00 3.00 2/200 999\n",
    "proc/meminfo": "MemTotal: 8000000 kB\nMemFree: 1000000 kB\nMemAvailable: 6000000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    "sys/block/sda/device/model": "QEMU HARDDISK\n",
    "sys/class/net/lo/type": "772\n",
    "sys/class/net/enp1s0/type": "1\n",
    "sys/class/net/enp1s0/operstate": "up\n",
    "sys/class/net/enp1s0/address": "52:54:00:12:34:56\n",
    "sys/class/net/enp1s0/speed": "1000\n",
    "run/systemd/timesync/synchronized": "",
    "sys/class/rtc/rtc0/name": "rtc_cmos\n",
    "proc/self/status": "VmRSS:\t   30000 kB\n",
    "proc/self/stat": PROC_SELF_STAT.replace(" 300052 ", " 2000 "),
}

FACTS = HostFacts(machine="aarch64", python="3.11.2", python_bits=64)
COUNTERS = {
    "connection": "connected",
    "pairing": "approved",
    "reconnects": 3,
    "invokes": 17,
    "invokes_in_flight": 1,
    "capabilities": ["device", "system"],
    "commands": ["device.info", "device.status"],
    "withheld_commands": [],
}


def make_tree(base: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/.keep"):
            continue
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return base


def fake_statvfs(table: dict[str, tuple[int, int, int, int]]):  # type: ignore[no-untyped-def]
    """path → (frsize, blocks, bfree, bavail); anything else raises like a missing mount."""

    def statvfs(path: str) -> os.statvfs_result:
        if path not in table:
            raise FileNotFoundError(path)
        frsize, blocks, bfree, bavail = table[path]
        return os.statvfs_result((frsize, frsize, blocks, bfree, bavail, 0, 0, 0, 0, 255))

    return statvfs


def test_pi4_info(tmp_path: Path) -> None:
    root = make_tree(tmp_path, PI4)
    assert read_info(root, capabilities=["system", "device"], facts=FACTS) == {
        "model": "Raspberry Pi 4 Model B Rev 1.4",
        "board_revision": {
            "code": "c03114",
            "memory_mb": 4096,
            "manufacturer": "Sony UK",
            "processor": "BCM2711",
            "pcb_revision": "1.4",
        },
        "serial": "10000000abcdef01",
        "architecture": "aarch64",
        "userland_bits": 64,
        "os": "Debian GNU/Linux 12 (bookworm)",
        "os_codename": "bookworm",
        "kernel": "6.6.51+rpt-rpi-v8",
        "python": "3.11.2",
        "edgeclaw_version": __version__,
        "hostname": "pi4-garage",
        "boot_time": 1767225600,
        "uptime_s": 3601,
        "cpu_count": 4,
        "capabilities": ["device", "system"],
    }


def test_pi4_status_under_voltage(tmp_path: Path) -> None:
    root = make_tree(tmp_path, PI4)
    sources = StatusSources(
        statvfs=fake_statvfs(
            {
                "/": (4096, 15_000_000, 5_000_000, 4_500_000),
                "/var/lib/edgeclaw": (4096, 15_000_000, 5_000_000, 4_500_000),
            }
        ),
        clock_state=5,
        clk_tck=100,
    )
    status = read_status(
        root, disk_paths={"root": "/", "state_dir": "/var/lib/edgeclaw"}, sources=sources, counters=COUNTERS
    )
    disk = {"total_bytes": 61_440_000_000, "free_bytes": 18_432_000_000, "used_percent": 69.0}
    assert status == {
        "cpu_temperature_c": 61.8,
        "temperatures": [{"zone": "cpu-thermal", "celsius": 61.8}],
        "throttling": {
            "raw": "0x50005",
            "under_voltage_now": True,
            "frequency_capped_now": False,
            "throttled_now": True,
            "soft_temp_limit_now": False,
            "under_voltage_since_boot": True,
            "frequency_capped_since_boot": False,
            "throttled_since_boot": True,
            "soft_temp_limit_since_boot": False,
            "now": ["under_voltage", "throttled"],
            "since_boot": ["under_voltage", "throttled"],
            "source": "sysfs",
        },
        "load": [0.52, 0.40, 0.31],
        "memory": {"total_bytes": 3_977_314_304, "available_bytes": 2_982_985_728, "used_percent": 25.0},
        "swap": {"total_bytes": 104_853_504, "free_bytes": 52_426_752, "used_percent": 50.0},
        "disks": {"root": {"path": "/", **disk}, "state_dir": {"path": "/var/lib/edgeclaw", **disk}},
        "storage": [{"device": "mmcblk0", "type": "SD", "name": "SC64G"}],
        "network": [
            {"name": "eth0", "state": "down", "mac": "dc:a6:32:01:02:03", "rx_bytes": 0, "tx_bytes": 0},
            {
                "name": "wlan0",
                "state": "up",
                "mac": "dc:a6:32:01:02:04",
                "rx_bytes": 123456,
                "tx_bytes": 654321,
                "wireless": True,
                "wifi": {"link_quality": 58, "signal_dbm": -52},
            },
        ],
        "clock": {"synchronized": False, "source": "kernel"},
        "node": {
            "rss_bytes": 25_165_824,
            "uptime_s": 600,
            "reconnects": 3,
            "invokes": 17,
            "invokes_in_flight": 1,
            "connection": "connected",
            "pairing": "approved",
        },
    }


def test_x86_info_has_no_pi_fields(tmp_path: Path) -> None:
    root = make_tree(tmp_path, X86)
    facts = HostFacts(machine="x86_64", python="3.12.3", python_bits=64)
    assert read_info(root, capabilities=["system"], facts=facts) == {
        "model": "QEMU Standard PC (Q35 + ICH9, 2009)",
        "architecture": "x86_64",
        "userland_bits": 64,
        "os": "Ubuntu 24.04.1 LTS",
        "os_codename": "noble",
        "kernel": "6.8.0-45-generic",
        "python": "3.12.3",
        "edgeclaw_version": __version__,
        "hostname": "build-box",
        "boot_time": 1767000000,
        "uptime_s": 120,
        "cpu_count": 3,
        "capabilities": ["system"],
    }


def test_x86_status_leaves_out_what_the_box_lacks(tmp_path: Path) -> None:
    root = make_tree(tmp_path, X86)
    sources = StatusSources(
        statvfs=fake_statvfs({"/": (4096, 1000, 250, 200)}), clock_state=None, clk_tck=100
    )
    status = read_status(
        root, disk_paths={"root": "/", "state_dir": "/missing"}, sources=sources, counters=None
    )
    assert status == {
        "load": [1.0, 2.0, 3.0],
        "memory": {"total_bytes": 8_192_000_000, "available_bytes": 6_144_000_000, "used_percent": 25.0},
        "disks": {
            "root": {"path": "/", "total_bytes": 4_096_000, "free_bytes": 819_200, "used_percent": 78.9}
        },
        "network": [
            {"name": "enp1s0", "state": "up", "mac": "52:54:00:12:34:56", "speed_mbps": 1000},
        ],
        "clock": {"synchronized": True, "source": "systemd-timesyncd", "rtc": "rtc0"},
        "node": {"rss_bytes": 30_720_000, "uptime_s": 100},
    }
    for absent in ("throttling", "cpu_temperature_c", "temperatures", "swap", "storage"):
        assert absent not in status


def test_emmc_wear_and_vcgencmd_fallback(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "sys/block/mmcblk0/device/type": "MMC\n",
            "sys/block/mmcblk0/device/name": "BJTD4R\n",
            "sys/block/mmcblk0/device/life_time": "0x02 0x0b\n",
            "sys/block/mmcblk0/device/pre_eol_info": "0x02\n",
        },
    )
    sources = StatusSources(statvfs=fake_statvfs({}), vcgencmd_throttled="throttled=0x80008\n")
    status = read_status(root, disk_paths={}, sources=sources)
    assert status["storage"] == [
        {
            "device": "mmcblk0",
            "type": "MMC",
            "name": "BJTD4R",
            "life_used_a": "10-20%",
            "life_used_b": "exceeded",
            "pre_eol": "warning",
        }
    ]
    throttling = status["throttling"]
    assert throttling["source"] == "vcgencmd"
    assert throttling["now"] == ["soft_temp_limit"] and throttling["since_boot"] == ["soft_temp_limit"]
    assert "disks" not in status and "network" not in status


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "d04170",
            {
                "code": "d04170",
                "memory_mb": 8192,
                "manufacturer": "Sony UK",
                "processor": "BCM2712",
                "pcb_revision": "1.0",
            },
        ),
        (
            "9000c1",
            {
                "code": "9000c1",
                "memory_mb": 512,
                "manufacturer": "Sony UK",
                "processor": "BCM2835",
                "pcb_revision": "1.1",
            },
        ),
        ("000e", {"code": "000e"}),  # old-style code: nothing to decode
    ],
)
def test_pi_revision_codes(code: str, expected: dict[str, object]) -> None:
    assert decode_pi_revision(code) == expected


def test_no_throttling_is_all_clear() -> None:
    decoded = decode_throttled(0)
    assert decoded["now"] == [] and decoded["since_boot"] == [] and decoded["raw"] == "0x0"


def test_host_facts_default_to_this_interpreter() -> None:
    facts = HostFacts()
    assert facts.machine == platform.machine()
    assert facts.python == platform.python_version()
    assert facts.python_bits == struct.calcsize("P") * 8
