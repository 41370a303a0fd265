"""`edgeclaw firstboot --notice`: what an unprovisioned card says on every boot (edgeclaw-notice.service).

An image with no edgeclaw.yaml is not broken, it is waiting; edgeclaw.service is skipped by its
ConditionPathExists= on the config, so nothing shows as failed, and this says on the console, in the
journal and above the login prompt (/run/issue.d, read by agetty) what the card waits for. A file
that first boot rejected is named with the reason from edgeclaw-firstboot.txt. Raspberry Pi Imager's
customisation is reported (edgeclaw.firstboot_imager) and its `systemd.run=` taken out of cmdline.txt;
when this very boot was started into it, the board reboots once so the next boot is a normal one.
Always exits 0: a notice is never a failed unit.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edgeclaw.firstboot_apply import CONFIG_PATH
from edgeclaw.firstboot_imager import clean_cmdline, detect, message

DOCS = "image/README.md, 'Flash and first boot', in the EdgeClaw repository"
ISSUE = "/run/issue.d/50-edgeclaw.issue"


def _run_systemctl_reboot() -> None:
    subprocess.run(["systemctl", "--no-block", "reboot"], check=False, timeout=30)


def waiting_lines(source: Path, report: Path) -> list[str]:
    """The unprovisioned card's message: rejected file (with why) or no file yet."""
    from edgeclaw.firstboot import find_source

    found = find_source(source)
    if found.exists():
        why = ""
        with contextlib.suppress(OSError):
            why = next((ln for ln in report.read_text().splitlines() if ln.startswith("ERROR")), "")
        return [
            f"EdgeClaw is not configured: first boot rejected {found}.",
            *([why] if why else []),
            f"Fix the file on the boot partition (the reason is also in {report.name} there) and reboot.",
        ]
    return [
        f"EdgeClaw: waiting for {source} (no node is configured, so the node is not started).",
        f"Put the card in a computer, copy edgeclaw.yaml.example on its boot partition to {source.name},",
        "fill in gateway.url and a setup_code or token (and wifi, ssh, hostname as you need), then boot",
        f"the board with it. Check a file with: edgeclaw firstboot --check {source.name}. Docs: {DOCS}.",
    ]


def notice(
    source: Path,
    root: Path,
    *,
    proc_cmdline: str | None = None,
    reboot: Callable[[], None] = _run_systemctl_reboot,
) -> tuple[list[str], bool]:
    """The lines to show, and whether the board is being rebooted out of a systemd.run= boot.
    `proc_cmdline` is this boot's kernel command line (None: not a live boot, never reboot)."""
    fat = source.parent
    lines: list[str] = []
    found = detect(fat)
    rebooting = False
    if found is not None:
        removed = clean_cmdline(fat)
        lines += message(found, removed)
        # only once cmdline.txt really changed: a card whose FAT cannot be written must not reboot forever
        if removed and proc_cmdline and "systemd.run=" in proc_cmdline:
            lines.append("This boot was started to run it: rebooting once into a normal boot.")
            rebooting = True
    if not (root / CONFIG_PATH.lstrip("/")).exists():
        from edgeclaw.firstboot import REPORT_NAME

        lines += waiting_lines(source, fat / REPORT_NAME)
    issue = root / ISSUE.lstrip("/")
    with contextlib.suppress(OSError):
        if lines:
            issue.parent.mkdir(parents=True, exist_ok=True)
            # agetty expands backslash escapes in issue files: none may come from a file on FAT
            issue.write_text("\n".join(ln.replace("\\", "/") for ln in lines) + "\n\n")
        else:
            issue.unlink(missing_ok=True)
    for line in lines:
        print(line, flush=True)
    if rebooting:
        sys.stdout.flush()
        reboot()
    return lines, rebooting


def run_notice(source: Path, root: Path) -> int:
    proc_cmdline = None
    if root == Path("/"):
        with contextlib.suppress(OSError):
            proc_cmdline = Path("/proc/cmdline").read_text()
    try:
        notice(source, root, proc_cmdline=proc_cmdline)
    except Exception as exc:  # a notice must never fail the boot
        print(f"edgeclaw-notice: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 0
