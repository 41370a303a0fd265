#!/usr/bin/env python3
"""Build an EdgeClaw release on the Ansible controller: the project's wheel plus a wheelhouse of its
dependencies for each board platform, so the boards install with `pip --no-index` and need no index.

A release is named `<version>-<source digest>`: the digest covers every file that goes into the wheel,
so an unchanged tree is the same release (nothing rebuilt, `changed: false`), and any edit is a new one.
Prints one JSON object: {"changed", "release", "version", "wheel", "wheelhouses": {platform: dir}}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

SOURCE_TOP = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in")
# bump when the layout of a built release changes, so old caches are not reused
LAYOUT = "2"
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def source_files(root: Path, package: str) -> list[Path]:
    files = [root / name for name in SOURCE_TOP if (root / name).is_file()]
    for path in sorted((root / package).rglob("*")):
        if path.is_file() and not SKIP_PARTS.intersection(path.parts) and path.suffix not in (".pyc", ".pyo"):
            files.append(path)
    return files


def digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256(f"layout {LAYOUT}\n".encode())
    for path in files:
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()[:12]


def platform_tags(arch: str, glibc: str) -> list[str]:
    """manylinux tags a board with this glibc can run (pip does not expand manylinux_2_X itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    if arch in ("x86_64", "i686"):
        tags += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    elif arch in ("aarch64", "armv7l", "ppc64le", "s390x"):
        tags.append(f"manylinux2014_{arch}")
    return tags + [f"linux_{arch}"]


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def build_wheel(root: Path, files: list[Path], out: Path) -> Path:
    """`pip wheel --no-deps` from a clean copy, so the checkout gets no build/ or egg-info litter."""
    with tempfile.TemporaryDirectory(prefix="edgeclaw-build-") as tmp:
        src = Path(tmp) / "src"
        for path in files:
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        wheels = Path(tmp) / "wheels"
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)])
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise SystemExit(f"expected one wheel, got {[p.name for p in built]}")
        out.mkdir(parents=True, exist_ok=True)
        target = out / built[0].name
        shutil.copy2(built[0], target)
        return target


def download_deps(wheel: Path, extras: list[str], platform: str, pyver: str, dest: Path) -> None:
    arch, glibc = platform.split("-glibc")
    nodot = pyver.replace(".", "")
    spec = f"edgeclaw[{','.join(extras)}] @ {wheel.resolve().as_uri()}" if extras else str(wheel)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
           "--python-version", pyver, "--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3",
           "--abi", "none"]
    for tag in platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    cmd += ["--platform", "any", "--find-links", str(dest), spec]
    # A dependency published only as an sdist (sdnotify, say) has no wheel for pip to download for
    # another platform: build it here once, and accept it only if it is pure Python.
    for _ in range(10):
        proc = run(cmd, check=False)
        if proc.returncode == 0:
            return
        missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if not missing:
            break
        built = Path(tempfile.mkdtemp(prefix="edgeclaw-sdist-"))
        try:
            run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--no-binary", ":all:",
                 "-w", str(built), missing.group(1)])
            for whl in built.glob("*.whl"):
                if not whl.name.endswith("-none-any.whl"):
                    raise SystemExit(f"{missing.group(1)} has no wheel for {platform} and is not pure Python: "
                                     "put a wheel for it in the wheelhouse by hand")
                shutil.move(str(whl), dest / whl.name)
        finally:
            shutil.rmtree(built, ignore_errors=True)
    raise SystemExit(f"pip download for {platform} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="the EdgeClaw checkout (has pyproject.toml)")
    ap.add_argument("--out", required=True, help="controller-side cache of built releases")
    ap.add_argument("--target", action="append", default=[],
                    help="ARCH-glibcX.Y:PYTHON, e.g. aarch64-glibc2.36:3.11 (repeat per platform)")
    args = ap.parse_args()
    root = Path(args.source).resolve()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project.get("version")
    if not version:
        raise SystemExit("pyproject.toml has no static version")
    extras = sorted(k for k in project.get("optional-dependencies", {}) if k != "test")
    files = source_files(root, name.replace("-", "_"))
    release = f"{version}-{digest(root, files)}"
    rel_dir = Path(args.out).resolve() / release
    changed = False
    wheel_dir = rel_dir / "wheel"
    wheels = sorted(wheel_dir.glob("*.whl")) if (rel_dir / ".wheel-complete").exists() else []
    if not wheels:
        shutil.rmtree(wheel_dir, ignore_errors=True)
        wheels = [build_wheel(root, files, wheel_dir)]
        (rel_dir / ".wheel-complete").touch()
        changed = True
    houses: dict[str, dict[str, str]] = {}
    for target in sorted(set(args.target)):
        platform, pyver = target.rsplit(":", 1)
        house = rel_dir / f"wheelhouse-{platform}-py{pyver}"
        marker = house / ".complete"
        if not marker.exists():
            shutil.rmtree(house, ignore_errors=True)
            house.mkdir(parents=True)
            download_deps(wheels[0], extras, platform, pyver, house)
            # pip itself, run straight from its wheel on the board: the venvs need no pip of their own
            run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                 "-d", str(house), "pip"])
            # one archive: a single transfer to the board instead of one per wheel
            with tarfile.open(house / "wheelhouse.tar", "w") as tar:
                for whl in sorted(house.glob("*.whl")):
                    tar.add(whl, arcname=whl.name)
            marker.touch()
            changed = True
        pip_wheel = sorted(house.glob("pip-*.whl"))[-1].name
        houses[target] = {"archive": str(house / "wheelhouse.tar"), "pip": pip_wheel}
    print(json.dumps({"changed": changed, "release": release, "version": version, "name": name,
                      "wheel": str(wheels[0]), "extras": extras, "wheelhouses": houses}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
