"""First boot's two failure guarantees, kept apart from the provisioning steps themselves:
all-or-nothing writes (`Undo` puts back every file and directory a failed run touched) and no secret
left on the FAT partition (`scrub` blanks the token, setup code and Wi-Fi passphrase in a file that
could not be applied, so a card handed back to a PC after a failure carries no credential)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from typing import Any

SECRET_KEYS = ("token", "setup_code", "psk")
# `key: value` in block or flow style; the value up to a comment, comma or closing brace
_SECRET_VALUE = re.compile(
    r"""(?m)(^|[{,\s])(""" + "|".join(SECRET_KEYS) + r""")([ \t]*:[ \t]*)("[^"\n]*"|'[^'\n]*'|[^\n,}#]*)"""
)
SCRUB_NOTE = (
    "# EdgeClaw first boot could not apply this file and removed its secrets (token, setup_code,\n"
    "# wifi psk): the boot partition has no permissions. Fix the file, put them in again, reboot.\n"
)


class Undo:
    """Remembers what each path held before first boot wrote it, so a failure can put it all back."""

    def __init__(self) -> None:
        self._saved: dict[Path, tuple[str, Any, int]] = {}
        self._created_dirs: list[Path] = []

    def before(self, path: Path) -> None:
        """Call before writing, replacing or creating `path` (and any missing parent directory)."""
        if path in self._saved:
            return
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        self._created_dirs.extend(d for d in reversed(missing) if d not in self._created_dirs)
        if path.is_symlink():
            self._saved[path] = ("link", os.readlink(path), 0)
        elif path.exists():
            self._saved[path] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        else:
            self._saved[path] = ("absent", None, 0)

    def rollback(self) -> list[str]:
        """Restore everything recorded, newest first; returns what could not be restored."""
        from edgeclaw.platform.atomicfile import write_atomic

        problems: list[str] = []
        for path, (kind, content, mode) in reversed(list(self._saved.items())):
            try:
                if path.is_symlink() or kind != "file":
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                if kind == "link":
                    path.symlink_to(content)
                elif kind == "file":
                    write_atomic(path, content, mode=mode)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
        for directory in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: never removes anything it did not create
        return problems


def secret_values(data: Any) -> list[str]:
    """The secret strings in a parsed edgeclaw.yaml (as far as it parsed), longest first."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in SECRET_KEYS and isinstance(value, (str, int)) and str(value).strip():
                found.append(str(value).strip())
            else:
                found.extend(secret_values(value))
    elif isinstance(data, list):
        for item in data:
            found.extend(secret_values(item))
    return sorted(set(found), key=len, reverse=True)


def scrub_text(text: str, secrets: list[str]) -> str:
    """`text` with every secret key's value blanked and every known secret value replaced."""
    out = _SECRET_VALUE.sub(lambda m: f'{m.group(1)}{m.group(2)}{m.group(3)}""', text)
    for secret in secrets:
        if len(secret) >= 4:  # a 1-3 character "secret" would shred unrelated text
            out = out.replace(secret, "REMOVED")
    if out != text and not out.startswith(SCRUB_NOTE):
        out = SCRUB_NOTE + out
    return out


def scrub(path: Path, secrets: list[str]) -> bool:
    """Blank the secrets in `path` in place (zeros over the old bytes first: FAT reuses the same
    clusters). Returns whether anything was removed."""
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    clean = scrub_text(text, secrets)
    if clean == text:
        return False
    data = clean.encode("utf-8")
    with open(path, "r+b") as fh:
        fh.write(b"\0" * len(raw))
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return True
