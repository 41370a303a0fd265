"""Ed25519 device identity and the v3 connect-signature payload, exactly as the gateway verifies it."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

from edgeclaw.protocol import ed25519


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Accept base64url or standard base64, padded or not (the gateway tolerates both)."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


def device_id_for(public_key: bytes) -> str:
    """The device id (also the nodeId) is the lowercase hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key).hexdigest()


def _normalise_meta(value: str | None) -> str:
    """platform/deviceFamily are trimmed and ASCII-lowercased before signing."""
    if not value:
        return ""
    return "".join(ch.lower() if "A" <= ch <= "Z" else ch for ch in value.strip())


def signature_payload_v3(
    *,
    device_id: str,
    client_id: str,
    client_mode: str,
    role: str,
    scopes: list[str],
    signed_at_ms: int,
    token: str,
    nonce: str,
    platform: str | None,
    device_family: str | None,
) -> str:
    return "|".join(
        [
            "v3",
            device_id,
            client_id,
            client_mode,
            role,
            ",".join(scopes),
            str(signed_at_ms),
            token,
            nonce,
            _normalise_meta(platform),
            _normalise_meta(device_family),
        ]
    )


@dataclass(frozen=True)
class DeviceIdentity:
    """The node's Ed25519 key; losing or replacing it orphans the gateway pairing."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    _secret_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        public_key, secret_key = ed25519.keypair_from_seed(self.seed)
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "_secret_key", secret_key)

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(os.urandom(ed25519.SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceIdentity:
        return cls(seed)

    @property
    def public_key_b64url(self) -> str:
        return b64url(self.public_key)

    @property
    def device_id(self) -> str:
        return device_id_for(self.public_key)

    def sign(self, payload: str) -> str:
        return b64url(ed25519.sign(payload.encode("utf-8"), self._secret_key))


def verify_signature(public_key_b64: str, payload: str, signature_b64: str) -> bool:
    try:
        public_key, signature = b64url_decode(public_key_b64), b64url_decode(signature_b64)
    except ValueError:
        return False
    return ed25519.verify(signature, payload.encode("utf-8"), public_key)
