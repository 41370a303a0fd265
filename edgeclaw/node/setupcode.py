"""`oc-pair://` setup codes: base64url JSON with the gateway URL and a single-use bootstrap token."""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgeclaw.protocol.identity import b64url_decode

PREFIX = "oc-pair://"


@dataclass(frozen=True)
class SetupCode:
    url: str
    bootstrap_token: str
    expires_at_ms: int | None = None
    tls_fingerprint: str | None = None


def parse_setup_code(text: str) -> SetupCode:
    body = text.strip()
    if body.startswith(PREFIX):
        body = body[len(PREFIX) :]
    body = body.strip("/")
    try:
        doc = json.loads(b64url_decode(body))
    except ValueError:
        raise ValueError("not a setup code (expected oc-pair://<base64url JSON>)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("bootstrapToken"), str):
        raise ValueError("setup code has no bootstrapToken")
    url = doc.get("url") or (doc.get("urls") or [None])[0]
    if not isinstance(url, str):
        raise ValueError("setup code has no gateway url")
    expires = doc.get("expiresAtMs")
    fingerprint = doc.get("tlsFingerprint")
    return SetupCode(
        url=url,
        bootstrap_token=doc["bootstrapToken"],
        expires_at_ms=int(expires) if isinstance(expires, (int, float)) else None,
        tls_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
    )
