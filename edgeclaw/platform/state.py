"""The state directory: identity key, device token, instance id, pairing progress — all written atomically.

A corrupt identity is an error, never silently replaced: a new key would orphan the gateway pairing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeclaw.platform.atomicfile import write_atomic
from edgeclaw.protocol.identity import DeviceIdentity, b64url, b64url_decode

IDENTITY_FILE = "identity.json"
TOKEN_FILE = "device-token.json"
INSTANCE_FILE = "instance-id"
PAIRING_FILE = "pairing.json"

log = logging.getLogger("edgeclaw.state")


class StateError(Exception):
    """The state directory holds something we must not paper over (corrupt key, bad permissions)."""


@dataclass
class StoredToken:
    gateway_url: str
    device_id: str
    role: str
    scopes: list[str]
    token: str


@dataclass
class PairingState:
    """What we last learned about both approvals, so `edgeclaw status` can answer without a daemon."""

    device_approved: bool = False
    surface_approved: bool | None = None
    device_request_id: str | None = None
    surface_request_id: str | None = None
    withheld_commands: list[str] | None = None


class StateDir:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # identity -------------------------------------------------------------------------------------
    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_FILE

    def has_identity(self) -> bool:
        return self.identity_path.exists()

    def load_identity(self) -> DeviceIdentity:
        path = self.identity_path
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StateError(f"no device identity at {path}; create one with `edgeclaw pair`") from None
        except OSError as exc:
            raise StateError(f"cannot read device identity {path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            identity = DeviceIdentity.from_seed(b64url_decode(doc["privateKeySeed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"device identity {path} is corrupt ({exc.__class__.__name__}: {exc}); it is NOT replaced "
                "automatically because a new key orphans the gateway pairing. Restore it from a backup, or "
                "run `edgeclaw pair --reset-identity` and approve the new device on the gateway."
            ) from None
        if doc.get("deviceId") not in (None, identity.device_id):
            raise StateError(f"device identity {path} is corrupt: its deviceId does not match its key")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise StateError(f"device identity {path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")
        return identity

    def create_identity(self) -> DeviceIdentity:
        if self.has_identity():
            raise StateError(f"a device identity already exists at {self.identity_path}")
        identity = DeviceIdentity.generate()
        self.write_identity(identity)
        return identity

    def write_identity(self, identity: DeviceIdentity) -> None:
        self.ensure()
        doc = {
            "version": 1,
            "deviceId": identity.device_id,
            "publicKey": identity.public_key_b64url,
            "privateKeySeed": b64url(identity.seed),
        }
        write_atomic(self.identity_path, json.dumps(doc, indent=2) + "\n", mode=0o600)

    def load_or_create_identity(self) -> DeviceIdentity:
        return self.load_identity() if self.has_identity() else self.create_identity()

    def reset_identity(self) -> DeviceIdentity:
        """Explicit, user-requested: keep the old key beside the new one in case it was a mistake."""
        if self.has_identity():
            backup = self.identity_path.with_name(f"{IDENTITY_FILE}.replaced-{uuid.uuid4().hex[:8]}")
            os.replace(self.identity_path, backup)
        self.clear_token()
        self.save_pairing(PairingState())
        return self.create_identity()

    # device token ---------------------------------------------------------------------------------
    def load_token(self, gateway_url: str, device_id: str) -> StoredToken | None:
        try:
            doc: dict[str, Any] = json.loads((self.path / TOKEN_FILE).read_text(encoding="utf-8"))
            stored = StoredToken(**doc)
        except (OSError, ValueError, TypeError):
            return None
        if stored.device_id != device_id or _url_key(stored.gateway_url) != _url_key(gateway_url):
            return None
        return stored

    def save_token(self, stored: StoredToken) -> None:
        self.ensure()
        write_atomic(self.path / TOKEN_FILE, json.dumps(asdict(stored)) + "\n", mode=0o600)

    def clear_token(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / TOKEN_FILE).unlink()

    # instance id ----------------------------------------------------------------------------------
    def instance_id(self) -> str:
        path = self.path / INSTANCE_FILE
        try:
            value = path.read_text(encoding="utf-8").strip()
            uuid.UUID(value)
            return value
        except (OSError, ValueError):
            value = str(uuid.uuid4())
            try:
                self.ensure()
                write_atomic(path, value + "\n", mode=0o644)
            except OSError as exc:  # full or read-only: a fresh id this run beats not starting at all
                log.error(
                    "STATE_WRITE_FAILED: cannot store the instance id in %s: %s; using %s for this run",
                    path,
                    exc.strerror or exc,
                    value,
                )
            return value

    # pairing progress -----------------------------------------------------------------------------
    def load_pairing(self) -> PairingState:
        try:
            doc = json.loads((self.path / PAIRING_FILE).read_text(encoding="utf-8"))
            return PairingState(**doc)
        except (OSError, ValueError, TypeError):
            return PairingState()

    def save_pairing(self, pairing: PairingState) -> None:
        self.ensure()
        write_atomic(self.path / PAIRING_FILE, json.dumps(asdict(pairing)) + "\n", mode=0o644)


def _url_key(url: str) -> str:
    return url.rstrip("/").lower()
