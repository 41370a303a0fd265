"""The SD-card image, built and booted (the slow "image" tier; root and a Debian host needed).

1. `image/build.sh` builds it (base rootfs cached by its package list) and prints its timings.
2. The artifacts: partition table, FAT boot files for the Pi boards, ext4 root by label, checksum,
   manifest, and the rootfs settings a user relies on (keys-only SSH, no baked-in host keys...).
3. QEMU `-M virt` (no network at all) boots the image, enlarged, with a test edgeclaw.yaml on its
   FAT partition: first boot consumes it and wipes the secret, the root grows to the disk,
   edgeclaw.service reaches READY and its STATUS= says it is trying to reach the configured gateway.
   Then the read-only root (`systemd.volatile=overlay`), twice: first boot under the overlay, a
   reboot, and only the node's state (and first boot's system files) is still there.
4. (The card's node meets the real gateway in test_raspi.py and test_vivid.py, booted by QEMU as a
   whole machine. The former nspawn boot of this root through qemu-user cannot run trixie: systemd 257
   fails to spawn its executor under Debian 12's qemu-user 7.2, "Failed to spawn executor: Invalid
   argument", for every unit.)
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.image.bootdeps import initramfs_members
from tests.image.conftest import REPO, Built, MiB, report

TOKEN = "qemu-test-token-5f3a9c"
GATEWAY = "ws://192.168.1.250:18789"  # never reached: the guest has no network device
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd3BTA0tGRBNdDU0GJ8vHzwzYVbMp1ZRDHgp3hxLfyi ci@test"


def sh(*cmd: str, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def fat_ls(image: Path) -> list[str]:
    return sh("mdir", "-b", "-i", f"{image}@@{4 * MiB}", "::").split()


def partitions(image: Path) -> list[dict]:
    return list(json.loads(sh("sfdisk", "--json", str(image)))["partitiontable"]["partitions"])


@pytest.mark.timeout(3300)  # includes the build (cold: the base rootfs under qemu-user)
def test_image_artifacts(built: Built) -> None:
    name = built.image.name
    # compressed image + checksums + manifest, all verifiable
    assert (built.out / f"{name}.zst").stat().st_size > 50 * MiB
    sh("sh", "-c", f"cd {built.out} && sha256sum -c {name}.zst.sha256 {name}.sha256")
    m = built.manifest
    assert re.match(r"^\d+\.\d+\.\d+.*-[0-9a-f]{12}$", m["edgeclaw"])
    assert m["built"] and m["arch"] == "arm64" and m["suite"] == "trixie"
    for pkg in ("linux-image-arm64", "raspi-firmware", "firmware-brcm80211", "systemd", "wpasupplicant",
                "openssh-server", "python3"):  # fmt: skip
        assert pkg in m["debian"], pkg
    for dist in ("edgeclaw", "websockets", "PyNaCl", "PyYAML"):
        assert dist in m["python"], dist
    # MBR: FAT32 (LBA) boot at 4 MiB, bootable, then Linux; both 4 MiB aligned
    parts = partitions(built.image)
    assert [p["type"] for p in parts] == ["c", "83"]
    assert parts[0]["start"] == 8192 and parts[0].get("bootable")
    assert all(p["start"] % 8192 == 0 for p in parts)
    # FAT: label, firmware and DTBs for Pi 3/3+/4/400/Zero 2 W/CM3/CM4, kernel, initrd, the example
    label = sh("mlabel", "-s", "-i", f"{built.image}@@{4 * MiB}", "::")
    assert "RASPIFIRM" in label
    files = set(fat_ls(built.image))
    names = {f.split("/")[-1] for f in files}
    # (upstream_kernel=1 in config.txt: the firmware loads the kernel's own bcm2837/bcm2711 DTB names)
    for needed in ("config.txt", "cmdline.txt", "start4.elf", "fixup4.dat", "bootcode.bin", "start.elf",
                   "bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb", "bcm2837-rpi-3-a-plus.dtb",
                   "bcm2837-rpi-zero-2-w.dtb", "bcm2837-rpi-cm3-io3.dtb", "bcm2711-rpi-4-b.dtb",
                   "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb", "edgeclaw.yaml.example"):  # fmt: skip
        assert any(n.lower() == needed for n in names), f"{needed} missing from the FAT partition"
    assert any(n.startswith("vmlinuz-") for n in names) and any(n.startswith("initrd.img-") for n in names)
    config_txt = sh("mtype", "-i", f"{built.image}@@{4 * MiB}", "::config.txt")
    assert "arm_64bit=1" in config_txt and "upstream_kernel=1" in config_txt
    # the root by PARTUUID of this card's own disk identifier (random per build), never by a label a
    # Raspberry Pi OS disk on the same board also carries ("rootfs"); the same in fstab, and in
    # raspi-firmware's ROOTPART so a kernel upgrade's new cmdline.txt keeps it
    disk_id = json.loads(sh("sfdisk", "--json", str(built.image)))["partitiontable"]["id"].removeprefix("0x")
    assert re.fullmatch(r"[0-9a-f]{8}", disk_id) and disk_id != "00000000", disk_id
    cmdline = sh("mtype", "-i", f"{built.image}@@{4 * MiB}", "::cmdline.txt")
    assert card_root_spec(built.image) == f"PARTUUID={disk_id}-02", cmdline
    assert "LABEL=" not in cmdline and "rootwait" in cmdline, cmdline
    fstab = [line.split() for line in (built.rootfs / "etc/fstab").read_text().splitlines()]
    mounts = {f[1]: f[0] for f in fstab if f and not f[0].startswith("#")}
    assert mounts == {"/": f"PARTUUID={disk_id}-02", "/boot/firmware": f"PARTUUID={disk_id}-01"}, mounts
    raspi = (built.rootfs / "etc/default/raspi-firmware").read_text()
    assert re.findall(r"^ROOTPART=(.*)$", raspi, re.M) == [f"PARTUUID={disk_id}-02"], raspi
    # ext4 root, labelled, read from its superblock
    with open(built.image, "rb") as fh:
        fh.seek(parts[1]["start"] * 512 + 1024)
        sb = fh.read(1024)
    assert struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53
    assert sb[0x78:0x88].rstrip(b"\0") == b"rootfs"
    # the root tree a user relies on
    r = built.rootfs
    assert "noatime" in (r / "etc/fstab").read_text()
    assert re.search(
        r"^SystemMaxUse=\d+M", (r / "etc/systemd/journald.conf.d/edgeclaw.conf").read_text(), re.M
    )
    # the hardware watchdog reboots a hung board (the ladder's last rung); within bcm2835_wdt's ~15 s
    watchdog = (r / "etc/systemd/system.conf.d/edgeclaw-watchdog.conf").read_text()
    found = re.search(r"^RuntimeWatchdogSec=(\d+)$", watchdog, re.M)
    assert found and 0 < int(found.group(1)) <= 15, watchdog
    # <hostname>.local from the LAN: resolved's own mDNS responder, on globally and on each link type
    resolved = (r / "etc/systemd/resolved.conf.d/edgeclaw-mdns.conf").read_text()
    assert re.search(r"^\[Resolve\]$(?:.|\n)*^MulticastDNS=yes$", resolved, re.M), resolved
    for network in sorted((r / "etc/systemd/network").glob("*.network")):
        assert re.search(r"^MulticastDNS=yes$", network.read_text(), re.M), f"{network.name}: no mDNS"
    assert not (r / "usr/sbin/avahi-daemon").exists()
    sshd = (r / "etc/ssh/sshd_config.d/edgeclaw.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "KbdInteractiveAuthentication no" in sshd
    assert not list((r / "etc/ssh").glob("ssh_host_*")), "SSH host keys baked into the image"
    assert (r / "etc/machine-id").read_text() == ""
    shadow = {line.split(":")[0]: line.split(":")[1] for line in (r / "etc/shadow").read_text().splitlines()}
    assert all(not pw or pw[0] in "!*" for pw in shadow.values()), "an account has a password"
    wants = r / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/edgeclaw.service").is_symlink()
    assert (wants / "edgeclaw.service.requires/edgeclaw-firstboot.service").is_symlink()
    assert (wants / "multi-user.target.wants/systemd-networkd.service").is_symlink()
    assert "edgeclaw:" in (r / "etc/passwd").read_text() and re.search(
        r"^gpio:", (r / "etc/group").read_text(), re.M
    )
    # the venv is arm64: its compiled extensions are aarch64 ELF objects
    sos = list(r.glob("opt/edgeclaw/venv/lib/python3*/site-packages/**/*.so"))
    assert sos and all(so.read_bytes()[18:20] == b"\xb7\x00" for so in sos)  # e_machine EM_AARCH64
    # one initramfs, built once, and the build-time diversion is gone
    initrds = list(r.glob("boot/initrd.img-*"))
    assert len(initrds) == 1
    assert "update-initramfs" not in (r / "var/lib/dpkg/diversions").read_text()
    # the read-only root's script is in the initramfs, the same as in the repository
    script = "etc/initramfs-tools/scripts/local-bottom/edgeclaw-volatile"
    assert (r / script).read_bytes() == (REPO / "image/initramfs/edgeclaw-volatile").read_bytes()
    listing = set(initramfs_members(initrds[0]))  # an early uncompressed cpio may come first
    assert "scripts/local-bottom/edgeclaw-volatile" in listing, sorted(n for n in listing if "scripts/" in n)
    assert any(re.search(r"/overlay\.ko(\.xz|\.zst)?$", n) for n in listing)  # trixie compresses modules
    # growing the root on first boot: the tools and the enabled unit
    assert (r / "usr/bin/growpart").exists() and (r / "usr/sbin/resize2fs").exists()
    assert (r / "sbin/sfdisk").exists() or (r / "usr/sbin/sfdisk").exists()
    assert (wants / "multi-user.target.wants/edgeclaw-growroot.service").is_symlink()
    # EdgeClaw's own wheel was installed from the host: a console script for the venv, byte-compiled
    assert (r / "opt/edgeclaw/venv/bin/edgeclaw").read_text().startswith("#!/opt/edgeclaw/venv/bin/python3\n")
    # (by the card's CPython version: a .pyc of another version is never used)
    (libdir,) = r.glob("opt/edgeclaw/venv/lib/python3*")
    tag = libdir.name.removeprefix("python").replace(".", "")
    assert (libdir / f"site-packages/edgeclaw/__pycache__/cli.cpython-{tag}.pyc").exists()
    # the GPIO stack gpiozero prefers on current kernels: lgpio, compiled for the card's CPython
    assert list(libdir.glob(f"site-packages/_lgpio.cpython-{tag}-aarch64-linux-gnu.so")), (
        "no lgpio in the venv"
    )
    # no manuals or translations on the card (dpkg path-exclude), copyright files kept
    assert not list(r.glob("usr/share/man/man1/*")) and (r / "usr/share/doc/systemd/copyright").exists()


# QEMU ------------------------------------------------------------------------------------------------
def monitor_command(sock: Path, command: str) -> None:
    """Type one command at QEMU's human monitor: wait for its prompt, send, wait for the echo."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        seen = b""
        while b"(qemu)" not in seen:
            seen += s.recv(4096)
        s.sendall(command.encode() + b"\n")
        seen = b""
        while seen.count(b"(qemu)") < 1:
            seen += s.recv(4096)


def wait_console(log: Path, pattern: str, timeout: float, proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = rx.search(text)
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(1)
    tail = log.read_text(errors="replace")[-5000:] if log.exists() else "(no console output)"
    raise AssertionError(f"console never showed /{pattern}/ within {timeout:.0f} s:\n{tail}")


def boot_files(disk: Path, dest: Path) -> tuple[Path, Path]:
    """The kernel and initrd, copied out of the image's FAT partition (QEMU -M virt boots them directly)."""
    names = [n.split("/")[-1] for n in fat_ls(disk)]
    kernel = next(n for n in names if n.startswith("vmlinuz-"))
    initrd = next(n for n in names if n.startswith("initrd.img-"))
    for name in (kernel, initrd):
        sh("mcopy", "-o", "-i", f"{disk}@@{4 * MiB}", f"::{name}", str(dest / name))
    return dest / kernel, dest / initrd


def card_root_spec(disk: Path) -> str:
    """The root= the card's own cmdline.txt names (what a Pi's firmware passes to the kernel)."""
    cmdline = sh("mtype", "-i", f"{disk}@@{4 * MiB}", "::cmdline.txt")
    found = re.findall(r"(?:^| )root=(\S+)", cmdline)
    assert len(found) == 1, f"cmdline.txt names {len(found)} roots: {cmdline!r}"
    return str(found[0])


def start_qemu(
    disk: Path, boot: tuple[Path, Path], console: Path, monitor: Path, append: str
) -> subprocess.Popen[bytes]:
    """Boot the card under -M virt with its own root spec (cmdline.txt) on a virtio disk."""
    cmd = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
        "-display", "none", "-nic", "none", "-no-reboot", "-serial", f"file:{console}",
        "-monitor", f"unix:{monitor},server,nowait",
        "-kernel", str(boot[0]), "-initrd", str(boot[1]),
        "-append", f"root={card_root_spec(disk)} rw rootwait console=ttyAMA0 {append}".strip(),
        "-drive", f"file={disk},format=raw,if=virtio",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def power_off(proc: subprocess.Popen[bytes], monitor: Path | None, timeout: float = 180) -> None:
    """Wait for the guest to power off (by itself when monitor is None, else via the power button)."""
    if monitor is not None:
        monitor_command(monitor, "system_powerdown")
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        pytest.fail(f"the guest did not power off within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def root_offset(disk: Path) -> int:
    return int(partitions(disk)[1]["start"]) * 512


def debugfs(disk: Path, request: str) -> str:
    """Read the image's ext4 root in place (debugfs opens it at the partition's offset)."""
    return sh("debugfs", "-R", request, f"{disk}?offset={root_offset(disk)}")


def ext4_bytes(disk: Path) -> int:
    with open(disk, "rb") as fh:
        fh.seek(root_offset(disk) + 1024)
        sb = fh.read(1024)
    blocks = struct.unpack_from("<I", sb, 0x04)[0] | struct.unpack_from("<I", sb, 0x150)[0] << 32
    return int(blocks) * (1024 << struct.unpack_from("<I", sb, 0x18)[0])


def assert_root_fills_disk(disk: Path, before_fs: int) -> None:
    """growroot: partition 2 reaches the end of the (enlarged) disk, and its ext4 fills it."""
    part = partitions(disk)[1]
    disk_bytes = disk.stat().st_size
    part_end = (int(part["start"]) + int(part["size"])) * 512
    assert disk_bytes - part_end < 4 * MiB, f"root partition ends at {part_end}, the disk at {disk_bytes}"
    fs = ext4_bytes(disk)
    assert fs > before_fs + 400 * MiB and int(part["size"]) * 512 - fs < 8 * MiB, (before_fs, fs, part)


@pytest.mark.timeout(1800)
def test_qemu_first_boot_consumes_file_and_node_reaches_ready(
    built: Built, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    disk = tmp_path / "disk.img"
    sh("cp", "--sparse=always", str(built.image), str(disk))
    fs_before = ext4_bytes(disk)
    sh("truncate", "-s", "+512M", str(disk))  # a bigger card: first boot grows the root into it
    fat = f"{disk}@@{4 * MiB}"
    settings = tmp_path / "edgeclaw.yaml"
    settings.write_text(
        f'gateway:\n  url: {GATEWAY}\n  token: "{TOKEN}"\nnode:\n  display_name: QEMU Pi\n'
        f"ssh:\n  authorized_keys:\n    - {SSH_KEY}\n"
    )
    sh("mcopy", "-i", fat, str(settings), "::edgeclaw.yaml")
    boot = boot_files(disk, tmp_path)
    console = tmp_path / "console.log"
    monitor = tmp_path / "monitor.sock"
    t0 = time.monotonic()
    proc = start_qemu(disk, boot, console, monitor, "systemd.log_level=debug systemd.log_target=console")
    try:
        wait_console(console, r"Run /init as init process|Freeing unused kernel memory", 120, proc)
        t_init = time.monotonic() - t0
        wait_console(console, r"edgeclaw-firstboot: secrets removed from the boot partition", 400, proc)
        t_first = time.monotonic() - t0
        ready = wait_console(
            console,
            # systemd 252 wrote "from PID N (READY=1, …)", trixie's 257 writes "from PID N: READY=1, …"
            r"edgeclaw\.service: Got notification message from PID \d+(?: \(|: )[^)\n]*READY=1",
            300,
            proc,
        )
        t_ready = time.monotonic() - t0
        status = wait_console(
            console,
            r"edgeclaw\.service: Got notification message from PID \d+(?: \(|: )"
            r"[^)\n]*STATUS=((?:connecting|gateway unreachable)[^)\n]*192\.168\.1\.250[^)\n\x1b]*)",
            120,
            proc,
        )
        grown = wait_console(
            console, r"edgeclaw-growroot: root filesystem on \S+ grown from \d+ MiB to \d+ MiB", 120, proc
        )
        text = console.read_text(errors="replace")
        assert "Dependency failed for EdgeClaw" not in text
        assert TOKEN not in text, "the token leaked onto the console"
        # clean power-off through the virt board's power button, so the disk is consistent
        power_off(proc, monitor)
    finally:
        stop(proc)
    report(
        request,
        f"QEMU boot: /init {t_init:.0f} s, first boot done {t_first:.0f} s, edgeclaw READY {t_ready:.0f} s; "
        f"STATUS={status.group(1)!r}; {grown.group(0)}",
    )
    assert "READY=1" in ready.group(0)
    assert_root_fills_disk(disk, fs_before)
    # the FAT partition: settings gone, a report there, and the token nowhere in its bytes
    names = {n.split("/")[-1] for n in fat_ls(disk)}
    assert "edgeclaw.yaml" not in names and "edgeclaw-firstboot.txt" in names
    firstboot_txt = sh("mtype", "-i", fat, "::edgeclaw-firstboot.txt")
    assert "Applied" in firstboot_txt and "secrets removed" in firstboot_txt
    with open(disk, "rb") as fh:
        fh.seek(4 * MiB)
        boot_bytes = fh.read(256 * MiB)
    assert TOKEN.encode() not in boot_bytes, "the token is still on the FAT partition"
    # the root: the token now lives in a 0600 file owned by the service user
    stat_out = debugfs(disk, "stat /etc/edgeclaw/gateway.token")
    assert re.search(r"Mode:\s+0600", stat_out), stat_out
    assert debugfs(disk, "cat /etc/edgeclaw/gateway.token").strip() == TOKEN
    assert "ci@test" in debugfs(disk, "cat /root/.ssh/authorized_keys")
    assert debugfs(disk, "cat /etc/hostname").strip() == "qemu-pi"


# The read-only root: a probe unit injected into a copy of the image (test-only) reports on the serial
# console what the guest sees, then powers it off.
PROBE_SCRIPT = r"""#!/bin/sh
h() { if [ -e "$1" ]; then sha256sum < "$1" | cut -c1-16; else echo missing; fi; }
p() { echo "PROBE $1=$2"; }
p fstype "$(findmnt -n -o FSTYPE --mountpoint /)"
p marker "$([ -e /var/tmp/volatile-marker ] && echo present || echo absent)"
echo written > /var/tmp/volatile-marker && sync
p marker_now "$([ -e /var/tmp/volatile-marker ] && echo present || echo absent)"
p token "$(h /etc/edgeclaw/gateway.token)"
p config "$(h /etc/edgeclaw/config.yaml)"
p identity "$(h /var/lib/edgeclaw/identity.json)"
p hostname "$(cat /etc/hostname)"
p machine_id "$(cat /etc/machine-id)"
p ssh_hostkey "$(h /etc/ssh/ssh_host_ed25519_key.pub)"
p persistent_mounts "$(findmnt -n -o TARGET /etc/edgeclaw),$(findmnt -n -o TARGET /var/lib/edgeclaw)"
p lower_mib "$(df -B1M --output=size /run/edgeclaw-volatile/lower | tail -n 1 | tr -d ' ')"
p edgeclaw "$(systemctl is-active edgeclaw.service)"
p growroot "$(systemctl is-active edgeclaw-growroot.service)"
p volatile "$(/usr/local/sbin/edgeclaw-volatile status | head -n 1 | tr ' ;' '_,')"
p volatile_on "$(/usr/local/sbin/edgeclaw-volatile on | tr ' ' _)"
p mdns "$(resolvectl status --no-pager 2>&1 | sed -n 's/^ *Protocols: //p' | head -n 1 | tr ' ' ,)"
p failed "$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ',')"
p done yes
systemctl poweroff --no-block
"""
PROBE_UNIT = """[Unit]
Description=image test probe (injected by tests/image/test_image.py; not part of the image)
After=edgeclaw.service edgeclaw-firstboot.service edgeclaw-growroot.service edgeclaw-ssh-hostkeys.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/edgeclaw-test-probe
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def inject_probe(disk: Path, tmp_path: Path) -> None:
    script, unit = tmp_path / "probe.sh", tmp_path / "probe.service"
    script.write_text(PROBE_SCRIPT)
    unit.write_text(PROBE_UNIT)
    cmds = tmp_path / "debugfs.cmds"
    cmds.write_text(
        f"write {script} /usr/local/sbin/edgeclaw-test-probe\n"
        "sif /usr/local/sbin/edgeclaw-test-probe mode 0100755\n"
        f"write {unit} /etc/systemd/system/edgeclaw-test-probe.service\n"
        "sif /etc/systemd/system/edgeclaw-test-probe.service mode 0100644\n"
        "symlink /etc/systemd/system/multi-user.target.wants/edgeclaw-test-probe.service "
        "/etc/systemd/system/edgeclaw-test-probe.service\n"
    )
    sh("debugfs", "-w", "-f", str(cmds), f"{disk}?offset={root_offset(disk)}")
    assert "edgeclaw-test-probe" in debugfs(disk, "ls /etc/systemd/system/multi-user.target.wants")


def probe_boot(
    disk: Path, boot: tuple[Path, Path], tmp_path: Path, name: str
) -> tuple[dict[str, str], str, float]:
    """Boot with the read-only root until the probe has reported and powered the guest off."""
    console = tmp_path / f"{name}.log"
    t0 = time.monotonic()
    proc = start_qemu(disk, boot, console, tmp_path / f"{name}.sock", "systemd.volatile=overlay")
    try:
        wait_console(console, r"PROBE done=yes", 600, proc)
        power_off(proc, None, timeout=120)  # the probe powers off
    finally:
        stop(proc)
    text = console.read_text(errors="replace")
    return dict(re.findall(r"PROBE (\w+)=(\S*)", text)), text, time.monotonic() - t0


@pytest.mark.timeout(1800)
def test_qemu_read_only_root_keeps_node_state_and_grows_root(
    built: Built, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`systemd.volatile=overlay` from the very first boot: / is an overlay on RAM, a write outside
    the node's directories is gone after a reboot, while what first boot wrote (config, token,
    identity, hostname) and the card's machine id and SSH host key stay; the root partition and its
    ext4 are grown to the enlarged disk underneath the overlay."""
    disk = tmp_path / "disk.img"
    sh("cp", "--sparse=always", str(built.image), str(disk))
    fs_before = ext4_bytes(disk)
    sh("truncate", "-s", "+1G", str(disk))
    settings = tmp_path / "edgeclaw.yaml"
    settings.write_text(
        f'gateway:\n  url: {GATEWAY}\n  token: "{TOKEN}"\nnode:\n  display_name: Volatile Pi\n'
        f"ssh:\n  authorized_keys:\n    - {SSH_KEY}\n"
    )
    sh("mcopy", "-i", f"{disk}@@{4 * MiB}", str(settings), "::edgeclaw.yaml")
    inject_probe(disk, tmp_path)
    boot = boot_files(disk, tmp_path)
    first, text1, t1 = probe_boot(disk, boot, tmp_path, "boot1")
    diag = f"boot 1: {first}\n{text1[-4000:]}"
    assert first.get("fstype") == "overlay", diag
    assert "edgeclaw-firstboot: secrets removed from the boot partition" in text1, diag
    assert re.search(r"edgeclaw-growroot: root filesystem on \S+ grown from", text1), diag
    assert first["marker"] == "absent" and first["marker_now"] == "present", diag
    assert first["persistent_mounts"] == "/etc/edgeclaw,/var/lib/edgeclaw", diag
    assert first["token"] != "missing" and first["identity"] != "missing", diag
    assert first["hostname"] == "volatile-pi" and first["edgeclaw"] == "active", diag
    assert first["growroot"] == "active", diag
    # systemd-resolved's mDNS responder is on (the card's resolved.conf.d); links opt in by .network
    assert "+mDNS" in first.get("mdns", "").split(","), diag
    assert int(first["lower_mib"]) * MiB > fs_before + 900 * MiB, diag
    second, text2, t2 = probe_boot(disk, boot, tmp_path, "boot2")
    diag = f"boot 1: {first}\nboot 2: {second}\n{text2[-4000:]}"
    assert second.get("fstype") == "overlay", diag
    assert second["marker"] == "absent", "a write outside the persistent directories survived: " + diag
    for key in ("token", "config", "identity", "hostname", "machine_id", "ssh_hostkey"):
        assert second[key] == first[key], f"{key} changed across the reboot: {diag}"
    assert "secrets removed from the boot partition" not in text2, "first boot ran again: " + diag
    assert second["edgeclaw"] == "active", diag
    for state in (first, second):
        failed = {u for u in state["failed"].split(",") if u} - {"systemd-networkd-wait-online.service"}
        assert not failed, f"failed units: {failed}\n{diag}"
    assert TOKEN not in text1 + text2, "the token leaked onto the console"
    # on the card itself: grown, the node's files there, the marker not
    assert_root_fills_disk(disk, fs_before)
    assert debugfs(disk, "cat /etc/edgeclaw/gateway.token").strip() == TOKEN
    assert debugfs(disk, "cat /etc/hostname").strip() == "volatile-pi"
    assert "ci@test" in debugfs(disk, "cat /root/.ssh/authorized_keys")
    assert "identity.json" in debugfs(disk, "ls /var/lib/edgeclaw")
    assert "volatile-marker" not in debugfs(disk, "ls /var/tmp")
    # `edgeclaw-volatile on` (run by the probe on both boots): the parameter once in cmdline.txt on
    # the FAT partition, the rest of the line kept, and in raspi-firmware's extra cmdline on the card
    assert first["volatile"].startswith("this_boot:_read-only_root"), diag
    cmdline = sh("mtype", "-i", f"{disk}@@{4 * MiB}", "::cmdline.txt")
    assert cmdline.count("systemd.volatile=overlay") == 1 and f"root={card_root_spec(disk)} " in cmdline, (
        cmdline
    )
    assert len(cmdline.strip().splitlines()) == 1 and cmdline.strip().endswith(" systemd.volatile=overlay"), (
        cmdline
    )
    extra = debugfs(disk, "cat /etc/default/raspi-extra-cmdline").strip()
    assert extra == "systemd.volatile=overlay", extra
    report(request, f"QEMU read-only root: boot 1 (first boot + growroot) {t1:.0f} s, boot 2 {t2:.0f} s")
