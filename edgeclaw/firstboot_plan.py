"""What edgeclaw.yaml asks for, validated into a `Plan` before anything is written: the gateway and
node config (checked by the node's own loader), hostname, Wi-Fi, SSH keys and the board settings
(timezone, dtoverlay/dtparam; edgeclaw.firstboot_board). Every problem is reported as
file:line: key: message, so it can be fixed from any PC (see edgeclaw.firstboot for the whole flow)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.firstboot_apply import STATE_DIR, TOKEN_PATH
from edgeclaw.firstboot_board import ZONEINFO, Board, BoardError, parse_board
from edgeclaw.typedconfig import ConfigError, LineLookup, load_yaml_with_lines

FIRSTBOOT_ONLY = ("hostname", "wifi", "ssh", "timezone", "dtoverlay", "dtparam")
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
    board: Board = field(default_factory=Board)

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
            *self.board.summary(),
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


def load_plan(text: str, *, source: str, state_dir: Path, zoneinfo: Path = Path(ZONEINFO)) -> Plan:
    """Validate the whole file; raise FirstbootError with file:line: key: message on the first problem.
    `zoneinfo` is the target root's tz database (a `timezone:` must exist there)."""
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
    try:
        board = parse_board(data, zoneinfo)
    except BoardError as exc:
        raise _err(exc.message, exc.key, source, lines) from None
    return Plan(
        config=doc,
        board=board,
        token=token,
        setup_code=code_text,
        hostname=hostname,
        wifi=_wifi(data.get("wifi"), source, lines),
        ssh_keys=_ssh_keys(data.get("ssh"), source, lines),
    )
