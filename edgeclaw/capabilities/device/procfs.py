"""Small, forgiving readers of /proc, /sys and /etc under a root path.

Every reader takes `root` so tests feed a fake tree laid out like a real board; a file the board does not
have yields None (the caller leaves the field out) rather than a zero that looks like a measurement.
"""

from __future__ import annotations

from pathlib import Path


def read_text(root: Path, rel: str) -> str | None:
    """The file's text without trailing NULs/whitespace (device-tree strings end in NUL), or None."""
    try:
        raw = (root / rel.lstrip("/")).read_bytes()
    except OSError:
        return None
    text = raw.rstrip(b"\x00").decode("utf-8", "replace").strip()
    return text


def read_int(root: Path, rel: str, base: int = 10) -> int | None:
    text = read_text(root, rel)
    if text is None:
        return None
    try:
        return int(text.split()[0], base) if text else None
    except ValueError:
        return None


def read_float(root: Path, rel: str) -> float | None:
    text = read_text(root, rel)
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


def key_values(text: str | None, sep: str = ":") -> dict[str, str]:
    """`Key: value` lines (meminfo, cpuinfo, /proc/self/status) → {key: value}; the first key wins."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, found, value = line.partition(sep)
        key = key.strip()
        if found and key and key not in out:
            out[key] = value.strip()
    return out


def os_release(root: Path) -> dict[str, str]:
    """/etc/os-release (falling back to /usr/lib/os-release) as a dict with the quotes removed."""
    text = read_text(root, "etc/os-release") or read_text(root, "usr/lib/os-release")
    out: dict[str, str] = {}
    for key, value in key_values(text, "=").items():
        out[key] = value.strip().strip('"').strip("'")
    return out


def meminfo_bytes(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in key_values(read_text(root, "proc/meminfo")).items():
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def list_dir(root: Path, rel: str) -> list[str]:
    try:
        return sorted(p.name for p in (root / rel.lstrip("/")).iterdir())
    except OSError:
        return []


def exists(root: Path, rel: str) -> bool:
    return (root / rel.lstrip("/")).exists()
