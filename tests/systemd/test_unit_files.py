"""The shipped unit passes systemd's own linters, checked against the rootfs EdgeClaw is installed in
(so ExecStart= and friends resolve to the real installed files)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import nspawn
from tests.systemd.conftest import report

UNIT = "/etc/systemd/system/edgeclaw.service"
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def merged(installed: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with nspawn.overlay(installed, tmp_path_factory.mktemp("lint")) as (root, _):
        yield root


def test_verify_prints_nothing(merged: Path) -> None:
    # verify exits 0 on unknown keys and bad values (it only warns), so any output is a failure
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={merged}", UNIT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_security_exposure_at_most_2_5(merged: Path) -> None:
    proc = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={merged}",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            UNIT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for edgeclaw\.service: ([\d.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    report(f"systemd-analyze security exposure: {m.group(1)}")
    assert float(m.group(1)) <= MAX_EXPOSURE and proc.returncode == 0, proc.stdout


def test_sysusers_created_the_user_and_groups(merged: Path) -> None:
    group = (merged / "etc/group").read_text()
    for name in ("gpio", "video"):
        line = next((g for g in group.splitlines() if g.startswith(f"{name}:")), "")
        assert "edgeclaw" in line.split(":")[-1].split(","), line
    passwd = next(p for p in (merged / "etc/passwd").read_text().splitlines() if p.startswith("edgeclaw:"))
    assert passwd.endswith(":/usr/sbin/nologin")
