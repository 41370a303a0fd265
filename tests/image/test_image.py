"""The SD-card image, built and booted (the slow "image" tier; root and a Debian host needed).

1. `image/build.sh` builds it (base rootfs cached by its package list) and prints its timings.
2. The artifacts: partition table, FAT boot files for the Pi boards, ext4 root by label, checksum,
   manifest, and the rootfs settings a user relies on (keys-only SSH, no baked-in host keys...).
3. QEMU `-M virt` (no network at all) boots the image with a test edgeclaw.yaml on its FAT
   partition: first boot consumes it and wipes the secret, edgeclaw.service reaches READY and its
   STATUS= says it is trying to reach the configured gateway.
4. systemd-nspawn boots the same root (arm64 through qemu-user) beside a real gateway on loopback,
   in a network namespace of its own: first boot + setup code -> paired -> answers an invoke.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
TOKEN = "qemu-test-token-5f3a9c"
GATEWAY = "ws://192.168.1.250:18789"  # never reached: the guest has no network device
HOST_TOOLS = [
    ("qemu-system-arm", "qemu-system-aarch64"),
    ("systemd-container", "systemd-nspawn"),
    ("mtools", "mcopy"),
]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd3BTA0tGRBNdDU0GJ8vHzwzYVbMp1ZRDHgp3hxLfyi ci@test"


@dataclass
class Built:
    out: Path
    image: Path
    rootfs: Path
    manifest: dict
    log: str
    seconds: float

    @property
    def boot_offset(self) -> int:
        return 4 * MiB


def report(request: pytest.FixtureRequest, text: str) -> None:
    """Timings belong in the test output even when everything passes (printed by conftest.py)."""
    from tests.image.conftest import TIMINGS

    TIMINGS.append(text)


@pytest.fixture(scope="session")
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    if os.geteuid() != 0:
        pytest.fail("the image tier needs root (mmdebstrap, chroot, binfmt, nspawn)")
    missing = [pkg for pkg, tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:  # the build installs its own tools; the boots need these too
        subprocess.run(["apt-get", "update", "-qq"], timeout=600, check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=900,
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    prebuilt = os.environ.get("EDGECLAW_IMAGE_PREBUILT")  # iterate on the boot tests without rebuilding
    out = Path(prebuilt or os.environ.get("EDGECLAW_IMAGE_OUT") or tmp_path_factory.mktemp("image"))
    t0 = time.monotonic()
    if prebuilt:
        log = f"(prebuilt image in {out})\n{(out / 'edgeclaw.img').resolve()}"
        stdout = log
    else:
        proc = subprocess.run(
            [str(REPO / "image/build.sh"), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=3000,  # a cold base rootfs under qemu-user took 32 min on 2 busy cores
            check=False,
        )
        log, stdout = proc.stdout + proc.stderr, proc.stdout
        assert proc.returncode == 0, log[-6000:]
    seconds = time.monotonic() - t0
    timings = (
        stdout[stdout.find("== image build timings") :]
        if "== image build timings" in stdout
        else stdout[:200]
    )
    report(request, f"\n{timings.strip()}\n(build wall clock {seconds:.0f} s)")
    image = Path(stdout.strip().splitlines()[-1])
    yield Built(
        out=out,
        image=image,
        rootfs=out / "work/rootfs",
        manifest=json.loads((out / "edgeclaw.manifest.json").read_text()),
        log=log,
        seconds=seconds,
    )
    if not (prebuilt or os.environ.get("EDGECLAW_IMAGE_OUT")):
        shutil.rmtree(out, ignore_errors=True)


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
    assert m["built"] and m["arch"] == "arm64" and m["suite"] == "bookworm"
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
    cmdline = sh("mtype", "-i", f"{built.image}@@{4 * MiB}", "::cmdline.txt")
    assert "root=LABEL=rootfs" in cmdline and "rootwait" in cmdline
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
    assert len(list(r.glob("boot/initrd.img-*"))) == 1
    assert "update-initramfs" not in (r / "var/lib/dpkg/diversions").read_text()


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


@pytest.mark.timeout(1800)
def test_qemu_first_boot_consumes_file_and_node_reaches_ready(
    built: Built, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    disk = tmp_path / "disk.img"
    sh("cp", "--sparse=always", str(built.image), str(disk))
    fat = f"{disk}@@{4 * MiB}"
    settings = tmp_path / "edgeclaw.yaml"
    settings.write_text(
        f'gateway:\n  url: {GATEWAY}\n  token: "{TOKEN}"\nnode:\n  display_name: QEMU Pi\n'
        f"ssh:\n  authorized_keys:\n    - {SSH_KEY}\n"
    )
    sh("mcopy", "-i", fat, str(settings), "::edgeclaw.yaml")
    names = fat_ls(disk)
    kernel = next(n for n in names if n.split("/")[-1].startswith("vmlinuz-")).split("/")[-1]
    initrd = next(n for n in names if n.split("/")[-1].startswith("initrd.img-")).split("/")[-1]
    for name in (kernel, initrd):
        sh("mcopy", "-i", fat, f"::{name}", str(tmp_path / name))
    console = tmp_path / "console.log"
    monitor = tmp_path / "monitor.sock"
    cmd = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
        "-display", "none", "-nic", "none", "-no-reboot", "-serial", f"file:{console}",
        "-monitor", f"unix:{monitor},server,nowait",
        "-kernel", str(tmp_path / kernel), "-initrd", str(tmp_path / initrd),
        "-append", "root=LABEL=rootfs rw rootwait console=ttyAMA0 systemd.log_level=debug systemd.log_target=console",
        "-drive", f"file={disk},format=raw,if=virtio",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_console(console, r"Run /init as init process|Freeing unused kernel memory", 120, proc)
        t_init = time.monotonic() - t0
        wait_console(console, r"edgeclaw-firstboot: secrets removed from the boot partition", 400, proc)
        t_first = time.monotonic() - t0
        ready = wait_console(
            console,
            r"edgeclaw\.service: Got notification message from PID \d+ \([^)]*READY=1[^)]*\)",
            300,
            proc,
        )
        t_ready = time.monotonic() - t0
        status = wait_console(
            console,
            r"edgeclaw\.service: Got notification message from PID \d+ "
            r"\([^)]*STATUS=((?:connecting|gateway unreachable)[^)]*192\.168\.1\.250[^)]*)\)",
            120,
            proc,
        )
        text = console.read_text(errors="replace")
        assert "Dependency failed for EdgeClaw" not in text
        assert TOKEN not in text, "the token leaked onto the console"
        # clean power-off through the virt board's power button, so the disk is consistent
        monitor_command(monitor, "system_powerdown")
        try:
            proc.wait(180)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            pytest.fail("the guest did not power off within 180 s of the power button")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    report(
        request,
        f"QEMU boot: /init {t_init:.0f} s, first boot done {t_first:.0f} s, edgeclaw READY {t_ready:.0f} s; "
        f"STATUS={status.group(1)!r}",
    )
    assert "READY=1" in ready.group(0)
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
    root_part = partitions(disk)[1]
    root_img = tmp_path / "root.img"
    sh("dd", f"if={disk}", f"of={root_img}", "bs=1M", f"skip={root_part['start'] // 2048}", "conv=sparse",
       "status=none", timeout=300)  # fmt: skip
    stat_out = sh("debugfs", "-R", "stat /etc/edgeclaw/gateway.token", str(root_img))
    assert re.search(r"Mode:\s+0600", stat_out), stat_out
    assert sh("debugfs", "-R", "cat /etc/edgeclaw/gateway.token", str(root_img)).strip() == TOKEN
    assert "ci@test" in sh("debugfs", "-R", "cat /root/.ssh/authorized_keys", str(root_img))
    assert sh("debugfs", "-R", "cat /etc/hostname", str(root_img)).strip() == "qemu-pi"


# systemd-nspawn + real gateway ------------------------------------------------------------------------
@pytest.mark.timeout(1800)
def test_nspawn_root_pairs_with_real_gateway_and_answers_invoke(
    built: Built, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private",
         sys.executable, "-m", "tests.image.nspawn_pair", str(built.rootfs), str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    diag = json.dumps({k: v for k, v in result.items() if k != "device_info"}, indent=1)[-9000:]
    assert "error" not in result, diag
    report(
        request,
        f"nspawn: gateway start {result['gateway_start_s']} s, boot to paired+connected "
        f"{result['boot_to_connected_s']} s, invoke {result['invoke_s']} s, total {result['total_s']} s",
    )
    info = result["device_info"]
    assert info["architecture"] == "aarch64", info  # the arm64 root answered, through qemu-user
    assert "edgeclaw.yaml" not in result["fat_files"] and not result["setup_code_in_fat"], diag
    assert "Applied" in (result["firstboot_report"] or ""), diag
    assert result["state_dir_mode"] == "0o700"
    assert not result["setup_code_left"], "the single-use setup code was not removed after pairing"
    assert result["hostname"] == "image-nspawn"
