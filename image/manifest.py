#!/usr/bin/env python3
"""The image's manifest (JSON on stdout): Debian package versions, the venv's Python packages, the
EdgeClaw release and the build time. Read from the staged root on the host, no emulation."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def dpkg_packages(root: Path) -> dict[str, str]:
    packages: dict[str, str] = {}
    for stanza in (root / "var/lib/dpkg/status").read_text(encoding="utf-8").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            packages[fields["Package"] + (f":{arch}" if arch not in ("all", "arm64") else "")] = fields["Version"]
    return dict(sorted(packages.items()))


def python_packages(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for meta in root.glob("opt/edgeclaw/venv/lib/python3*/site-packages/*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in meta.read_text(errors="replace").splitlines()[:20] if ": " in line)
        if "Name" in fields:
            found[fields["Name"]] = fields.get("Version", "?")
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root")
    ap.add_argument("--edgeclaw", required=True, help="the EdgeClaw release (version-digest)")
    ap.add_argument("--base", required=True, help="the cached base tarball's name")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--snapshot", default="")
    args = ap.parse_args()
    root = Path(args.root)
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    doc = {
        "edgeclaw": args.edgeclaw,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suite": args.suite,
        "arch": "arm64",
        "snapshot": args.snapshot or None,
        "base": args.base,
        "kernel": kernels,
        "boards": ["Raspberry Pi 3/3+/3A+", "Raspberry Pi 4/400", "Raspberry Pi Zero 2 W", "CM3", "CM4"],
        "python": python_packages(root),
        "debian": dpkg_packages(root),
    }
    json.dump(doc, fp=__import__("sys").stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
