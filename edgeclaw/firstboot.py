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
import base64
import binascii
import contextlib
import hashlib
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.firstboot_apply import STATE_DIR, TOKEN_PATH, _under, apply, persist, volatile_lower, wipe
from edgeclaw.firstboot_txn import Undo, scrub, secret_values
from edgeclaw.typedconfig import ConfigError, LineLookup, load_yaml_with_lines

DEFAULT_SOURCE = "/boot/firmware/edgeclaw.yaml"
REPORT_NAME = "edgeclaw-firstboot.txt"
EX_CONFIG = 78
EX_FAILED = 1

FIRSTBOOT_ONLY = ("hostname", "wifi", "ssh")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SSH_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass
class Wifi:
    ssid: str
    psk_hex: str | None  # PBKDF2 of the passphrase: the passphrase itself is never stored
    country: str
    hidden: bool = False


@dataclass
class Plan:
    """Everything the file asks for, validated; nothing has been written yet."""

    config: dict[str, Any]
    token: str | None = field(default=None, repr=False)
    setup_code: str | None = field(default=None, repr=False)
    hostname: str | None = None
    wifi: Wifi | None = field(default=None, repr=False)
    ssh_keys: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        gw = self.config.get("gateway") or {}
        node = self.config.get("node") or {}
        auth = "setup code" if self.setup_code else "token" if self.token else "stored device token"
        lines = [
            f"gateway: {gw.get('url')} ({auth})",
            f"display name: {node.get('display_name') or '(hostname)'}",
            f"hostname: {self.hostname or '(unchanged)'}",
            f"wi-fi: {self.wifi.ssid!r} ({self.wifi.country})" if self.wifi else "wi-fi: not configured",
            f"ssh keys: {len(self.ssh_keys)}",
        ]
        sections = sorted(k for k in self.config if k not in ("gateway", "node"))
        if sections:
            lines.append("config sections: " + ", ".join(sections))
        return lines


class FirstbootError(Exception):
    """A problem in edgeclaw.yaml, located by line and key so it can be fixed from any PC."""


def _err(message: str, key: str, file: str, lines: LineLookup) -> FirstbootError:
    return FirstbootError(str(ConfigError(message, key=key, file=file, line=_line_of(key, lines))))


def _line_of(key: str, lines: LineLookup) -> int | None:
    probe = key
    while probe:
        line = lines(probe)
        if line is not None:
            return line
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""
    return None


def _str(value: Any, key: str, file: str, lines: LineLookup, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _err("is required", key, file, lines)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _err(f"must be text, got {type(value).__name__}", key, file, lines)
    text = str(value).strip()
    if not text and required:
        raise _err("must not be empty", key, file, lines)
    return text or None


def hostname_from(display_name: str) -> str | None:
    """`Garage Pi #2` -> `garage-pi-2`; None when nothing usable is left."""
    slug = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")[:63].strip("-")
    return slug if slug and _HOSTNAME.match(slug) else None


def _wifi(raw: Any, file: str, lines: LineLookup) -> Wifi | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _err("must be a mapping with ssid, psk and country", "wifi", file, lines)
    unknown = sorted(set(raw) - {"ssid", "psk", "country", "hidden"})
    if unknown:
        raise _err(f"unknown key {unknown[0]!r} (known: ssid, psk, country, hidden)", "wifi", file, lines)
    ssid = _str(raw.get("ssid"), "wifi.ssid", file, lines, required=True)
    assert ssid is not None
    if len(ssid.encode()) > 32:
        raise _err("an SSID is at most 32 bytes", "wifi.ssid", file, lines)
    country = (_str(raw.get("country"), "wifi.country", file, lines, required=True) or "").upper()
    if not _COUNTRY.match(country):
        raise _err(
            "must be a two-letter country code (e.g. GB, DE, US): it sets the radio rules",
            "wifi.country",
            file,
            lines,
        )
    psk = raw.get("psk")
    psk_hex = None
    if psk is not None:
        if not isinstance(psk, str):
            raise _err("must be text (quote it if it looks like a number)", "wifi.psk", file, lines)
        if re.fullmatch(r"[0-9a-fA-F]{64}", psk):
            psk_hex = psk.lower()
        elif 8 <= len(psk) <= 63 and all(32 <= ord(c) < 127 for c in psk):
            psk_hex = hashlib.pbkdf2_hmac("sha1", psk.encode(), ssid.encode(), 4096, 32).hex()
        else:
            raise _err("a WPA passphrase is 8 to 63 printable ASCII characters", "wifi.psk", file, lines)
    hidden = raw.get("hidden", False)
    if not isinstance(hidden, bool):
        raise _err("must be true or false", "wifi.hidden", file, lines)
    return Wifi(ssid=ssid, psk_hex=psk_hex, country=country, hidden=hidden)


def _ssh_keys(raw: Any, file: str, lines: LineLookup) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or set(raw) - {"authorized_keys"}:
        raise _err("must be a mapping with authorized_keys", "ssh", file, lines)
    value = raw.get("authorized_keys")
    items = value if isinstance(value, list) else [value] if value is not None else []
    keys: list[str] = []
    for index, item in enumerate(items):
        key = f"ssh.authorized_keys[{index}]" if isinstance(value, list) else "ssh.authorized_keys"
        if not isinstance(item, str):
            raise _err("must be an OpenSSH public key line", key, file, lines)
        for line in item.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or parts[0] not in _SSH_TYPES:
                raise _err(
                    "not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA… you@laptop'; "
                    "paste the .pub file, never the private key)",
                    key,
                    file,
                    lines,
                )
            try:
                blob = base64.b64decode(parts[1], validate=True)
            except (binascii.Error, ValueError):
                raise _err("the key's base64 part is damaged", key, file, lines) from None
            if not blob.startswith(len(parts[0]).to_bytes(4, "big") + parts[0].encode()):
                raise _err("the key's type and data do not match", key, file, lines)
            keys.append(line)
    if value is not None and not keys:
        raise _err("no public key given", "ssh.authorized_keys", file, lines)
    return keys


def load_plan(text: str, *, source: str, state_dir: Path) -> Plan:
    """Validate the whole file; raise FirstbootError with file:line: key: message on the first problem."""
    from edgeclaw.config import parse_config
    from edgeclaw.node.setupcode import parse_setup_code

    try:
        data, lines = load_yaml_with_lines(text, source)
    except ConfigError as exc:
        raise FirstbootError(str(exc)) from None
    if data is None:
        raise FirstbootError(f"{source}: the file is empty (see edgeclaw.yaml.example beside it)")
    if not isinstance(data, dict):
        raise FirstbootError(f"{source}:1: must be a mapping of sections (see edgeclaw.yaml.example)")
    doc = {k: v for k, v in data.items() if k not in FIRSTBOOT_ONLY}
    gateway = doc.get("gateway")
    if gateway is None:
        raise _err("is required (url, and token or setup_code)", "gateway", source, lines)
    if not isinstance(gateway, dict):
        raise _err("must be a mapping", "gateway", source, lines)
    gateway = dict(gateway)
    for key in ("token_file", "setup_code_file"):
        if key in gateway:
            raise _err(f"is set by first boot; give the {key[:-5]} itself", f"gateway.{key}", source, lines)
    token = _str(gateway.pop("token", None), "gateway.token", source, lines)
    code_text = _str(gateway.pop("setup_code", None), "gateway.setup_code", source, lines)
    if token and code_text:
        raise _err("give either token or setup_code, not both", "gateway", source, lines)
    if code_text:
        try:
            code = parse_setup_code(code_text)
        except ValueError as exc:
            raise _err(str(exc), "gateway.setup_code", source, lines) from None
        gateway.setdefault("url", code.url)
        if code.tls_fingerprint:
            gateway.setdefault("tls_fingerprint", code.tls_fingerprint)
        if code.expires_at_ms is not None and code.expires_at_ms < time.time() * 1000 and time.time() > 1.6e9:
            raise _err(
                "this setup code has expired; make a new one on the gateway",
                "gateway.setup_code",
                source,
                lines,
            )
        gateway["setup_code_file"] = f"{STATE_DIR}/setup-code"
    if token:
        gateway["token_file"] = TOKEN_PATH
    if not token and not code_text and not (state_dir / "device-token.json").exists():
        raise _err("needs token or setup_code (this device has not paired yet)", "gateway", source, lines)
    if "url" not in gateway:
        raise _err("url is required (or a setup_code that carries it)", "gateway", source, lines)
    doc["gateway"] = gateway
    node = doc.get("node") or {}
    if not isinstance(node, dict):
        raise _err("must be a mapping", "node", source, lines)
    doc["node"] = node
    for key in ("state_dir", "runtime_dir"):
        if key in node:
            raise _err(
                "is fixed in the image (all state lives in /var/lib/edgeclaw)", f"node.{key}", source, lines
            )
    try:
        parse_config(
            yaml.safe_dump(doc, sort_keys=False),
            file=source,
            env={"EDGECLAW_GATEWAY_TOKEN": token} if token else {},
        )
    except ConfigError as exc:
        raise _err(exc.message, exc.key, source, lines) from None
    hostname = _str(data.get("hostname"), "hostname", source, lines)
    if hostname is not None:
        hostname = hostname.lower()
        if not _HOSTNAME.match(hostname):
            raise _err(
                "letters, digits and '-' only, at most 63, not starting or ending with '-'",
                "hostname",
                source,
                lines,
            )
    elif node.get("display_name"):
        hostname = hostname_from(str(node["display_name"]))
    return Plan(
        config=doc,
        token=token,
        setup_code=code_text,
        hostname=hostname,
        wifi=_wifi(data.get("wifi"), source, lines),
        ssh_keys=_ssh_keys(data.get("ssh"), source, lines),
    )


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
        plan = load_plan(text, source=str(source), state_dir=_under(root, STATE_DIR))
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
    # tests: copy the system files written to this root as well (on a device: automatic under the
    # read-only root, to /run/edgeclaw-volatile/lower)
    p.add_argument("--persist-to", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda a: _cmd_firstboot(_normalise(a)))


def _normalise(args: argparse.Namespace) -> argparse.Namespace:
    args.source = args.source_opt or args.source or DEFAULT_SOURCE
    return args
