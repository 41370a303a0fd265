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
RUN_SOCKET = "/etc/systemd/system/edgeclaw-run.socket"
RUN_UNIT = "edgeclaw-run@0.service"  # an instance of the installed template, as Accept=yes starts them
MAX_EXPOSURE = 2.5
RUN_MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def merged(installed: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with nspawn.overlay(installed, tmp_path_factory.mktemp("lint")) as (root, _):
        yield root


@pytest.mark.parametrize("unit", [UNIT, RUN_SOCKET, RUN_UNIT])
def test_verify_prints_nothing(merged: Path, unit: str) -> None:
    # verify exits 0 on unknown keys and bad values (it only warns), so any output is a failure
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={merged}", unit], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


@pytest.mark.parametrize(("unit", "limit"), [(UNIT, MAX_EXPOSURE), (RUN_UNIT, RUN_MAX_EXPOSURE)])
def test_security_exposure_at_most_2_5(merged: Path, unit: str, limit: float) -> None:
    proc = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={merged}",
            f"--threshold={int(limit * 10)}",
            unit,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    name = re.escape(unit.rsplit("/", 1)[-1])
    m = re.search(rf"Overall exposure level for {name}: ([\d.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    report(f"systemd-analyze security exposure of {unit}: {m.group(1)}")
    assert float(m.group(1)) <= limit and proc.returncode == 0, proc.stdout


def test_sysusers_created_the_user_and_groups(merged: Path) -> None:
    group = (merged / "etc/group").read_text()
    for name in ("gpio", "video"):
        line = next((g for g in group.splitlines() if g.startswith(f"{name}:")), "")
        assert "edgeclaw" in line.split(":")[-1].split(","), line
    passwd = next(p for p in (merged / "etc/passwd").read_text().splitlines() if p.startswith("edgeclaw:"))
    assert passwd.endswith(":/usr/sbin/nologin")
    # runs get a user of their own, in no device group
    run = next(p for p in (merged / "etc/passwd").read_text().splitlines() if p.startswith("edgeclaw-run:"))
    assert run.endswith(":/usr/sbin/nologin") and run.split(":")[2] != passwd.split(":")[2]
    assert not [g for g in group.splitlines() if "edgeclaw-run" in g.split(":")[-1].split(",")]
