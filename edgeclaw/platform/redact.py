"""Redaction of log text that leaves the board (`edgeclaw.logs`, `edgeclaw.doctor`).

The logging filter (logsetup.REDACTOR) masks the secrets it knows when a record is written; text read back
from the journal may predate it, come from another process, or carry a secret in a form nobody registered.
So text is redacted again on the way out, in layers:

1. every known secret (gateway token, device token, bootstrap token, setup code), also URL-encoded and
   base64-encoded, down to any 10-character piece of it — so a secret split across two lines or cut in
   half by a line limit leaves no usable half behind;
2. shapes: `oc-pair://…` setup codes, PEM private keys, `Authorization:`/`Bearer …`, `key=value` pairs
   whose key names a secret (token, secret, password, api key, setup code, private key, seed, signature);
3. key material: 32/64-byte values in hex (64/128 digits) or base64 (43–44/86–88 characters), and any
   token-like run of 32+ base64 characters mixing upper case, lower case and digits — except the public
   values given (the node's own device id and public key, which operators need to read).
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable

MASK = "[redacted]"
PIECE = 10  # a piece of a known secret at least this long is masked wherever it appears

_SETUP_CODE = re.compile(r"(?i)oc-pair(?::|%3A)(?://|%2F%2F)[^\s\"'<>]*")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL)
_AUTH = re.compile(r"(?i)\b(authorization|proxy-authorization)(\"?\s*[:=]\s*\"?)[^\r\n\",}]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]{4,}")
_SECRET_KEY = (
    r"[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|setup[_-]?code|"
    r"private[_-]?key|seed|signature|credential|cookie)[A-Za-z0-9_.-]*"
)
# key=value, key: value, "key": "value", key%3Dvalue (URL-encoded query strings)
_PAIR = re.compile(rf"(?i)(\b{_SECRET_KEY})(\"?\s*(?:[:=]|%3D)\s*\"?)(?!\[redacted\])([^\s\"',;&}}\]]{{4,}})")
_HEX_KEY = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{128}|[0-9A-Fa-f]{64})(?![0-9A-Fa-f])")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")


def _forms(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return {f for f in forms if len(f) >= PIECE}


def _token_like(text: str) -> bool:
    return (
        any(c.islower() for c in text) and any(c.isupper() for c in text) and any(c.isdigit() for c in text)
    )


class Redactor:
    """Built once per call from the secrets known right now; `redact(text)` is pure."""

    def __init__(self, secrets: Iterable[str | None], public: Iterable[str | None] = ()) -> None:
        self.public = {p for p in public if p}
        self._pieces: set[str] = set()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        for secret in self._secrets:
            for form in _forms(secret):
                for i in range(len(form) - PIECE + 1):
                    self._pieces.add(form[i : i + PIECE])

    def _hits(self, text: str) -> bytearray:
        """1 for every character that belongs to a PIECE-long piece of a known secret."""
        hit = bytearray(len(text))
        if self._pieces:
            for i in range(len(text) - PIECE + 1):
                if text[i : i + PIECE] in self._pieces:
                    hit[i : i + PIECE] = b"\x01" * PIECE
        return hit

    def _apply(self, text: str, hit: bytearray | bytes) -> str:
        text = self._apply_hits(text, hit)
        for secret in self._secrets:  # short secrets (< PIECE) are only masked whole
            if len(secret) < PIECE:
                text = text.replace(secret, MASK)
        return text

    def _apply_hits(self, text: str, hit: bytearray | bytes) -> str:
        if not any(hit):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if hit[i]:
                while i < len(text) and hit[i]:
                    i += 1
                out.append(MASK)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def _mask_material(self, match: re.Match[str]) -> str:
        value = match.group(0)
        return value if value in self.public else MASK

    def _mask_run(self, match: re.Match[str]) -> str:
        value = match.group(0)
        if value in self.public:
            return value
        body = value.rstrip("=")
        if len(body) in (43, 86) or _token_like(body):
            return MASK
        return value

    def redact(self, text: str) -> str:
        return self._shapes(self._apply(text, self._hits(text)))

    def _shapes(self, text: str) -> str:
        text = _SETUP_CODE.sub("oc-pair://" + MASK, text)
        text = _PEM.sub(MASK, text)
        text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _HEX_KEY.sub(self._mask_material, text)
        return _B64_RUN.sub(self._mask_run, text)

    def redact_lines(self, lines: list[str]) -> list[str]:
        """Known secrets are looked for in the lines joined end to start, so one split across consecutive
        lines is masked on both sides of the break (pieces shorter than PIECE are all that can remain)."""
        joined = "".join(lines)
        hits = self._hits(joined)
        out, pos = [], 0
        for line in lines:
            part = hits[pos : pos + len(line)]
            pos += len(line)
            out.append(self._shapes(self._apply(line, part)))
        return out
