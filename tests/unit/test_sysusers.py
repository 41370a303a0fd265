"""systemd/sysusers.d/edgeclaw.conf under the host's real systemd-sysusers, on scratch roots shaped like
Debian (basic.conf: video, no gpio) and Raspberry Pi OS (gpio and video already in /etc/group): no
warning on the console at boot, and the service user ends in both device groups either way."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT_DIR = Path(__file__).resolve().parents[2]
BASIC = Path("/usr/lib/sysusers.d/basic.conf")
SYSUSERS = shutil.which("systemd-sysusers")

pytestmark = pytest.mark.skipif(
    SYSUSERS is None or not BASIC.exists(), reason="needs the host's systemd-sysusers and basic.conf"
)


def scratch_root(tmp_path: Path, group: str = "") -> Path:
    root = tmp_path / "root"
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy(BASIC, root / "usr/lib/sysusers.d/basic.conf")
    shutil.copy(ROOT_DIR / "systemd/sysusers.d/edgeclaw.conf", root / "usr/lib/sysusers.d/edgeclaw.conf")
    if group:
        (root / "etc/group").write_text(group)
    return root


def sysusers(root: Path) -> subprocess.CompletedProcess[str]:
    assert SYSUSERS is not None
    return subprocess.run(
        [SYSUSERS, f"--root={root}"], capture_output=True, text=True, timeout=60, check=False
    )


def members(root: Path) -> dict[str, list[str]]:
    out = {}
    for line in (root / "etc/group").read_text().splitlines():
        parts = line.split(":")
        out[parts[0]] = [m for m in parts[3].split(",") if m]
    return out


def test_debian_root_no_warning_and_edgeclaw_in_gpio_and_video(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    proc = sysusers(root)
    assert proc.returncode == 0, proc.stderr
    # stdout lists what it created; warnings ("Conflict with earlier configuration …") go to stderr
    assert "edgeclaw.conf" not in proc.stderr and "onflict" not in proc.stderr, proc.stderr
    groups = members(root)
    assert "edgeclaw" in groups["video"] and "edgeclaw" in groups["gpio"]
    video = [g for g in (root / "etc/group").read_text().splitlines() if g.startswith("video:")]
    assert len(video) == 1 and video[0].split(":")[2] == "44", "basic.conf's video (GID 44) is the one kept"
    assert "edgeclaw-run" not in groups["video"] + groups["gpio"]


def test_raspberry_pi_os_root_keeps_its_groups_and_adds_edgeclaw(tmp_path: Path) -> None:
    root = scratch_root(tmp_path, group="video:x:44:pi\ngpio:x:997:pi\n")
    proc = sysusers(root)
    assert proc.returncode == 0 and "onflict" not in proc.stderr, proc.stderr
    groups = members(root)
    assert sorted(groups["gpio"]) == ["edgeclaw", "pi"]
    assert sorted(groups["video"]) == ["edgeclaw", "pi"]
    gpio_line = next(g for g in (root / "etc/group").read_text().splitlines() if g.startswith("gpio:"))
    assert gpio_line.split(":")[2] == "997", "the existing gpio group is joined, not recreated"


def test_the_old_file_did_warn(tmp_path: Path) -> None:
    """The check above can fail: the previous file's `g video -` produces exactly the reported warning."""
    root = scratch_root(tmp_path)
    conf = root / "usr/lib/sysusers.d/edgeclaw.conf"
    conf.write_text("g video -\n" + conf.read_text())
    assert "Conflict with earlier configuration for group 'video'" in sysusers(root).stderr
