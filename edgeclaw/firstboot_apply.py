"""First boot's writes: token, setup code, identity, config, hostname, Wi-Fi and SSH key onto a root
filesystem, each recorded in an Undo first so a failure part-way puts everything back, and the copy
through to the card's real root under the read-only overlay (see edgeclaw.firstboot for the why)."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from edgeclaw.firstboot_board import apply_board
from edgeclaw.firstboot_txn import Undo

if TYPE_CHECKING:
    from edgeclaw.firstboot import Plan

CONFIG_PATH = "/etc/edgeclaw/config.yaml"
TOKEN_PATH = "/etc/edgeclaw/gateway.token"
STATE_DIR = "/var/lib/edgeclaw"
WPA_CONF = "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
WPA_WANTS = "/etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
# where the image's initramfs leaves the real root when / is a RAM overlay (systemd.volatile=overlay)
VOLATILE_LOWER = "/run/edgeclaw-volatile/lower"
# bind-mounted from the real root under the overlay: already persistent
PERSISTENT_DIRS = ("/etc/edgeclaw", STATE_DIR)


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _owner(root: Path, user: str) -> tuple[int, int] | None:
    """uid/gid of `user` in root's /etc/passwd (the target system's, not the build host's)."""
    if root == Path("/"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(user)
            return entry.pw_uid, entry.pw_gid
        return None
    with contextlib.suppress(OSError):
        for line in _under(root, "/etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 3 and parts[0] == user:
                return int(parts[2]), int(parts[3])
    return None


def _write(path: Path, text: str, mode: int, owner: tuple[int, int] | None, undo: Undo) -> None:
    from edgeclaw.platform.atomicfile import write_atomic

    undo.before(path)
    write_atomic(path, text, mode=mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)


def apply(
    plan: Plan,
    root: Path,
    *,
    source: str,
    live: bool,
    written: list[str] | None = None,
    undo: Undo | None = None,
) -> list[str]:
    """Write everything; returns what was done, for the console and the report on the FAT partition.
    `written` collects the absolute paths (as on the device) of the system files it wrote; `undo`
    records what each path held before, so a failure part-way can put it all back."""
    from edgeclaw.platform.state import StateDir

    done: list[str] = []
    written = written if written is not None else []
    undo = undo if undo is not None else Undo()
    service = _owner(root, "edgeclaw")
    state = StateDir(_under(root, STATE_DIR))
    undo.before(state.identity_path)  # also records the state directory if it is new
    identity = state.load_or_create_identity()  # first: check_identity() has vetted an existing one
    done.append(f"device id {identity.device_id}")
    if plan.token:
        _write(_under(root, TOKEN_PATH), plan.token + "\n", 0o600, service, undo)
        done.append(f"gateway token -> {TOKEN_PATH} (0600)")
    if plan.setup_code:
        _write(_under(root, f"{STATE_DIR}/setup-code"), plan.setup_code + "\n", 0o600, service, undo)
        done.append(f"setup code -> {STATE_DIR}/setup-code (0600, deleted once paired)")
    config_path = _under(root, CONFIG_PATH)
    if config_path.exists():
        previous = config_path.with_name("config.yaml.previous")
        undo.before(previous)
        undo.before(config_path)
        with contextlib.suppress(OSError):
            config_path.replace(previous)
    header = f"# Written by `edgeclaw firstboot` from {source} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.\n"
    _write(config_path, header + yaml.safe_dump(plan.config, sort_keys=False), 0o644, None, undo)
    done.append(f"config -> {CONFIG_PATH}")
    if plan.hostname:
        _write(_under(root, "/etc/hostname"), plan.hostname + "\n", 0o644, None, undo)
        written += ["/etc/hostname", "/etc/hosts"]
        hosts = _under(root, "/etc/hosts")
        old = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
        kept = [line for line in old.splitlines() if not line.startswith("127.0.1.1")]
        _write(hosts, "\n".join([*kept, f"127.0.1.1\t{plan.hostname}"]) + "\n", 0o644, None, undo)
        if live:
            with contextlib.suppress(OSError):
                socket.sethostname(plan.hostname)
        done.append(f"hostname {plan.hostname}")
    if plan.wifi:
        w = plan.wifi
        net = [f"\tssid={w.ssid.encode().hex()}", "\tscan_ssid=1" if w.hidden else None]
        net.append(f"\tpsk={w.psk_hex}" if w.psk_hex else "\tkey_mgmt=NONE")
        body = "\n".join(line for line in net if line)
        conf = f"ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\ncountry={w.country}\n\nnetwork={{\n{body}\n}}\n"
        _write(_under(root, WPA_CONF), conf, 0o600, None, undo)
        wants = _under(root, WPA_WANTS)
        undo.before(wants)
        wants.parent.mkdir(parents=True, exist_ok=True)
        if not wants.is_symlink():
            wants.symlink_to("/lib/systemd/system/wpa_supplicant@.service")
        written += [WPA_CONF, WPA_WANTS]
        if live:  # this boot's transaction was computed before the symlink existed
            subprocess.run(
                ["systemctl", "--no-block", "start", "wpa_supplicant@wlan0.service"], check=False, timeout=30
            )
        done.append(f"wi-fi {w.ssid!r}, country {w.country}")
    if plan.ssh_keys:
        ssh_dir = _under(root, "/root/.ssh")
        undo.before(ssh_dir / "authorized_keys")
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        existing = auth.read_text().splitlines() if auth.exists() else []
        merged = existing + [k for k in plan.ssh_keys if k not in existing]
        _write(auth, "\n".join(merged) + "\n", 0o600, None, undo)
        written.append(AUTHORIZED_KEYS)
        done.append(f"{len(plan.ssh_keys)} SSH key(s) for root")
    done += apply_board(plan.board, root, Path(source).parent, undo=undo, written=written)
    return done


def volatile_lower(root: Path) -> Path | None:
    """The real root when this system's / is the image's RAM overlay, else None."""
    lower = Path(VOLATILE_LOWER)
    if root == Path("/") and os.path.ismount(lower):
        return lower
    return None


def persist(paths: list[str], root: Path, lower: Path, undo: Undo | None = None) -> list[str]:
    """Copy files written under `root` to the same places under `lower` (the card's real root),
    each atomically, with its mode, owner and parent directories (modes copied too). Paths inside
    the persistent (bind-mounted) directories are skipped. Returns the paths copied."""
    import shutil

    copied: list[str] = []
    for path in dict.fromkeys(paths):
        if any(path == d or path.startswith(d + "/") for d in PERSISTENT_DIRS):
            continue
        src = _under(root, path)
        if not (src.exists() or src.is_symlink()):
            continue
        dest = _under(lower, path)
        if undo is not None:
            undo.before(dest)
        # parents first, with the modes they have on the running system (e.g. /root/.ssh 0700)
        missing = []
        parent = dest.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir()
            st = _under(root, "/" + str(d.relative_to(lower))).stat()
            os.chmod(d, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(d, st.st_uid, st.st_gid)
        tmp = dest.with_name(dest.name + ".edgeclaw-new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if src.is_symlink():
            tmp.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, tmp)
            st = src.stat()
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, dest)
        copied.append(path)
    with contextlib.suppress(OSError):
        os.sync()
    return copied


def wipe(path: Path) -> None:
    """Overwrite the file in place (FAT reuses the same clusters), then delete it."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
