#!/usr/bin/env python3
"""EdgeClaw's wheel plus an aarch64 (glibc 2.41, CPython 3.13 = trixie) wheelhouse of its
dependencies, for `pip install --no-index` inside the image's arm64 root.

A dependency with no aarch64 wheel for that Python that is not pure Python either (lgpio: PyPI has
cp39-cp312 wheels only) is left as its sdist in WHEELHOUSE/native/; image/native-wheel.sh compiles it
inside an arm64 copy of the base and puts the wheel beside the others. Environment markers are
evaluated for the card (Linux aarch64), not for this host.

The dependency wheelhouse is cached by the dependency list, so a build that only changes EdgeClaw
re-downloads nothing; EdgeClaw's own (pure Python) wheel is built every time (a few seconds).
Prints JSON: {"wheel", "wheelhouse", "version", "extras", "requirements"} (requirements: the
dependencies, extras included, that the image's cached venv layer is installed from).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

PYVER = "3.13"
ABI = "cp313"
PLATFORMS = [f"manylinux_2_{m}_aarch64" for m in range(41, 16, -1)] + ["manylinux2014_aarch64", "linux_aarch64"]
# what the card's pip sees when it evaluates markers (`platform_machine == 'aarch64'`…)
TARGET_ENV = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
              "os_name": "posix", "python_version": PYVER, "python_full_version": f"{PYVER}.5",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}  # fmt: skip


def for_target(requirements: list[str]) -> list[str]:
    """The requirements that apply on the card, markers removed (pip download would judge them by
    this x86 host and silently drop an ARM-only dependency such as lgpio)."""
    from pip._vendor.packaging.requirements import Requirement  # the host pip's own parser

    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(TARGET_ENV):
            out.append(f"{req.name}{req.specifier}")
    return out


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, check=False,
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1", "SOURCE_DATE_EPOCH": "315532800", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def download(requirements: list[str], dest: Path) -> None:
    base = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
            "--python-version", PYVER, "--implementation", "cp", "--abi", ABI, "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for tag in PLATFORMS:
        base += ["--platform", tag]
    base += ["--platform", "any", "--find-links", str(dest)]
    native: set[str] = set()  # names whose sdist goes to dest/native/ (compiled in an arm64 root)
    for _ in range(10):
        wanted = [r for r in requirements if re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() not in native]
        proc = run([*base, *wanted])
        if proc.returncode == 0:
            return
        missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if not missing:
            break
        name = re.split(r"[<>=!~ ;\[]", missing.group(1), maxsplit=1)[0].lower()
        # published only as an sdist (sdnotify): build it here, and keep it if it is pure Python
        with tempfile.TemporaryDirectory() as tmp:
            built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", ":all:",
                         "-w", tmp, missing.group(1)])  # fmt: skip
            wheels = list(Path(tmp).glob("*.whl"))
            if built.returncode == 0 and wheels and all(w.name.endswith("-none-any.whl") for w in wheels):
                for w in wheels:
                    shutil.move(str(w), dest / w.name)
                continue
        # compiled code with no wheel for the card's Python: its sdist, for image/native-wheel.sh
        (dest / "native").mkdir(exist_ok=True)
        got = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                   "-d", str(dest / "native"), missing.group(1)])  # fmt: skip
        if got.returncode != 0:
            raise SystemExit(f"{missing.group(1)}: no aarch64 wheel and no sdist\n{got.stderr[-2000:]}")
        native.add(name)
    raise SystemExit(f"pip download failed:\n{proc.stderr[-3000:]}")


def build_python(cache: Path) -> Path:
    """A cached venv with the build backend, so each build makes the wheel offline in seconds."""
    venv = cache / "image-build-venv"
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(py), "-m", "pip", "install", "-q", "setuptools>=68", "wheel"]):  # fmt: skip
            proc = run(cmd)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        (venv / ".complete").touch()
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True, help="where EdgeClaw's wheel goes")
    args = ap.parse_args()
    src = Path(args.source).resolve()
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    extras = sorted(k for k in project.get("optional-dependencies", {}) if k != "test")
    reqs = list(project.get("dependencies", [])) + [
        r for k in extras for r in project["optional-dependencies"][k]
    ]
    key = hashlib.sha256(json.dumps([reqs, PYVER, ABI, PLATFORMS]).encode()).hexdigest()[:16]
    house = Path(args.cache) / f"image-wheelhouse-{key}"
    if not (house / ".complete").exists():
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        download(for_target(reqs), house)
        (house / ".complete").touch()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:  # a clean copy: no build/ or egg-info litter in the tree
        copy = Path(tmp) / "src"
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "tests", "image", "ansible", "*.egg-info", "__pycache__", ".*_cache"))  # fmt: skip
        py = build_python(Path(args.cache))
        proc = run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(copy)])  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"building the EdgeClaw wheel failed:\n{proc.stderr[-3000:]}")
    wheel = next(out.glob("edgeclaw-*.whl"))
    files = sorted(p for p in (src / "edgeclaw").rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    print(json.dumps({"wheel": str(wheel), "wheelhouse": str(house), "extras": extras, "requirements": reqs,
                      "version": f"{project['version']}-{digest}"}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
