"""Boot the SD card as a Raspberry Pi 3 B does, on QEMU's `raspi3b` board, beside a real OpenClaw
gateway, both in the caller's loopback-only network namespace. The card is provisioned through its
FAT partition (setup code, SSH key, a relay on GPIO17 with safe_state 0); the node must pair, answer
an operator's invoke, drive GPIO17 through the kernel's pinctrl-bcm2835 driver under the real hardened
unit, and after `systemctl kill -s KILL edgeclaw` the unit's ExecStopPost (`edgeclaw gpio-safe`) must
leave the line at its safe state as the kernel reports it.

Run only inside `unshare --net --mount` (tests/image/test_raspi.py does that):
    python -m tests.image.raspi_qemu IMAGE WORKDIR
Prints one JSON object with what it observed; progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.gateway import Gateway, Operator, install_gateway, invoke_payload, only_loopback, wait_for

MiB = 1024 * 1024
FAT_OFFSET = 4 * MiB
GUEST_GATEWAY = "10.0.2.100"  # QEMU's user network forwards this guest address to the gateway
GUEST_PORT = 18789
DISPLAY_NAME = "QEMU Pi Three"
RELAY_PIN = 17
# pinctrl-bcm2835's own report of every pin (function and level), whether a line is requested or not
PINCTRL_PINS = "/sys/kernel/debug/pinctrl/*bcm2835*/pins"
RELAY = Path(__file__).with_name("guestfwd_relay.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def say(msg: str) -> None:
    print(f"[raspi3b {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: {proc.stdout}{proc.stderr}")
    return proc.stdout


def fat(disk: Path) -> str:
    return f"{disk}@@{FAT_OFFSET}"


def pad_to_power_of_two(disk: Path) -> int:
    """QEMU's SD card model accepts only power-of-two sizes (a real card's size is the card's)."""
    size = disk.stat().st_size
    target = 1 << (size - 1).bit_length()
    sh("truncate", "-s", str(target), str(disk))
    return target


def board_cmdline(disk: Path) -> str:
    """The card's own cmdline.txt, with its consoles replaced by ttyAMA0: the Pi 3's firmware hands
    the kernel ttyS1 (the mini UART on the header), but QEMU's first serial port on raspi3b is the
    PL011, which Linux calls ttyAMA0. Everything else (root=, rootwait, net.ifnames=0...) is the card's."""
    text = sh("mtype", "-i", fat(disk), "::cmdline.txt").strip()
    assert len(text.splitlines()) == 1, text
    args = [a for a in text.split() if not a.startswith("console=")]
    # QEMU 7.2's bcm2835 power-management block resets the board on the *first* write that arms the
    # watchdog (RSTC with the full-reset bit; the countdown came in later QEMU), so systemd arming
    # the hardware watchdog (RuntimeWatchdogSec=) would reset the emulated board at once. The watchdog
    # driver stays off in the emulator; on a real board it is loaded and armed.
    return " ".join(["console=ttyAMA0,115200", *args, "modprobe.blacklist=bcm2835_wdt"])


def copy_boot_files(disk: Path, dest: Path) -> dict[str, Path]:
    """Kernel, initramfs and the Pi 3 B device tree, from the card's FAT partition (what the firmware loads)."""
    names = sh("mdir", "-b", "-i", fat(disk), "::").split()
    names = [n.split("/")[-1] for n in names]
    wanted = {
        "kernel": next(n for n in names if n.startswith("vmlinuz-")),
        "initrd": next(n for n in names if n.startswith("initrd.img-")),
        "dtb": next(n for n in names if n.lower() == "bcm2837-rpi-3-b.dtb"),
    }
    out = {}
    for key, name in wanted.items():
        sh("mcopy", "-o", "-i", fat(disk), f"::{name}", str(dest / name))
        out[key] = dest / name
    return out


PI3B_REVISION = 0xA02082  # Raspberry Pi 3 Model B rev 1.2 (Sony UK), the board QEMU's raspi3b models


def add_firmware_properties(dtb: Path) -> None:
    """What the Pi's firmware adds to the device tree before it starts the kernel, and QEMU's -kernel
    boot does not: /system/linux,revision (the board's revision code). gpiozero's Pi pin factories
    (lgpio included) read it to know the board; without it they refuse with PinUnknownPi."""
    if shutil.which("fdtput") is None:  # Debian's device-tree-compiler: a host tool like mtools
        sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", "device-tree-compiler", timeout=900)
    sh("fdtput", "-c", "-p", str(dtb), "/system")
    sh("fdtput", "-t", "x", str(dtb), "/system", "linux,revision", f"{PI3B_REVISION:x}")


class Board:
    """qemu-system-aarch64 -M raspi3b with the card as its SD card and a USB network adapter."""

    def __init__(
        self, disk: Path, boot: dict[str, Path], cmdline: str, work: Path, gw_port: int, ssh_port: int
    ):
        self.console = work / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        fwd = f"guestfwd=tcp:{GUEST_GATEWAY}:{GUEST_PORT}-cmd:{sys.executable} {RELAY} {gw_port}"
        self.cmd = [
            "qemu-system-aarch64", "-M", "raspi3b", "-m", "1G", "-smp", "4",
            "-kernel", str(boot["kernel"]), "-initrd", str(boot["initrd"]), "-dtb", str(boot["dtb"]),
            "-append", cmdline,
            "-drive", f"file={disk},if=sd,format=raw",
            "-display", "none", "-no-reboot", "-serial", f"file:{self.console}",
            "-monitor", "none",
            "-netdev", f"user,id=n0,restrict=on,{fwd},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device", "usb-net,netdev=n0",
        ]  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def stop(self) -> str:
        out = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stdout is not None:
                out = self.proc.stdout.read().decode(errors="replace")
        return out


class Milestones:
    """When each console line first appeared (seconds since QEMU started), polled once a second."""

    PATTERNS = {
        "init": r"Run /init as init process",
        "multi_user": r"Reached target (?:multi-user\.target|.*Multi-User System)",
        # Type=notify: "Started" is printed when the daemon sends READY=1
        "edgeclaw_ready": r"Started (?:edgeclaw\.service|.*EdgeClaw OpenClaw node)",
    }

    def __init__(self, board: Board, t0: float) -> None:
        self.board, self.t0, self.seen = board, t0, {}

    def poll(self) -> None:
        text = ANSI.sub("", self.board.text())  # systemd's status lines are coloured
        for key, rx in self.PATTERNS.items():
            if key not in self.seen and re.search(rx, text):
                self.seen[key] = round(time.monotonic() - self.t0, 1)

    def wait(self, key: str, timeout: float) -> float:
        def seen() -> float | None:
            if not self.board.alive():
                raise RuntimeError("QEMU exited")
            self.poll()
            return self.seen.get(key)

        return float(wait_for(seen, timeout, interval=1, what=f"console: {self.PATTERNS[key]}"))


class Ssh:
    """Root over SSH through the hostfwd, with the key provisioned in edgeclaw.yaml (the image's only login)."""

    def __init__(self, key: Path, port: int) -> None:
        self.base = [
            "ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            "root@127.0.0.1",
        ]  # fmt: skip

    def run(self, script: str, timeout: float = 120) -> str:
        proc = subprocess.run(
            [*self.base, script], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ssh {script!r} -> {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def ok(self) -> bool:
        try:
            return self.run("true", timeout=40) == ""
        except (RuntimeError, subprocess.TimeoutExpired):
            return False


def pin_state(ssh: Ssh) -> dict[str, str]:
    """GPIO17 as pinctrl-bcm2835 reports it (its debugfs `pins` file): function and level."""
    line = ssh.run(f"grep -E '^pin {RELAY_PIN} ' {PINCTRL_PINS}").strip()
    m = re.search(r"function (\S+)", line)
    level = re.search(r"\b(hi|lo)\b", line)
    return {"line": line, "function": m.group(1) if m else "?", "level": level.group(1) if level else "?"}


async def operator_calls(gw: Gateway, node_id: str) -> dict[str, Any]:
    async with Operator(gw) as op:
        info = invoke_payload(await op.invoke(node_id, "device.info", {}, timeout_ms=60000))
        write = await op.invoke(node_id, "gpio.write", {"name": "relay", "value": 1}, timeout_ms=60000)
    return {"device_info": info, "gpio_write": write}


KILL_SCRIPT = f"""
systemctl kill -s KILL edgeclaw.service
i=0
while [ $i -lt 400 ]; do
  s=$(systemctl show -p SubState --value edgeclaw.service)
  [ "$s" = auto-restart ] && break
  i=$((i+1)); sleep 0.25
done
echo "SUBSTATE=$s"
grep -E '^pin {RELAY_PIN} ' {PINCTRL_PINS}
# the same line through gpiolib, before the restarted daemon claims it again
if command -v gpioget >/dev/null; then echo "GPIOGET=$(gpioget --as-is -c gpiochip0 {RELAY_PIN} 2>&1)"
else echo GPIOGET=no-gpiod; fi
"""


def main() -> int:
    image, work = Path(sys.argv[1]), Path(sys.argv[2])
    if not only_loopback():
        raise SystemExit("run me in a loopback-only network namespace (unshare --net)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict[str, Any] = {"timings": {}}
    t_all = time.monotonic()
    gw = Gateway(install_gateway(), work / "gateway")
    board: Board | None = None
    try:
        result["gateway_start_s"] = round(gw.start(), 1)
        code = gw.call(
            "device.pair.setupCode",
            {
                "bootstrapProfile": "node",
                "publicUrl": f"ws://{GUEST_GATEWAY}:{GUEST_PORT}",
                "includeQr": False,
            },
        )["setupCode"]
        disk = work / "card.img"
        sh("cp", "--sparse=always", str(image), str(disk))
        result["card_bytes"] = pad_to_power_of_two(disk)
        key = work / "id_ed25519"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "raspi-test", "-f", str(key))
        settings = work / "edgeclaw.yaml"
        settings.write_text(
            "# written by tests/image/raspi_qemu.py\n"
            f'gateway:\n  setup_code: "{code}"\n'
            f"node:\n  display_name: {DISPLAY_NAME}\n"
            f"ssh:\n  authorized_keys:\n    - {(work / 'id_ed25519.pub').read_text().strip()}\n"
            "log:\n  level: debug\n"
            "gpio:\n  enabled: true\n  pins:\n"
            f"    relay: {{pin: GPIO{RELAY_PIN}, kind: output, safe_state: 0, description: test relay}}\n"
        )
        sh("mcopy", "-i", fat(disk), str(settings), "::edgeclaw.yaml")
        boot = copy_boot_files(disk, work)
        add_firmware_properties(boot["dtb"])
        cmdline = board_cmdline(disk)
        result["cmdline"] = cmdline
        result["card_cmdline"] = sh("mtype", "-i", fat(disk), "::cmdline.txt").strip()
        ssh_port = free_port()
        board = Board(disk, boot, cmdline, work, gw.port, ssh_port)
        say(f"booting raspi3b ({cmdline})")
        t0 = time.monotonic()
        board.start()
        marks = Milestones(board, t0)
        timings = result["timings"]
        timings["init"] = marks.wait("init", 180)
        timings["multi_user"] = marks.wait("multi_user", 600)

        def paired() -> str | None:
            if not board.alive():
                raise RuntimeError("QEMU exited")
            marks.poll()
            for node in gw.nodes_status():
                if (
                    node.get("displayName") == DISPLAY_NAME
                    and node.get("connected")
                    and node.get("approvalState") == "approved"
                ):
                    return str(node.get("nodeId"))
            return None

        node_id = wait_for(paired, 420, interval=2, what="the board's node connected to the gateway")
        timings["connected"] = round(time.monotonic() - t0, 1)
        marks.poll()
        timings["edgeclaw_ready"] = marks.seen.get("edgeclaw_ready")
        say(f"node {node_id} connected after {timings['connected']} s")
        result["node_id"] = node_id

        def gpio_declared() -> dict[str, Any] | None:
            """The gpio capability opens its pins after the first connect; its commands follow."""
            for node in gw.nodes_status():
                if node.get("nodeId") == node_id and "gpio.write" in json.dumps(node):
                    return node
            return None

        try:
            result["node_entry"] = wait_for(gpio_declared, 240, interval=5, what="gpio.write declared")
            timings["gpio_declared"] = round(time.monotonic() - t0, 1)
        except TimeoutError:
            result["node_entry"] = [n for n in gw.nodes_status() if n.get("nodeId") == node_id]
        calls = asyncio.run(operator_calls(gw, node_id))
        result["device_info"] = calls["device_info"]
        result["gpio_write"] = calls["gpio_write"]
        ssh = Ssh(key, ssh_port)
        wait_for(ssh.ok, 120, interval=3, what="SSH as root with the provisioned key")
        result["usb0"] = ssh.run("ip -4 -o addr show dev usb0").strip()
        result["gpiochip"] = ssh.run(
            "ls -l /dev/gpiochip* ; cat /sys/bus/gpio/devices/gpiochip0/of_node/compatible 2>/dev/null | tr '\\0' ' '"
        ).strip()
        result["unit_devices"] = ssh.run(
            "systemctl show -p DevicePolicy -p DeviceAllow -p User edgeclaw.service"
        ).strip()
        result["pin_after_write"] = pin_state(ssh)
        result["persist_param"] = ssh.run(
            "cat /sys/module/pinctrl_bcm2835/parameters/persist_gpio_outputs 2>/dev/null || echo absent"
        ).strip()
        out = ssh.run(KILL_SCRIPT, timeout=150)
        result["kill_output"] = out.strip()
        got = re.search(r"GPIOGET=(.*)", out)
        result["gpioget"] = got.group(1).strip() if got else "?"
        sub = re.search(r"SUBSTATE=(\S*)", out)
        result["substate_after_kill"] = sub.group(1) if sub else None
        line = next((x for x in out.splitlines() if x.startswith(f"pin {RELAY_PIN} ")), "")
        fn, lv = re.search(r"function (\S+)", line), re.search(r"\b(hi|lo)\b", line)
        result["pin_after_kill"] = {
            "line": line,
            "function": fn.group(1) if fn else "?",
            "level": lv.group(1) if lv else "?",
        }
        result["gpio_safe_journal"] = ssh.run(
            "journalctl -b -u edgeclaw.service -o cat --no-pager | grep -E 'gpio-safe' | tail -n 5 || true"
        ).strip()
        result["watchdog"] = ssh.run(
            "ls -l /dev/watchdog* 2>&1; cat /sys/class/watchdog/watchdog0/identity 2>&1; "
            "systemctl show -p RuntimeWatchdogUSec -p WatchdogDevice; "
            "dmesg | grep -iE 'watchdog|wdt' | tail -n 5"
        ).strip()
        result["journal_gpio"] = ssh.run(
            "journalctl -b -u edgeclaw.service -o short-monotonic --no-pager"
            " | grep -iE 'gpio|capabilit|withheld|lgpio|pin factory' | tail -n 25 || true"
        ).strip()
        result["failed_units"] = ssh.run("systemctl list-units --state=failed --no-legend --plain").strip()
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if board is not None:
            result["qemu_output"] = board.stop()[-2000:]
            text = board.text()
            result["console_tail"] = text[-6000:]
            result["console_bytes"] = len(text)
        result["gateway_log_tail"] = gw.tail(3000)
        gw.stop()
        result["total_s"] = round(time.monotonic() - t_all, 1)
    print(json.dumps(result))
    return 0


def free_port() -> int:
    from tests.support.gateway import free_port as pick

    return pick()


if __name__ == "__main__":
    raise SystemExit(main())
