"""Connect params, hello-ok parsing and the classification of connect errors into what to do next."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeclaw.protocol.frames import GatewayError
from edgeclaw.protocol.identity import DeviceIdentity, signature_payload_v3

PROTOCOL_VERSION = 4
FALLBACK_PROTOCOL_VERSION = 3
CLIENT_ID = "node-host"
CLIENT_MODE = "node"
ROLE = "node"
PLATFORM = "linux"
DEVICE_FAMILY = "Linux"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ClientInfo:
    display_name: str
    version: str
    instance_id: str
    model_identifier: str | None = None


@dataclass(frozen=True)
class Auth:
    """One credential, in the gateway's order of preference for the signature's token field."""

    token: str | None = None
    device_token: str | None = None
    bootstrap_token: str | None = None

    def signing_token(self) -> str:
        return self.token or self.device_token or self.bootstrap_token or ""

    def to_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.token:
            out["token"] = self.token
        if self.device_token:
            out["deviceToken"] = self.device_token
        if self.bootstrap_token:
            out["bootstrapToken"] = self.bootstrap_token
        return out


def build_connect_params(
    *,
    identity: DeviceIdentity,
    client: ClientInfo,
    auth: Auth,
    nonce: str,
    signed_at_ms: int,
    caps: list[str],
    commands: list[str],
    protocol: int = PROTOCOL_VERSION,
    locale: str = "en-US",
) -> dict[str, Any]:
    """The closed-schema connect params; signed at the challenge's ts (a Pi may have no RTC)."""
    scopes: list[str] = []
    payload = signature_payload_v3(
        device_id=identity.device_id,
        client_id=CLIENT_ID,
        client_mode=CLIENT_MODE,
        role=ROLE,
        scopes=scopes,
        signed_at_ms=signed_at_ms,
        token=auth.signing_token(),
        nonce=nonce,
        platform=PLATFORM,
        device_family=DEVICE_FAMILY,
    )
    client_obj: dict[str, Any] = {
        "id": CLIENT_ID,
        "displayName": client.display_name,
        "version": client.version,
        "platform": PLATFORM,
        "deviceFamily": DEVICE_FAMILY,
        "mode": CLIENT_MODE,
        "instanceId": client.instance_id,
    }
    if client.model_identifier:
        client_obj["modelIdentifier"] = client.model_identifier
    return {
        "minProtocol": protocol,
        "maxProtocol": protocol,
        "client": client_obj,
        "role": ROLE,
        "scopes": scopes,
        "caps": caps,
        "commands": commands,
        "permissions": {},
        "auth": auth.to_params(),
        "locale": locale,
        "userAgent": f"edgeclaw/{client.version}",
        "device": {
            "id": identity.device_id,
            "publicKey": identity.public_key_b64url,
            "signature": identity.sign(payload),
            "signedAt": signed_at_ms,
            "nonce": nonce,
        },
    }


@dataclass(frozen=True)
class Challenge:
    nonce: str
    ts: int

    @classmethod
    def from_payload(cls, payload: Any) -> Challenge:
        if not isinstance(payload, dict):
            raise ValueError("connect.challenge without a payload object")
        nonce, ts = payload.get("nonce"), payload.get("ts")
        if not isinstance(nonce, str) or not nonce:
            raise ValueError("connect.challenge without a nonce")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise ValueError("connect.challenge without a numeric ts")
        return cls(nonce=nonce, ts=int(ts))


@dataclass(frozen=True)
class HelloOk:
    protocol: int
    server_version: str
    conn_id: str
    device_token: str | None
    auth_method: str | None
    max_payload: int
    tick_interval_ms: int

    @classmethod
    def from_payload(cls, payload: Any) -> HelloOk:
        """Lenient on what the schema does not promise (auth.method, absent fields get defaults), strict
        on the type of what we rely on: a mistyped field is a ValueError (a coded reconnect), never a
        TypeError out of int() deep in the runner."""
        if not isinstance(payload, dict) or payload.get("type") != "hello-ok":
            raise ValueError("connect response is not hello-ok")
        server = _field(payload, "server", dict, {})
        auth = _field(payload, "auth", dict, {})
        policy = _field(payload, "policy", dict, {})
        protocol = _field(payload, "protocol", int, PROTOCOL_VERSION)
        max_payload = _field(policy, "maxPayload", int, 0)
        tick = _field(policy, "tickIntervalMs", int, 0)
        token = _field(auth, "deviceToken", str, "")
        method = auth.get("method")
        return cls(
            protocol=protocol,
            server_version=_field(server, "version", str, "") or "?",
            conn_id=_field(server, "connId", str, ""),
            device_token=token or None,
            auth_method=method if isinstance(method, str) else None,
            max_payload=max_payload if max_payload > 0 else 25 * 1024 * 1024,
            tick_interval_ms=tick if tick > 0 else 30_000,
        )  # not the payload itself: its snapshot (presence, health; ~15 kB of JSON) is of no use to a node


def _field(obj: dict[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    """obj[key] if it has the expected type, `default` if absent or null, else ValueError."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"hello-ok field {key!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ConnectAction(enum.Enum):
    """What the runner does after a failed connect."""

    PAIRING_WAIT = "pairing-wait"  # device not approved yet: retry slowly, forever
    DROP_DEVICE_TOKEN = "drop-device-token"  # our stored token is stale: forget it, re-pair
    DROP_BOOTSTRAP_TOKEN = "drop-bootstrap-token"  # setup code already used: fall back to other auth
    RETRY_AFTER = "retry-after"  # gateway busy or starting: wait what it says
    PROTOCOL_FALLBACK = "protocol-fallback"  # gateway only speaks v3 to us
    FATAL_AUTH = "fatal-auth"  # credentials are wrong; restarting will not help
    FATAL_PROTOCOL = "fatal-protocol"  # no protocol version in common
    RETRY = "retry"  # anything else: normal backoff


FATAL_AUTH_CODES = frozenset(
    {
        "AUTH_TOKEN_MISSING",
        "AUTH_TOKEN_MISMATCH",
        "AUTH_TOKEN_NOT_CONFIGURED",
        "AUTH_PASSWORD_MISSING",
        "AUTH_PASSWORD_MISMATCH",
        "AUTH_PASSWORD_NOT_CONFIGURED",
        "AUTH_SCOPE_MISMATCH",
        "AUTH_UNAUTHORIZED",
        "AUTH_REQUIRED",
        "DEVICE_IDENTITY_REQUIRED",
        "DEVICE_AUTH_PUBLIC_KEY_INVALID",
        "DEVICE_AUTH_DEVICE_ID_MISMATCH",
    }
)


@dataclass(frozen=True)
class ConnectVerdict:
    action: ConnectAction
    error: GatewayError
    request_id: str | None = None
    retry_after_ms: int | None = None
    expected_protocol: int | None = None


def classify_connect_error(error: GatewayError, *, auth: Auth) -> ConnectVerdict:
    code = error.detail_code or ""
    details = error.details
    if code == "PAIRING_REQUIRED" or error.code == "NOT_PAIRED":
        rid = details.get("requestId")
        return ConnectVerdict(
            ConnectAction.PAIRING_WAIT, error, request_id=rid if isinstance(rid, str) else None
        )
    if code == "AUTH_DEVICE_TOKEN_MISMATCH":
        return ConnectVerdict(ConnectAction.DROP_DEVICE_TOKEN, error)
    if code == "AUTH_BOOTSTRAP_TOKEN_INVALID":
        if auth.bootstrap_token:
            return ConnectVerdict(ConnectAction.DROP_BOOTSTRAP_TOKEN, error)
        return ConnectVerdict(ConnectAction.FATAL_AUTH, error)
    if code == "AUTH_TOKEN_MISMATCH" and auth.device_token and not auth.token:
        return ConnectVerdict(ConnectAction.DROP_DEVICE_TOKEN, error)
    if code == "PROTOCOL_MISMATCH":
        expected = details.get("expectedProtocol")
        if expected == FALLBACK_PROTOCOL_VERSION:
            return ConnectVerdict(
                ConnectAction.PROTOCOL_FALLBACK, error, expected_protocol=FALLBACK_PROTOCOL_VERSION
            )
        return ConnectVerdict(ConnectAction.FATAL_PROTOCOL, error, expected_protocol=expected)
    if code in FATAL_AUTH_CODES:
        return ConnectVerdict(ConnectAction.FATAL_AUTH, error)
    if error.retry_after_ms is not None:
        return ConnectVerdict(ConnectAction.RETRY_AFTER, error, retry_after_ms=error.retry_after_ms)
    if code == "AUTH_RATE_LIMITED":
        return ConnectVerdict(ConnectAction.RETRY_AFTER, error, retry_after_ms=60_000)
    return ConnectVerdict(ConnectAction.RETRY, error)


_SURFACE_APPROVE = re.compile(r"openclaw nodes approve ([A-Za-z0-9][A-Za-z0-9._:-]{0,127})")


def surface_request_id(error: GatewayError) -> str | None:
    """The gateway names the pending command-surface request only in a message; read it from there."""
    match = _SURFACE_APPROVE.search(error.message)
    return match.group(1) if match else None


def is_pairing_changed(error: GatewayError) -> bool:
    return error.detail_code == "PAIRING_CHANGED"
