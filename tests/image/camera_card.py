"""A copy of the built card with Debian's ffmpeg on it, for the camera tests and the arm64 benchmark.

The shipped card has no ffmpeg (`EXTRA_PACKAGES=ffmpeg` adds it to the base, which is a 25-minute base
build): the V4L2 camera backend needs it, so this installs Debian's own `ffmpeg` package the way a user
would (`apt-get install --no-install-recommends ffmpeg`, arm64 through qemu-user) into the card's base
root, lays the files it added over the built root tree, and writes a fresh ext4 with the same label and
UUID into the root partition of a copy of the card (the partition table, hence PARTUUID, is the card's).
The added files (an overlay's upper directory) are cached by the base tarball's name, so only the first
run after a base change downloads and unpacks (the .debs go to the base build's .deb cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

CACHE = Path(os.environ.get("EDGECLAW_CACHE", Path.home() / ".cache" / "edgeclaw"))
MiB = 1024 * 1024
LAYER_VERSION = "ffmpeg-layer-1"

INSTALL = r"""
set -eu
M=$1; DEBS=$2
mount --bind /proc "$M/proc"
mount --bind /dev "$M/dev"
mkdir -p "$M/var/cache/apt/archives"
mount --bind "$DEBS" "$M/var/cache/apt/archives"
if [ -e "$M/etc/resolv.conf" ] || [ -L "$M/etc/resolv.conf" ]; then mv "$M/etc/resolv.conf" "$M/etc/resolv.conf.ec"; fi
cp /etc/resolv.conf "$M/etc/resolv.conf"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
chroot "$M" apt-get update -qq
chroot "$M" apt-get install -y -qq --no-install-recommends ffmpeg
rm -f "$M/etc/resolv.conf"
if [ -e "$M/etc/resolv.conf.ec" ] || [ -L "$M/etc/resolv.conf.ec" ]; then mv "$M/etc/resolv.conf.ec" "$M/etc/resolv.conf"; fi
rm -rf "$M"/var/lib/apt/lists/* "$M"/var/cache/debconf/*-old "$M"/var/log/apt/*
umount "$M/var/cache/apt/archives" "$M/dev" "$M/proc"
"""


def run(*cmd: str, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)[:300]}: exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout


def layer_path(manifest: dict) -> Path:
    key = hashlib.sha256(f"{manifest['base']}\n{LAYER_VERSION}".encode()).hexdigest()[:16]
    return CACHE / f"image-test-ffmpeg-{key}.tar.zst"


def ffmpeg_layer(manifest: dict, work: Path) -> Path:
    """The cached tarball of what installing ffmpeg adds to the base root (built on first use, on the
    base tarball itself: the layer depends on nothing EdgeClaw adds, so a new build reuses it)."""
    out = layer_path(manifest)
    if out.exists():
        return out
    rootfs = work / "base-root"
    rootfs.mkdir(parents=True, exist_ok=True)
    run("tar", "-C", str(rootfs), "--zstd", "-xpf", str(CACHE / manifest["base"]), "--numeric-owner",
        "--xattrs", "--xattrs-include=*", timeout=900)  # fmt: skip
    upper, ovl, merged = work / "layer-upper", work / "layer-work", work / "layer-merged"
    for d in (upper, ovl, merged):
        d.mkdir(parents=True, exist_ok=True)
    debs = CACHE / f"image-debs-{manifest.get('suite', 'trixie')}-{manifest.get('arch', 'arm64')}"
    debs.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={rootfs},upperdir={upper},workdir={ovl}"
    # a private mount namespace: every mount (overlay, binds) goes away with it, whatever happens
    script = f'mount -t overlay overlay -o "{opts}" "$0" && exec sh -c "$1" sh "$0" "$2"'
    run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(merged), INSTALL, str(debs),
        timeout=1500)  # fmt: skip
    tmp = out.with_name(out.name + f".tmp.{os.getpid()}")
    run("tar", "-C", str(upper), "--zstd", "--xattrs", "--xattrs-include=*", "-cpf", str(tmp), ".")
    tmp.rename(out)
    for d in (upper, ovl, rootfs):
        shutil.rmtree(d, ignore_errors=True)
    return out


def ext4_uuid(disk: Path, offset: int) -> str:
    with open(disk, "rb") as fh:
        fh.seek(offset + 1024 + 0x68)
        return str(uuid.UUID(bytes=fh.read(16)))


def camera_card(image: Path, rootfs: Path, manifest: dict, work: Path) -> Path:
    """A copy of the card whose root is the built root plus Debian's ffmpeg (same label, same UUID)."""
    work.mkdir(parents=True, exist_ok=True)
    layer = ffmpeg_layer(manifest, work)
    disk = work / "camera-card.img"
    run("cp", "--sparse=always", str(image), str(disk))
    parts = json.loads(run("sfdisk", "--json", str(disk)))["partitiontable"]["partitions"]
    offset, size = int(parts[1]["start"]) * 512, int(parts[1]["size"]) * 512
    fs_uuid = ext4_uuid(disk, offset)
    upper, ovl, merged = work / "card-upper", work / "card-work", work / "card-merged"
    for d in (upper, ovl, merged):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    run(
        "tar",
        "-C",
        str(upper),
        "--zstd",
        "--xattrs",
        "--xattrs-include=*",
        "-xpf",
        str(layer),
        "--numeric-owner",
    )
    opts = f"lowerdir={rootfs},upperdir={upper},workdir={ovl}"
    mkfs = (
        f'mount -t overlay overlay -o "{opts}" "$0" && '
        f'mke2fs -q -F -t ext4 -L rootfs -U {fs_uuid} -m 1 -d "$0" -E offset={offset} "$1" {size // 1024}k'
    )
    run(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        mkfs,
        str(merged),
        str(disk),
        timeout=600,
    )
    for d in (upper, ovl, merged):
        shutil.rmtree(d, ignore_errors=True)
    return disk
