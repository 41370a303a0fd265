"""The card every image-tier test uses: built once per session by `image/build.sh` (or taken from
EDGECLAW_IMAGE_PREBUILT), shared through conftest.py by test_image.py and test_raspi.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
HOST_TOOLS = [
    ("qemu-system-arm", "qemu-system-aarch64"),
    ("systemd-container", "systemd-nspawn"),
    ("mtools", "mcopy"),
]


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
