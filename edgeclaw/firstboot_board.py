"""The board settings of edgeclaw.yaml: `timezone:` and the HAT lines `dtoverlay:` / `dtparam:`.

The overlays go to two places. /boot/firmware/config.txt is what the firmware reads at the next
power-on, but Debian's raspi-firmware rewrites that file from scratch on every kernel upgrade
(etc/kernel/postinst.d/z50-raspi-firmware, 1.20240424+ds-6): the only part it keeps is the content
of /etc/default/raspi-firmware-custom, which it appends. So the lines are written into both, as one
block between markers, replaced as a whole on a later first boot (the rest of either file is kept).
The firmware reads config.txt only at power-on: the console says a reboot is needed.

Every value is checked against a strict alphabet first: config.txt is line based, and a newline or
`#` smuggled into an overlay name would add whatever line it liked to the firmware's config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw.firstboot_txn import Undo

ZONEINFO = "/usr/share/zoneinfo"
LOCALTIME = "/etc/localtime"
TIMEZONE_FILE = "/etc/timezone"
FIRMWARE_CUSTOM = "/etc/default/raspi-firmware-custom"
CONFIG_TXT = "config.txt"  # beside edgeclaw.yaml on the FAT partition
BEGIN = "# BEGIN edgeclaw.yaml (dtoverlay/dtparam): replaced by the next first boot that sets them"
END = "# END edgeclaw.yaml"
MAX_LINES = 32

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
_ZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,2}$")


class BoardError(Exception):
    """A bad board setting; `key` locates it in edgeclaw.yaml."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass
class Board:
    timezone: str | None = None
    dtoverlay: list[str] = field(default_factory=list)
    dtparam: list[str] = field(default_factory=list)

    def firmware_lines(self) -> list[str]:
        return [f"dtoverlay={o}" for o in self.dtoverlay] + [f"dtparam={p}" for p in self.dtparam]

    def summary(self) -> list[str]:
        lines = [f"timezone: {self.timezone or '(unchanged)'}"]
        if self.dtoverlay or self.dtparam:
            lines.append("config.txt: " + ", ".join(self.firmware_lines()))
        return lines


def _items(raw: Any, key: str) -> list[tuple[str, str]]:
    """A string or a list of strings -> [(key[index], text)]."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [(key, raw)]
    if not isinstance(raw, list):
        raise BoardError("must be a list of text lines (e.g. - i2c_arm=on)", key)
    if len(raw) > MAX_LINES:
        raise BoardError(f"at most {MAX_LINES} entries", key)
    out = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise BoardError(
                f"must be text, got {type(item).__name__} (quote it: YAML reads on/off as booleans)",
                f"{key}[{index}]",
            )
        out.append((f"{key}[{index}]", item))
    return out


def _param(text: str, key: str, what: str, *, bare_ok: bool = False) -> str:
    name, sep, value = text.partition("=")
    if bare_ok and not sep and _NAME.match(name):
        return name  # a boolean overlay parameter: i2c-rtc,ds3231
    if not sep or not _NAME.match(name) or not _VALUE.match(value):
        raise BoardError(
            f"{what} {text!r} is not name=value (name: letters, digits, _ and -; value: letters, digits "
            "and _ . : + -; no spaces, quotes or line breaks)",
            key,
        )
    return f"{name}={value}"


def parse_overlays(raw: Any) -> list[str]:
    """`dtoverlay:` entries: `name` or `name,param=value,flag,...` (config.txt's own form)."""
    out = []
    for key, text in _items(raw, "dtoverlay"):
        name, *params = text.strip().split(",")
        if not _NAME.match(name):
            raise BoardError(
                f"overlay name {name!r}: letters, digits, _ and - only (e.g. w1-gpio, i2c-rtc)", key
            )
        out.append(",".join([name, *(_param(p, key, "overlay parameter", bare_ok=True) for p in params)]))
    return out


def parse_params(raw: Any) -> list[str]:
    """`dtparam:` entries: `name=value`, e.g. i2c_arm=on, spi=on, audio=off."""
    return [_param(text.strip(), key, "dtparam") for key, text in _items(raw, "dtparam")]


def parse_timezone(raw: Any, zoneinfo: Path) -> str | None:
    """An IANA zone name that the card's tzdata has (Europe/Berlin, UTC, America/New_York)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise BoardError("must be a time zone name such as Europe/London or UTC", "timezone")
    zone = raw.strip()
    if not zoneinfo.is_dir() and _ZONE.match(zone):
        return zone  # `--check` on a PC without a tz database (Windows): the card checks it again
    path = zoneinfo / zone
    try:
        ok = bool(_ZONE.match(zone)) and path.is_file() and path.read_bytes()[:4] == b"TZif"
    except OSError:
        ok = False
    if not ok:
        raise BoardError(
            f"unknown time zone {zone!r} (a name from {ZONEINFO}, e.g. Europe/London, America/New_York, "
            "UTC; `timedatectl list-timezones` lists them)",
            "timezone",
        )
    return zone


def parse_board(data: dict[str, Any], zoneinfo: Path) -> Board:
    return Board(
        timezone=parse_timezone(data.get("timezone"), zoneinfo),
        dtoverlay=parse_overlays(data.get("dtoverlay")),
        dtparam=parse_params(data.get("dtparam")),
    )


def with_block(text: str, lines: list[str]) -> str:
    """`text` with our marked block replaced by `lines` (appended when there was none); the rest kept."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    # [all]: a conditional section earlier in the file (e.g. [pi4]) must not swallow our lines
    block = [BEGIN, "[all]", *lines, END] if lines else []
    out = kept + ([""] if kept and block else []) + block
    return "\n".join(out) + "\n" if out else ""


def _write_keeping_mode(path: Path, text: str, undo: Undo) -> None:
    from edgeclaw.platform.atomicfile import write_atomic

    undo.before(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    write_atomic(path, text, mode=mode)


def _write_fat(path: Path, text: str, undo: Undo) -> None:
    """config.txt on FAT: rewritten in place (FAT has no modes to keep) and synced."""
    undo.before(path)
    data = text.encode()
    with open(path, "r+b" if path.exists() else "wb") as fh:
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())


def apply_board(board: Board, root: Path, fat: Path, *, undo: Undo, written: list[str]) -> list[str]:
    """Write the time zone and the firmware lines; returns what was done."""
    done: list[str] = []
    if board.timezone:
        if not (root / ZONEINFO.lstrip("/") / board.timezone).is_file():  # no tzdata on this root
            raise FileNotFoundError(f"time zone {board.timezone}: not in {ZONEINFO} (install tzdata)")
        localtime = root / LOCALTIME.lstrip("/")
        undo.before(localtime)
        tmp = localtime.with_name("localtime.edgeclaw-new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(f"{ZONEINFO}/{board.timezone}")
        os.replace(tmp, localtime)
        _write_keeping_mode(root / TIMEZONE_FILE.lstrip("/"), board.timezone + "\n", undo)
        written += [LOCALTIME, TIMEZONE_FILE]
        done.append(f"time zone {board.timezone}")
    lines = board.firmware_lines()
    if lines:
        custom = root / FIRMWARE_CUSTOM.lstrip("/")
        old = custom.read_text() if custom.exists() else ""
        custom.parent.mkdir(parents=True, exist_ok=True)
        _write_keeping_mode(custom, with_block(old, lines), undo)
        written.append(FIRMWARE_CUSTOM)
        where = [FIRMWARE_CUSTOM + " (kept across kernel upgrades)"]
        config_txt = fat / CONFIG_TXT
        if config_txt.exists():
            _write_fat(config_txt, with_block(config_txt.read_text(errors="replace"), lines), undo)
            where.insert(0, f"{config_txt}")
        done.append(f"{', '.join(lines)} -> {' and '.join(where)}")
        done.append("REBOOT NEEDED: the firmware reads dtoverlay/dtparam only at power-on (sudo reboot)")
    return done
