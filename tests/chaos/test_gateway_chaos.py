"""Chaos against the REAL gateway: restarts, a frozen gateway, a link cut without FIN. Each prints its figure.

The frozen-gateway and link-cut scenarios run twice: with the default ping probe (ping after 10 s of
inbound silence, 4 s for the pong: bound 14 s) and with the probe off (gateway.ping_interval_s: 0),
the tick-only liveness (2 × the 30 s tick) for comparison."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import pytest

from tests.support.gateway import Gateway, Operator, invoke_payload, wait_for

RESTARTS = int(os.environ.get("EDGECLAW_CHAOS_RESTARTS", "20"))
PING_BOUND_S = 10 + 4  # the config defaults: gateway.ping_interval_s + gateway.ping_timeout_s
# probe -> (extra gateway config, the log line that says the node gave up on the link)
PROBES: dict[str, tuple[dict[str, Any], str]] = {
    "ping": ({}, "no pong from the gateway"),
    "tick": ({"ping_interval_s": 0}, "closing with 4000"),
}


async def _serving(gw: Gateway, node_id: str, timeout: float = 30.0) -> None:
    """Serving = an operator's system.which reaches the node and comes back."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            async with Operator(gw) as op:
                frame = await op.invoke(node_id, "system.which", {"bins": ["sh"]}, timeout_ms=5000)
                if frame.get("ok"):
                    assert "sh" in invoke_payload(frame)["bins"]
                    return
                last = frame
        except Exception as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"node not serving within {timeout} s: {last!r}")


@pytest.mark.timeout(60 + RESTARTS * 150)
async def test_gateway_restarted_many_times_node_is_back_every_time(
    gateway_factory: Any, node_factory: Any
) -> None:
    gw = gateway_factory()
    node = node_factory(gw, name="chaos-restarts")
    worst = 0.0
    times, connect_times = [], []
    for _ in range(RESTARTS):
        gw.stop()
        await asyncio.to_thread(wait_for, lambda: node.live_status().get("connection") != "connected", 30)
        await asyncio.to_thread(gw.start)
        ready = time.monotonic()
        await asyncio.to_thread(
            wait_for, lambda: node.live_status().get("connection") == "connected", 30, 0.05, "reconnected"
        )
        connect_times.append(time.monotonic() - ready)
        await _serving(gw, node.node_id)
        took = time.monotonic() - ready
        times.append(took)
        worst = max(worst, took)
    assert node.proc is not None and node.proc.poll() is None
    print(
        f"\n[figure] {RESTARTS} gateway restarts: node reconnected after /readyz in median "
        f"{sorted(connect_times)[len(times) // 2]:.2f} s (worst {max(connect_times):.2f} s); serving an "
        f"operator invoke after median {sorted(times)[len(times) // 2]:.2f} s (worst {worst:.2f} s)"
    )
    assert node.live_status()["reconnects"] >= RESTARTS


@pytest.mark.timeout(120)
async def test_real_gateway_answers_the_node_pings(gateway: Gateway, node_factory: Any) -> None:
    """With a ping after every 1 s of silence and 1 s for the pong, a gateway that did not answer
    pings would be dropped within 2 s; ticks come only every 30 s, so staying connected 8 s on one
    connection means the gateway's `ws` server answered every ping."""
    node = node_factory(
        gateway, name="chaos-pings", extra={"gateway": {"ping_interval_s": 1, "ping_timeout_s": 1}}
    )
    await asyncio.to_thread(wait_for, lambda: node.live_status().get("connection") == "connected", 60)
    before = node.live_status()["reconnects"]
    await asyncio.sleep(8)
    assert node.live_status().get("connection") == "connected"
    assert node.live_status()["reconnects"] == before
    assert "no pong" not in node.log()
    await _serving(gateway, node.node_id)
    print("\n[figure] real gateway answers pings: 8 s at 1 ping/s of silence, 0 reconnects")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("probe", list(PROBES))
async def test_frozen_gateway_is_detected_and_no_invoke_runs_twice(
    gateway_factory: Any, node_factory: Any, tmp_path: Any, probe: str
) -> None:
    gw = gateway_factory()
    hook = tmp_path / "slow-hook.sh"
    hook.write_text("#!/bin/sh\nsleep 2\n")
    hook.chmod(0o755)
    gateway_extra, gave_up = PROBES[probe]
    node = node_factory(
        gw,
        name=f"chaos-freeze-{probe}",
        extra={"system": {"notify_hook": [str(hook)]}, "gateway": gateway_extra},
    )
    assert gw.proc is not None
    async with Operator(gw) as op:
        pending = asyncio.ensure_future(
            op.invoke(node.node_id, "system.notify", {"title": "chaos-once"}, timeout_ms=60000)
        )
        await asyncio.sleep(0.5)  # the invoke is at the node, its hook running
        os.kill(gw.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_for(
                lambda: node.live_status().get("connection") != "connected",
                120,
                interval=0.1,
                what="stall detected",
            )
            detected = time.monotonic() - frozen_at
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        thawed = time.monotonic()
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
    await _serving(gw, node.node_id, timeout=90)
    back = time.monotonic() - thawed
    bound = f"ping {PING_BOUND_S} s" if probe == "ping" else "2 × tick = 60 s"
    print(
        f"\n[figure] frozen gateway ({probe} probe): stall detected after {detected:.1f} s ({bound}); "
        f"serving again {back:.1f} s after thaw"
    )
    assert gave_up in node.log()
    if probe == "ping":
        assert detected <= PING_BOUND_S + 0.5  # + the 0.1 s poll and the status write
    else:
        assert detected <= 60 + 31  # last inbound frame is at most one tick before the freeze
    assert node.log().count("notification [active]: chaos-once") == 1


class BlackholeProxy:
    """A loopback TCP proxy; `cut()` silently stops forwarding on existing connections (no FIN, no RST)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_event = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.generation = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.cut_event.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_event.is_set():
            self.cut_event = asyncio.Event()  # new connections after a cut flow normally
        cut = self.cut_event
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while not cut.is_set():
                data = await src.read(65536)
                if not data:
                    break
                if cut.is_set():
                    break
                dst.write(data)
                await dst.drain()
            await cut.wait()  # hold the sockets open: a blackhole, not a close

        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("probe", list(PROBES))
async def test_link_cut_without_fin_is_detected(gateway: Gateway, node_factory: Any, probe: str) -> None:
    proxy = BlackholeProxy(gateway.port)
    await proxy.start()
    gateway_extra, gave_up = PROBES[probe]
    try:
        node = node_factory(gateway, name=f"chaos-blackhole-{probe}", paired=True)
        node.stop()
        node.config["gateway"].update(gateway_extra)
        node.config["gateway"]["url"] = f"ws://127.0.0.1:{proxy.port}"
        node.write_config()
        # the device token is bound to the URL it was issued for: keep it valid through the proxy
        token_path = node.state_dir / "device-token.json"
        token_path.write_text(token_path.read_text().replace(gateway.url, f"ws://127.0.0.1:{proxy.port}"))
        node.start()
        await asyncio.to_thread(wait_for, lambda: node.live_status().get("connection") == "connected", 60)
        await _serving(gateway, node.node_id)
        before = node.live_status()["reconnects"]
        offset = len(node.log())
        proxy.cut()
        cut_at = time.monotonic()
        await asyncio.to_thread(wait_for, lambda: gave_up in node.log()[offset:], 120, 0.1, "cut detected")
        detected = time.monotonic() - cut_at
        # through the proxy a new connection flows at once: watch the reconnect count, not the state
        await asyncio.to_thread(
            wait_for, lambda: node.live_status().get("reconnects", 0) > before, 60, 0.1, "reconnected"
        )
        back = time.monotonic() - cut_at
        await _serving(gateway, node.node_id, timeout=60)
        bound = f"ping {PING_BOUND_S} s" if probe == "ping" else "2 × tick = 60 s"
        print(
            f"\n[figure] link cut without FIN ({probe} probe): detected after {detected:.1f} s (bound: "
            f"{bound} after the last frame), reconnected after {back:.1f} s"
        )
        assert detected <= (PING_BOUND_S + 0.5 if probe == "ping" else 61)
    finally:
        await proxy.stop()
