"""Fault injection with an in-process fake gateway: every bad thing is logged, the node keeps running and
reconnects. The real NodeRunner, Session and Dispatcher run; only the gateway is fake."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import Capability, CapabilityManifest, Handler, InvokeContext
from edgeclaw.node.runner import EX_NOPERM, FatalError
from edgeclaw.node.session import Session
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

pytestmark = pytest.mark.timeout(60)


async def _connected(node: Any) -> None:
    """The gateway has sent hello-ok; give the node a moment to take it in."""
    for _ in range(100):
        if node.status.connection == "connected":
            return
        await asyncio.sleep(0.02)
    assert node.status.connection == "connected"


async def _which_works(gw: FakeGateway) -> None:
    rid = await gw.invoke("system.which", {"bins": ["sh"]})
    result = await gw.result_for(rid)
    assert result["ok"] and json.loads(result["payloadJSON"])["bins"]["sh"].endswith("/sh")


async def test_connects_signs_and_serves(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw) as node:
        await gw.wait_hello(1)
        await _which_works(gw)
        params = gw.connects[0]
        assert params["commands"] == ["system.notify", "system.which"]
        assert gw.signature_failures == 0
        assert node.status.connection == "connected"


@pytest.mark.parametrize(
    "garbage",
    [
        "{not json",
        "[1,2]",
        '{"type":"mystery"}',
        '{"type":"event"}',
        '{"type":"res","id":"zz","ok":true}',
        b"\x00\x01binary",
        '{"type":"event","event":"node.invoke.request","payload":"nope"}',
        '{"type":"event","event":"node.invoke.request","payload":{"command":"system.which"}}',
    ],
)
async def test_malformed_frames_are_logged_and_the_node_keeps_serving(
    tmp_path: Path, gw: FakeGateway, garbage: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        await gw.send_raw(garbage)
        await _which_works(gw)
        assert gw.hello_count == 1  # same connection: bad frames are skipped, not fatal


@pytest.mark.parametrize(
    ("params_json", "code"),
    [
        ("{bad", "INVALID_REQUEST"),
        (json.dumps([1]), "INVALID_REQUEST"),
        (42, "INVALID_REQUEST"),
        (json.dumps({"bins": "sh"}), "INVALID_REQUEST"),
        (json.dumps({"bins": [1]}), "INVALID_REQUEST"),
    ],
)
async def test_bad_params_get_a_coded_error(
    tmp_path: Path, gw: FakeGateway, params_json: Any, code: str
) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        rid = await gw.invoke("system.which", raw_params_json=params_json)
        result = await gw.result_for(rid)
        assert result["ok"] is False and result["error"]["code"] == code
        await _which_works(gw)


async def test_null_params_mean_empty_object(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        rid = await gw.invoke("system.which", raw_params_json=None)
        result = await gw.result_for(rid)
        assert result["error"]["code"] == "INVALID_REQUEST" and "bins" in result["error"]["message"]


async def test_unknown_command_is_a_coded_error(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await gw.result_for(await gw.invoke("system.teleport", {}))
        assert result["error"]["code"] == "UNKNOWN_COMMAND"


async def test_oversized_frame_closes_and_the_node_reconnects(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        await gw.send_raw("x" * (33 * 1024 * 1024))  # above the node's 32 MiB inbound limit → 1009
        await gw.wait_hello(2, timeout=15)
        await _which_works(gw)


async def test_no_ticks_means_tick_timeout_close_4000_and_reconnect(tmp_path: Path, gw: FakeGateway) -> None:
    gw.tick_interval_ms = 300
    gw.send_ticks = False
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        first = gw.connections[-1]
        await gw.wait_hello(2, timeout=10)
        assert first.close_code == 4000 and first.close_reason == "tick timeout"


async def test_stall_before_challenge_times_out_and_retries(tmp_path: Path, gw: FakeGateway) -> None:
    gw.send_challenge = False
    async with running_node(tmp_path, gw) as node:
        await asyncio.sleep(2.6)
        assert len(gw.connections) >= 2  # gave up on the silent one and tried again
        assert "connect.challenge" in (node.status.last_error or "")
        gw.send_challenge = True
        await gw.wait_hello(1, timeout=10)
        await _which_works(gw)


async def test_stall_mid_handshake_times_out_and_retries(tmp_path: Path, gw: FakeGateway) -> None:
    gw.answer_connect = False
    async with running_node(tmp_path, gw) as node:
        await asyncio.sleep(2.6)
        assert len(gw.connects) >= 1
        assert "connect response" in (node.status.last_error or "")
        gw.answer_connect = True
        await gw.wait_hello(1, timeout=10)


async def test_refused_connection_backs_off_and_connects_when_the_gateway_appears(tmp_path: Path) -> None:
    gw = FakeGateway()
    await gw.start()
    port = gw.port
    await gw.stop()
    gw2 = FakeGateway()
    try:
        async with running_node(tmp_path, gw) as node:
            await asyncio.sleep(0.8)
            assert node.status.connection in ("backoff", "connecting")
            assert "refused" in (node.status.last_error or "")
            await gw2.start(port)
            await gw2.wait_hello(1, timeout=10)
    finally:
        await gw2.stop()


async def test_pairing_required_retries_without_restart_and_logs_each_request_once(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pairing = {
        "code": "NOT_PAIRED",
        "message": "pairing required",
        "details": {"code": "PAIRING_REQUIRED", "reason": "not-paired", "requestId": "req-7b49"},
    }
    gw.connect_errors = [pairing, pairing, pairing]
    async with running_node(tmp_path, gw) as node:
        await gw.wait_hello(1, timeout=15)
        assert len(gw.connects) == 4
        lines = [
            r.getMessage() for r in caplog.records if "openclaw devices approve req-7b49" in r.getMessage()
        ]
        assert len(lines) == 1
        await _connected(node)


async def test_device_token_is_stored_0600_and_used_next_time(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
    token_file = tmp_path / "state" / "device-token.json"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    async with running_node(tmp_path, gw):
        await gw.wait_hello(2)
    assert gw.connects[1]["auth"] == {"deviceToken": "fake-device-token-abcdef"}


async def test_device_token_mismatch_drops_the_token_and_falls_back(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
    gw.connect_errors = [
        {
            "code": "INVALID_REQUEST",
            "message": "device token mismatch",
            "details": {"code": "AUTH_DEVICE_TOKEN_MISMATCH"},
        }
    ]
    async with running_node(tmp_path, gw):
        await gw.wait_hello(2, timeout=10)
    assert gw.connects[1]["auth"] == {"deviceToken": "fake-device-token-abcdef"}
    assert gw.connects[2]["auth"] == {"token": "fake-token-123456"}


async def test_fatal_auth_stops_with_exit_status_77(tmp_path: Path, gw: FakeGateway) -> None:
    from edgeclaw.config import parse_config  # noqa: F401  (documents where the token comes from)

    gw.connect_errors = [
        {
            "code": "INVALID_REQUEST",
            "message": "unauthorized: gateway token mismatch",
            "details": {"code": "AUTH_TOKEN_MISMATCH"},
        }
    ]
    from edgeclaw.capabilities.system import SystemCapability
    from edgeclaw.node.runner import NodeRunner
    from edgeclaw.platform.state import StateDir
    from tests.unit.nodeharness import make_config

    config = make_config(tmp_path, gw.url)
    state = StateDir(config.state_dir)
    runner = NodeRunner(config, state.load_or_create_identity(), state)
    runner.set_capabilities([SystemCapability(config.capabilities["system"], runner)])
    with pytest.raises(FatalError) as info:
        await asyncio.wait_for(runner.run(), 10)
    assert info.value.exit_code == EX_NOPERM
    assert runner.status.connection == "fatal"


async def test_shutdown_event_triggers_fast_probing(tmp_path: Path) -> None:
    gw = FakeGateway()
    await gw.start()
    port = gw.port
    async with running_node(tmp_path, gw, gateway={"backoff_initial_s": 5, "backoff_max_s": 30}) as node:
        await gw.wait_hello(1)
        await gw.send_event("shutdown", {"reason": "restart", "restartExpectedMs": 1000})
        await gw.stop()
        await asyncio.sleep(1.0)  # gateway down for a while: the node probes, it does not back off to 5+ s
        gw2 = FakeGateway()
        await gw2.start(port)
        loop = asyncio.get_running_loop()
        up = loop.time()
        try:
            await gw2.wait_hello(1, timeout=5)
            assert loop.time() - up < 1.0
            await _connected(node)
        finally:
            await gw2.stop()


async def test_cancelled_invoke_sends_nothing(tmp_path: Path, gw: FakeGateway) -> None:
    started = asyncio.Event()

    class Slow(Capability):
        manifest = CapabilityManifest(name="slow", caps=("slow",), commands=("slow.wait",))

        def handlers(self) -> dict[str, Handler]:
            async def wait(ctx: InvokeContext) -> dict[str, Any]:
                started.set()
                await asyncio.sleep(30)
                return {}

            return {"slow.wait": wait}

    async with running_node(tmp_path, gw, extra_caps=[Slow(None, None)]) as node:  # type: ignore[arg-type]
        await gw.wait_hello(1)
        rid = await gw.invoke("slow.wait", {})
        await asyncio.wait_for(started.wait(), 5)
        await gw.send_event("node.invoke.cancel", {"invokeId": rid, "nodeId": "n"})
        await asyncio.sleep(0.3)
        await _which_works(gw)
        assert not [r for r in gw.results if r["id"] == rid]
        for _ in range(50):
            if node.dispatcher.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert node.dispatcher.in_flight == 0


async def test_repeated_invoke_id_is_answered_once(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        rid = await gw.invoke("system.which", {"bins": ["sh"]}, invoke_id="dup-1")
        await gw.invoke("system.which", {"bins": ["sh"]}, invoke_id="dup-1")
        await gw.result_for(rid)
        await _which_works(gw)
        assert len([r for r in gw.results if r["id"] == "dup-1"]) == 1


async def test_result_over_max_payload_becomes_payload_too_large(tmp_path: Path, gw: FakeGateway) -> None:
    gw.max_payload = 6000

    class Big(Capability):
        manifest = CapabilityManifest(name="big", caps=("big",), commands=("big.blob",))

        def handlers(self) -> dict[str, Handler]:
            async def blob(ctx: InvokeContext) -> dict[str, Any]:
                return {"data": "x" * 10_000}

            return {"big.blob": blob}

    async with running_node(tmp_path, gw, extra_caps=[Big(None, None)]):  # type: ignore[arg-type]
        await gw.wait_hello(1)
        result = await gw.result_for(await gw.invoke("big.blob", {}))
        assert result["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert gw.hello_count == 1


async def test_handler_exception_is_a_coded_error_and_the_node_survives(
    tmp_path: Path, gw: FakeGateway
) -> None:
    class Broken(Capability):
        manifest = CapabilityManifest(name="broken", caps=("broken",), commands=("broken.boom",))

        def handlers(self) -> dict[str, Handler]:
            async def boom(ctx: InvokeContext) -> dict[str, Any]:
                raise RuntimeError("kaboom")

            return {"broken.boom": boom}

    async with running_node(tmp_path, gw, extra_caps=[Broken(None, None)]):  # type: ignore[arg-type]
        await gw.wait_hello(1)
        result = await gw.result_for(await gw.invoke("broken.boom", {}))
        assert result["error"]["code"] == "INTERNAL_ERROR" and "kaboom" in result["error"]["message"]
        await _which_works(gw)


async def test_full_queue_gets_a_busy_error_while_ticks_and_other_invokes_flow(
    tmp_path: Path, gw: FakeGateway
) -> None:
    release = asyncio.Event()

    class Narrow(Capability):
        manifest = CapabilityManifest(name="narrow", caps=("narrow",), commands=("narrow.hold",))
        max_concurrency = 1
        queue_limit = 1
        busy_code = "NARROW_BUSY"

        def handlers(self) -> dict[str, Handler]:
            async def hold(ctx: InvokeContext) -> dict[str, Any]:
                await release.wait()
                return {"ok": True}

            return {"narrow.hold": hold}

    async with running_node(tmp_path, gw, extra_caps=[Narrow(None, None)]):  # type: ignore[arg-type]
        await gw.wait_hello(1)
        first = await gw.invoke("narrow.hold", {})
        await asyncio.sleep(0.1)
        second = await gw.invoke("narrow.hold", {})
        await asyncio.sleep(0.1)
        third = await gw.result_for(await gw.invoke("narrow.hold", {}))
        assert third["error"]["code"] == "NARROW_BUSY"
        await _which_works(gw)  # another capability is not blocked
        release.set()
        assert (await gw.result_for(first))["ok"] and (await gw.result_for(second))["ok"]


def _self_signed(tmp: Path) -> tuple[Path, Path, str]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True, timeout=30
    ).stdout
    import hashlib

    return key, cert, hashlib.sha256(der).hexdigest()


async def test_tls_pin_mismatch_is_refused_and_a_matching_pin_connects(tmp_path: Path) -> None:
    key, cert, fingerprint = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    gw = FakeGateway(ssl=ctx)
    await gw.start()
    try:
        wrong = "sha256:" + ":".join(["ab"] * 32)
        async with running_node(tmp_path / "a", gw, gateway={"tls_fingerprint": wrong}) as node:
            await asyncio.sleep(1.0)
            assert gw.hello_count == 0 and not gw.connects
            assert "pin mismatch" in (node.status.last_error or "")
        pin = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
        async with running_node(tmp_path / "b", gw, gateway={"tls_fingerprint": pin}):
            await gw.wait_hello(1, timeout=10)
    finally:
        await gw.stop()


async def test_host_stats_are_sent_after_connect(tmp_path: Path, gw: FakeGateway) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        for _ in range(100):
            if gw.node_events:
                break
            await asyncio.sleep(0.05)
        stats = json.loads(gw.node_events[0]["payloadJSON"])
        assert gw.node_events[0]["event"] == "node.host.stats"
        assert stats["cpuCount"] >= 1 and 0 < stats["memoryFreeBytes"] <= stats["memoryTotalBytes"]


async def test_stop_while_connecting_to_a_silent_gateway_is_immediate(
    tmp_path: Path, gw: FakeGateway
) -> None:
    """A gateway that accepts TCP but never speaks must not hold up `systemctl stop` for a connect timeout."""
    gw.send_challenge = False
    async with running_node(tmp_path, gw, gateway={"connect_timeout_s": 30}) as node:
        await asyncio.sleep(0.5)
        assert node.status.connection == "connecting"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await node.shutdown(drain_timeout=1)
        task = next(t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("Mixin.run"))
        await asyncio.wait_for(task, 2)
        assert loop.time() - t0 < 1.5


async def test_a_finished_connection_is_freed_when_the_node_reconnects(
    tmp_path: Path, gw: FakeGateway
) -> None:
    """A closed connection is a graph of reference cycles; left to Python's automatic collector it stays
    in memory for hundreds of reconnects. Automatic collection is off here: only the node's own frees it."""
    async with running_node(tmp_path, gw, gateway={"backoff_initial_s": 0.01, "backoff_max_s": 0.02}):
        await gw.wait_hello(1)
        gc.collect()
        gc.disable()
        try:
            for n in range(2, 22):
                live = gw.live
                assert live is not None
                await live.close()
                await gw.wait_hello(n, timeout=10)
            await _which_works(gw)
            sessions = sum(1 for o in gc.get_objects() if isinstance(o, Session))
        finally:
            gc.enable()
    assert sessions <= 2, f"{sessions} Session objects alive after 20 reconnects"


@pytest.mark.parametrize(
    "params",
    [
        {"title": "t", "priority": ["active"]},  # unhashable: found by the chaos fuzz test
        {"title": "t", "priority": {"a": 1}},
        {"title": "t", "priority": 3},
        {"title": "t", "priority": "loud"},
        {"title": ["t"]},
        {},
    ],
)
async def test_system_notify_refuses_bad_params_with_a_code(
    tmp_path: Path, gw: FakeGateway, params: dict[str, Any]
) -> None:
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await gw.result_for(await gw.invoke("system.notify", params))
        assert not result["ok"] and result["error"]["code"] == "INVALID_REQUEST", result
        ok = await gw.result_for(await gw.invoke("system.notify", {"title": "t", "priority": "passive"}))
        assert ok["ok"], ok
