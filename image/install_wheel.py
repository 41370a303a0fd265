#!/usr/bin/env python3
"""Install a pure-Python wheel into a venv inside the image's root, from the host, without
emulation: EdgeClaw's own wheel goes on top of the cached dependency layer in seconds instead of
a pip run under qemu-user.

What pip would do for a `py3-none-any` wheel: unpack purelib into site-packages, write the console
scripts with the venv's interpreter as shebang, byte-compile (the host's CPython must have the
venv's major.minor: .pyc files depend on it, not on the CPU), and record every file in RECORD so
`pip uninstall` works on the device. Anything that is not pure Python is refused (exit 2) and the
caller falls back to pip inside the root.

    install_wheel.py --root ROOTFS --venv /opt/edgeclaw/venv WHEEL
"""

from __future__ import annotations

import argparse
import base64
import compileall
import configparser
import csv
import hashlib
import io
import os
import re
import sys
import zipfile
from pathlib import Path, PurePosixPath

SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {attr}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({call}())
"""


class NotPure(Exception):
    pass


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def venv_python_version(venv: Path) -> tuple[int, int]:
    cfg = (venv / "pyvenv.cfg").read_text()
    m = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", cfg, re.M)
    if not m:
        raise SystemExit(f"{venv}/pyvenv.cfg names no Python version")
    return int(m.group(1)), int(m.group(2))


def install(wheel: Path, root: Path, venv_path: str) -> list[str]:
    venv = root / venv_path.lstrip("/")
    major, minor = venv_python_version(venv)
    site_rel = f"lib/python{major}.{minor}/site-packages"
    site = venv / site_rel
    if not site.is_dir():
        raise SystemExit(f"{site} does not exist (is the venv layer in place?)")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next((n.split("/")[0] for n in names if re.match(r"^[^/]+\.dist-info/WHEEL$", n)), None)
        if dist_info is None:
            raise NotPure(f"{wheel.name}: no .dist-info/WHEEL")
        meta = zf.read(f"{dist_info}/WHEEL").decode()
        if not re.search(r"^Root-Is-Purelib:\s*true\s*$", meta, re.M | re.I):
            raise NotPure(f"{wheel.name}: not Root-Is-Purelib")
        tags = re.findall(r"^Tag:\s*(\S+)", meta, re.M)
        if not tags or not all(t.endswith("-none-any") for t in tags):
            raise NotPure(f"{wheel.name}: tags {tags}")
        if any(re.match(r"^[^/]+\.data/", n) for n in names):
            raise NotPure(f"{wheel.name}: has a .data directory")
        written: list[tuple[Path, bytes]] = []
        for name in names:
            if name.endswith("/") or name == f"{dist_info}/RECORD":
                continue
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts:
                raise SystemExit(f"{wheel.name}: unsafe path {name}")
            data = zf.read(name)
            dest = site / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.chmod(0o644)
            written.append((dest, data))
        entry_points = (
            zf.read(f"{dist_info}/entry_points.txt").decode()
            if f"{dist_info}/entry_points.txt" in names
            else ""
        )
    # console scripts, as pip writes them
    python = f"{venv_path.rstrip('/')}/bin/python{major}"
    scripts: list[str] = []
    if entry_points:
        cp = configparser.ConfigParser(delimiters=("=",))
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(entry_points)
        if cp.has_section("console_scripts"):
            for script, target in cp.items("console_scripts"):
                module, _, attr = target.strip().partition(":")
                attr = attr.split("[")[0].strip()
                text = SCRIPT.format(python=python, module=module.strip(), attr=attr.split(".")[0], call=attr)
                dest = venv / "bin" / script
                dest.write_text(text)
                dest.chmod(0o755)
                written.append((dest, text.encode()))
                scripts.append(script)
    for marker, content in (("INSTALLER", b"edgeclaw-image\n"), ("REQUESTED", b"")):
        dest = site / dist_info / marker
        dest.write_bytes(content)
        written.append((dest, content))
    # byte-compile with the host's CPython: same major.minor, same bytecode; paths as on the device
    packages = sorted({(site / n).relative_to(site).parts[0] for n in names if n.endswith(".py")})
    if sys.version_info[:2] == (major, minor):
        for top in packages:
            pkg_path = site / top
            ddir = f"{venv_path.rstrip('/')}/{site_rel}/{top}"
            if pkg_path.is_dir():
                ok = compileall.compile_dir(str(pkg_path), ddir=ddir, quiet=1, workers=0)
                pycs = list(pkg_path.rglob("*.pyc"))
            else:
                ok = compileall.compile_file(str(pkg_path), ddir=os.path.dirname(ddir), quiet=1)
                pycs = list((site / "__pycache__").glob(f"{pkg_path.stem}.*.pyc"))
            if not ok:
                raise SystemExit(f"byte-compiling {top} failed")
            written += [(pyc, pyc.read_bytes()) for pyc in pycs]
    else:
        print(f"install_wheel: host Python {sys.version_info[0]}.{sys.version_info[1]} != venv's {major}.{minor}: "
              "not byte-compiled", file=sys.stderr)  # fmt: skip
    # RECORD, relative to site-packages
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for path, data in written:
        w.writerow([os.path.relpath(path, site), record_hash(data), len(data)])
    w.writerow([f"{dist_info}/RECORD", "", ""])
    (site / dist_info / "RECORD").write_text(buf.getvalue())
    return scripts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--venv", required=True, help="the venv's path inside the root, e.g. /opt/edgeclaw/venv")
    ap.add_argument("wheel")
    args = ap.parse_args()
    try:
        scripts = install(Path(args.wheel), Path(args.root), args.venv)
    except NotPure as exc:
        print(f"install_wheel: {exc}", file=sys.stderr)
        return 2
    print(f"installed {Path(args.wheel).name} (scripts: {', '.join(scripts) or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
