"""First boot of the SD-card image: `/boot/firmware/edgeclaw.yaml` becomes a configured node.

The FAT boot partition is the one place anyone can edit from Windows, macOS or Linux, but it has no
permissions: whatever secret sits there is readable by anyone holding the card. So the first-boot
unit validates the whole file and the existing device identity before touching anything (a bad file
changes nothing and says exactly what is wrong, on the console, in the journal and in
`edgeclaw-firstboot.txt` beside it; a failure while applying puts back every file it wrote; either way
the file's token, setup code and Wi-Fi passphrase are blanked, see edgeclaw.firstboot_txn), then moves
the token or setup code into 0600 files, writes `/etc/edgeclaw/config.yaml`, creates the identity,
sets hostname, Wi-Fi and SSH key, and finally overwrites and deletes the file on the FAT partition.

`edgeclaw firstboot --check FILE` validates a file on any computer without applying it (and never
edits it). `edgeclaw.yaml.txt` (Windows hides the extension it added) is accepted as well.

Under the image's read-only root (`systemd.volatile=overlay`, see image/README.md) `/etc/edgeclaw`
and `/var/lib/edgeclaw` are bind mounts of the card's own directories, so the node's config, token
and identity persist as they are; the other files first boot writes (hostname, hosts, Wi-Fi, the
wpa_supplicant@wlan0 enablement, root's authorized_keys) are copied through to the real root at
`/run/edgeclaw-volatile/lower` as well, so a first boot with the overlay already on is not undone
by the next reboot.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.firstboot_apply import STATE_DIR, _under, apply, persist, volatile_lower, wipe
from edgeclaw.firstboot_board import ZONEINFO
from edgeclaw.firstboot_plan import FirstbootError, Plan, hostname_from, load_plan
from edgeclaw.firstboot_txn import Undo, scrub, secret_values

__all__ = ["FirstbootError", "Plan", "hostname_from", "load_plan", "run_firstboot", "volatile_lower"]

DEFAULT_SOURCE = "/boot/firmware/edgeclaw.yaml"
REPORT_NAME = "edgeclaw-firstboot.txt"
EX_CONFIG = 78
EX_FAILED = 1


def check_identity(root: Path) -> None:
    """Before any write: an identity that exists must load (a corrupt one is never replaced silently,
    see StateDir.load_identity), else first boot would configure a node that cannot start."""
    from edgeclaw.platform.state import StateDir, StateError

    state = StateDir(_under(root, STATE_DIR))
    if state.has_identity():
        try:
            state.load_identity()
        except StateError as exc:
            raise FirstbootError(str(exc)) from None


def _report(source: Path, lines: list[str]) -> None:
    """A note beside edgeclaw.yaml on the FAT partition, readable from the PC the card goes back to."""
    with contextlib.suppress(OSError):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        (source.parent / REPORT_NAME).write_text(
            f"EdgeClaw first boot, {stamp}\r\n" + "\r\n".join(lines) + "\r\n"
        )


def _say(line: str) -> None:
    print(f"edgeclaw-firstboot: {line}", file=sys.stderr, flush=True)


def find_source(source: Path) -> Path:
    """`edgeclaw.yaml`, or `edgeclaw.yaml.txt` when a Windows editor added the extension it hides."""
    if source.exists() or source.suffix not in (".yaml", ".yml"):
        return source
    hidden = source.with_name(source.name + ".txt")
    return hidden if hidden.exists() else source


def _failed(source: Path, text: str, lines: list[str]) -> None:
    """Every failure ends here: blank the file's secrets, then say what happened on the console, in
    the journal and beside the file."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    try:
        if scrub(source, secret_values(data)):
            lines.append(
                f"The token, setup code and Wi-Fi passphrase were removed from {source.name} (the boot "
                "partition has no permissions): put them in again when you fix it."
            )
    except OSError as exc:
        lines.append(f"WARNING: could not remove the secrets from {source.name}: {exc.strerror or exc}")
    for line in lines:
        _say(line)
    _report(source, lines)


def run_firstboot(source: Path, root: Path, *, check: bool, persist_to: Path | None = None) -> int:
    source = find_source(source)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        _say(f"{source} not found; nothing to do")
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        _say(f"cannot read {source}: {exc}")
        if not check and isinstance(exc, UnicodeDecodeError):
            _failed(
                source, "", [f"ERROR: {source.name} is not UTF-8 text ({exc.reason}); nothing was changed."]
            )
        return EX_CONFIG
    try:
        plan = load_plan(
            text, source=str(source), state_dir=_under(root, STATE_DIR), zoneinfo=_under(root, ZONEINFO)
        )
        if not check:
            check_identity(root)
    except FirstbootError as exc:
        msg = [
            f"ERROR in {exc}",
            "Nothing was changed and the EdgeClaw node will not start.",
            f"Fix {source.name} on the SD card's boot partition (see edgeclaw.yaml.example) and reboot.",
        ]
        if check:
            for line in msg:
                _say(line)
        else:
            _failed(source, text, msg)
        return EX_CONFIG
    if check:
        for line in ["OK: " + str(source), *plan.summary()]:
            print(line)
        return 0
    written: list[str] = []
    undo = Undo()
    lower = persist_to or volatile_lower(root)
    try:
        done = apply(plan, root, source=str(source), live=root == Path("/"), written=written, undo=undo)
        if lower is not None:
            copied = persist(written, root, lower, undo)
            done.append(f"read-only root: {len(copied)} system file(s) written through to the card")
    except Exception as exc:  # any failure, not only OSError: nothing half-applied, no traceback
        problems = undo.rollback()
        msg = [f"ERROR applying {source.name}: {type(exc).__name__}: {exc}"]
        msg += (
            [f"Could not undo: {p}" for p in problems]
            if problems
            else ["Nothing was changed (what had been written was put back); the node will not start."]
        )
        _failed(source, text, msg)
        return EX_FAILED
    wipe(source)
    done.append(f"secrets removed from the boot partition ({source.name} overwritten and deleted)")
    for line in done:
        _say(line)
    _report(source, ["Applied:", *done])
    return 0


def _cmd_firstboot(args: argparse.Namespace) -> int:
    if args.notice:
        from edgeclaw.firstboot_notice import run_notice

        return run_notice(Path(args.source), Path(args.root))
    persist_to = Path(args.persist_to) if args.persist_to else None
    return run_firstboot(Path(args.source), Path(args.root), check=args.check, persist_to=persist_to)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "firstboot",
        help="apply /boot/firmware/edgeclaw.yaml (SD-card image first boot); --check to validate a file",
    )
    p.add_argument("source", nargs="?", default=None, help=f"the settings file (default {DEFAULT_SOURCE})")
    p.add_argument("--source", dest="source_opt", help=argparse.SUPPRESS)
    p.add_argument(
        "--root", default="/", help="apply to a root filesystem mounted here (image builds, tests)"
    )
    p.add_argument("--check", action="store_true", help="validate and summarise only; change nothing")
    p.add_argument(
        "--notice",
        action="store_true",
        help="say what an unprovisioned card waits for, and report Raspberry Pi Imager's customisation",
    )
    # tests: copy the system files written to this root as well (on a device: automatic under the
    # read-only root, to /run/edgeclaw-volatile/lower)
    p.add_argument("--persist-to", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda a: _cmd_firstboot(_normalise(a)))


def _normalise(args: argparse.Namespace) -> argparse.Namespace:
    args.source = args.source_opt or args.source or DEFAULT_SOURCE
    return args
