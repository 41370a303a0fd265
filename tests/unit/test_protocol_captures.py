"""The protocol layer against real frames: parse all of them, verify every real signature, sign alike."""

from __future__ import annotations

import json

import pytest

from edgeclaw.protocol import frames
from edgeclaw.protocol.frames import Event, GatewayError, Request, Response
from edgeclaw.protocol.handshake import (
    Auth,
    ClientInfo,
    ConnectAction,
    HelloOk,
    build_connect_params,
    classify_connect_error,
    surface_request_id,
)
from edgeclaw.protocol.identity import DeviceIdentity, signature_payload_v3, verify_signature
from tests.unit import wire


def test_every_captured_frame_parses() -> None:
    all_frames = wire.frames()
    assert len(all_frames) > 250
    kinds = {"req": 0, "res": 0, "event": 0}
    for frame in all_frames:
        parsed = frames.decode(json.dumps(frame))
        kinds[frame["type"]] += 1
        if frame["type"] == "event":
            assert isinstance(parsed, Event) and parsed.event == frame["event"]
        elif frame["type"] == "res":
            assert isinstance(parsed, Response) and parsed.ok == frame["ok"]
            if not frame["ok"]:
                assert parsed.error is not None and parsed.error.code == frame["error"]["code"]
        else:
            assert isinstance(parsed, Request) and parsed.method == frame["method"]
    assert all(count > 10 for count in kinds.values()), kinds


def _payload_from_params(params: dict, version: str = "v3") -> str:
    auth = params.get("auth") or {}
    device, client = params["device"], params["client"]
    token = auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken") or ""
    if version == "v2":
        return "|".join(
            [
                "v2",
                device["id"],
                client["id"],
                client["mode"],
                params["role"],
                ",".join(params.get("scopes") or []),
                str(device["signedAt"]),
                token,
                device["nonce"],
            ]
        )
    return signature_payload_v3(
        device_id=device["id"],
        client_id=client["id"],
        client_mode=client["mode"],
        role=params["role"],
        scopes=params.get("scopes") or [],
        signed_at_ms=device["signedAt"],
        token=token,
        nonce=device["nonce"],
        platform=client.get("platform"),
        device_family=client.get("deviceFamily"),
    )


CHECKED_BEFORE_SIGNATURE = {
    "DEVICE_AUTH_DEVICE_ID_MISMATCH",
    "DEVICE_AUTH_NONCE_MISMATCH",
    "DEVICE_AUTH_NONCE_REQUIRED",
    "DEVICE_AUTH_SIGNATURE_EXPIRED",
}


def _connects_with_answers() -> list[tuple[dict, dict]]:
    answers = {f["id"]: f for f in wire.frames() if f.get("type") == "res"}
    return [
        (f["params"], answers[f["id"]])
        for f in wire.frames()
        if f.get("type") == "req"
        and f.get("method") == "connect"
        and "device" in f["params"]
        and f["id"] in answers
    ]


def test_our_verifier_agrees_with_the_real_gateway_on_every_captured_signature() -> None:
    """Accepted and pairing-pending connects verify; the ones the gateway refused as
    DEVICE_AUTH_SIGNATURE_INVALID do not (the capture includes deliberately bad ones)."""
    pairs = _connects_with_answers()
    assert len(pairs) >= 15
    verdicts = {"valid": 0, "invalid": 0}
    for params, answer in pairs:
        device = params["device"]
        if answer.get("error", {}).get("details", {}).get("code") in CHECKED_BEFORE_SIGNATURE:
            continue  # the gateway refused these before it looked at the signature
        ok = verify_signature(device["publicKey"], _payload_from_params(params), device["signature"]) or (
            verify_signature(device["publicKey"], _payload_from_params(params, "v2"), device["signature"])
        )
        refused_signature = (answer.get("error") or {}).get("details", {}).get(
            "code"
        ) == "DEVICE_AUTH_SIGNATURE_INVALID"
        assert ok is not refused_signature, (answer.get("error"), device["id"][:12])
        verdicts["invalid" if refused_signature else "valid"] += 1
    assert verdicts["valid"] >= 10 and verdicts["invalid"] >= 2, verdicts


def test_verifier_rejects_a_tampered_payload() -> None:
    params = wire.connect_params()[0]
    device = params["device"]
    tampered = _payload_from_params(params).replace("node-host", "node-hosT")
    assert not verify_signature(device["publicKey"], tampered, device["signature"])


def test_captured_device_id_is_sha256_of_public_key() -> None:
    from edgeclaw.protocol.identity import b64url_decode, device_id_for

    for params, answer in _connects_with_answers():
        matches = device_id_for(b64url_decode(params["device"]["publicKey"])) == params["device"]["id"]
        mismatch_refused = (
            answer.get("error", {}).get("details", {}).get("code") == "DEVICE_AUTH_DEVICE_ID_MISMATCH"
        )
        assert matches is not mismatch_refused


def test_our_signer_yields_the_identical_payload_string() -> None:
    """Same inputs as the real node host's connect → the same payload string, and a signature that the
    same verification accepts; the documented example payload is reproduced byte for byte."""
    expected = (
        "v3|8e6c5bda3582678|node-host|node|node||1795689164833|ocr-test-token-123|"
        "215beaa8-01f0-4d45-b6be-0d362878680c|linux|linux"
    )
    assert (
        signature_payload_v3(
            device_id="8e6c5bda3582678",
            client_id="node-host",
            client_mode="node",
            role="node",
            scopes=[],
            signed_at_ms=1795689164833,
            token="ocr-test-token-123",
            nonce="215beaa8-01f0-4d45-b6be-0d362878680c",
            platform=" Linux ",
            device_family="Linux",
        )
        == expected
    )
    identity = DeviceIdentity.from_seed(bytes(range(32)))
    real = wire.connect_params()[0]
    ours = build_connect_params(
        identity=identity,
        client=ClientInfo(display_name="cap-node", version="0.1.0", instance_id=real["client"]["instanceId"]),
        auth=Auth(token=real["auth"]["token"]),
        nonce=real["device"]["nonce"],
        signed_at_ms=real["device"]["signedAt"],
        caps=["system"],
        commands=["system.which"],
    )
    payload = _payload_from_params(ours)
    theirs = _payload_from_params(real)
    # identical except for the device id: same client, role, scopes, time, token, nonce, platform, family
    assert payload.split("|")[2:] == theirs.split("|")[2:]
    assert verify_signature(ours["device"]["publicKey"], payload, ours["device"]["signature"])


def test_connect_params_use_only_keys_the_real_node_host_sends() -> None:
    """ConnectParams and client are closed schemas on the gateway: an unknown key fails the connect."""
    real_keys = set().union(*(p.keys() for p in wire.connect_params())) | {
        "permissions",
        "locale",
        "userAgent",
    }
    real_client_keys = set().union(*(p["client"].keys() for p in wire.connect_params())) | {"modelIdentifier"}
    ours = build_connect_params(
        identity=DeviceIdentity.generate(),
        client=ClientInfo(display_name="x", version="1", instance_id="i", model_identifier="Raspberry Pi 4"),
        auth=Auth(token="t"),
        nonce="n",
        signed_at_ms=1,
        caps=[],
        commands=[],
    )
    assert set(ours) <= real_keys
    assert set(ours["client"]) <= real_client_keys
    assert ours["client"]["id"] == "node-host" and ours["client"]["deviceFamily"] == "Linux"
    assert ours["device"]["signedAt"] == 1  # signed at the challenge's ts, not our clock


def test_pairing_required_capture_is_classified_with_its_request_id() -> None:
    res = next(f for f in wire.frames("01-pairing-required-fresh-identity.jsonl") if f.get("type") == "res")
    error = GatewayError.from_obj(res["error"])
    verdict = classify_connect_error(error, auth=Auth(token="t"))
    assert verdict.action is ConnectAction.PAIRING_WAIT
    assert verdict.request_id == res["error"]["details"]["requestId"]


@pytest.mark.parametrize(
    ("details", "auth", "action"),
    [
        ({"code": "AUTH_DEVICE_TOKEN_MISMATCH"}, Auth(device_token="d"), ConnectAction.DROP_DEVICE_TOKEN),
        ({"code": "AUTH_TOKEN_MISMATCH"}, Auth(token="t"), ConnectAction.FATAL_AUTH),
        ({"code": "AUTH_TOKEN_MISMATCH"}, Auth(device_token="d"), ConnectAction.DROP_DEVICE_TOKEN),
        (
            {"code": "AUTH_BOOTSTRAP_TOKEN_INVALID"},
            Auth(bootstrap_token="b"),
            ConnectAction.DROP_BOOTSTRAP_TOKEN,
        ),
        (
            {"code": "PROTOCOL_MISMATCH", "expectedProtocol": 3},
            Auth(token="t"),
            ConnectAction.PROTOCOL_FALLBACK,
        ),
        ({"code": "PROTOCOL_MISMATCH", "expectedProtocol": 5}, Auth(token="t"), ConnectAction.FATAL_PROTOCOL),
        ({"code": "AUTH_RATE_LIMITED"}, Auth(token="t"), ConnectAction.RETRY_AFTER),
        ({"code": "DEVICE_AUTH_SIGNATURE_INVALID"}, Auth(token="t"), ConnectAction.RETRY),
    ],
)
def test_connect_errors_each_have_their_own_action(details: dict, auth: Auth, action: ConnectAction) -> None:
    verdict = classify_connect_error(GatewayError("INVALID_REQUEST", "x", details), auth=auth)
    assert verdict.action is action


def test_startup_unavailable_waits_what_the_gateway_says() -> None:
    error = GatewayError.from_obj(
        {
            "code": "UNAVAILABLE",
            "message": "starting",
            "retryAfterMs": 1500,
            "details": {"reason": "startup-sidecars"},
        }
    )
    verdict = classify_connect_error(error, auth=Auth(token="t"))
    assert verdict.action is ConnectAction.RETRY_AFTER and verdict.retry_after_ms == 1500


def test_hello_ok_from_captures() -> None:
    hellos = [
        f["payload"]
        for f in wire.frames()
        if f.get("type") == "res"
        and f.get("ok")
        and isinstance(f.get("payload"), dict)
        and f["payload"].get("type") == "hello-ok"
    ]
    assert len(hellos) >= 5
    for payload in hellos:
        hello = HelloOk.from_payload(payload)
        assert hello.max_payload == 26214400 and hello.tick_interval_ms == 30000
        assert hello.device_token
    reconnect = next(
        HelloOk.from_payload(f["payload"])
        for f in wire.frames("05-reconnect-with-stored-device-token.jsonl")
        if f.get("type") == "res" and f.get("ok") and f["payload"].get("type") == "hello-ok"
    )
    assert reconnect.auth_method == "device-token"


def test_surface_request_id_is_read_from_the_gateway_message() -> None:
    errors = [
        GatewayError.from_obj(f["error"])
        for f in wire.frames("02-connect-surface-approval-idle.jsonl")
        if f.get("type") == "res" and not f.get("ok")
    ]
    ids = {surface_request_id(e) for e in errors} - {None}
    assert ids == {"f0180ce6-ee5a-4b6e-82ae-41b7be6e8c37"}


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        "42",
        '"x"',
        '{"type":"event"}',
        '{"type":"res","id":"1"}',
        '{"type":"res","ok":true}',
        '{"type":"nope"}',
        '{"type":"req","id":"","method":"m"}',
        b"\xff\xfe",
    ],
)
def test_malformed_frames_raise_frame_error(text: str | bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode(text)
