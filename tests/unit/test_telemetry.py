"""Telemetry: bus events → Prometheus textfile and /metrics, parsed back with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeclaw.config import TelemetryConfig, parse_config
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus
from edgeclaw.platform.metrics import MAX_LABEL_VALUES, Metrics, Snapshot
from edgeclaw.platform.metrics_http import parse_listen
from edgeclaw.platform.telemetry import Telemetry
from edgeclaw.typedconfig import ConfigError


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def invoke(
    bus: EventBus, command: str, duration: float, outcome: str = "ok", code: str | None = None
) -> None:
    bus.emit(events.INVOKE_START, command=command, invoke_id="i")
    bus.emit(
        events.INVOKE_STOP, command=command, invoke_id="i", duration_s=duration, outcome=outcome, code=code
    )


def test_series_after_a_session_with_invokes() -> None:
    bus = EventBus()
    metrics = Metrics(node_id="abc123", version="0.1.0", started_at=1700000000.0)
    bus.subscribe(metrics)
    bus.emit(events.CONNECT, url="ws://gw", attempt=1)
    bus.emit(events.HELLO_OK, server_version="2026.9.6", protocol=4, tick_interval_ms=30000, elapsed_s=0.1)
    for d in (0.003, 0.04, 0.2):
        invoke(bus, "device.status", d)
    invoke(bus, "camera.snap", 1.5, "error", "CAMERA_BUSY")
    invoke(bus, "gpio.read", 0.01, "cancelled")
    bus.emit(events.INVOKE_EXCEPTION, command="gpio.read", invoke_id="x", error="RuntimeError()")
    bus.emit(events.LOOP_LAG, lag_s=1.7)
    text = metrics.render(
        Snapshot(
            pairing="approved",
            invokes_in_flight=2,
            withheld_commands=1,
            rss_bytes=25_000_000,
            loop_lag_s=0.002,
        )
    )

    assert value(text, "edgeclaw_invokes_total", command="device.status", outcome="ok") == 3
    assert value(text, "edgeclaw_invokes_total", command="camera.snap", outcome="error") == 1
    assert value(text, "edgeclaw_invokes_total", command="gpio.read", outcome="cancelled") == 1
    h = {"command": "device.status", "outcome": "ok"}
    assert value(text, "edgeclaw_invoke_duration_seconds_bucket", **h, le="0.005") == 1
    assert value(text, "edgeclaw_invoke_duration_seconds_bucket", **h, le="0.05") == 2
    assert value(text, "edgeclaw_invoke_duration_seconds_bucket", **h, le="0.25") == 3
    assert value(text, "edgeclaw_invoke_duration_seconds_bucket", **h, le="+Inf") == 3
    assert value(text, "edgeclaw_invoke_duration_seconds_count", **h) == 3
    assert value(text, "edgeclaw_invoke_duration_seconds_sum", **h) == pytest.approx(0.243)
    assert value(text, "edgeclaw_invoke_errors_total", command="camera.snap", code="CAMERA_BUSY") == 1
    assert value(text, "edgeclaw_invoke_exceptions_total", command="gpio.read") == 1
    assert value(text, "edgeclaw_connected") == 1
    assert value(text, "edgeclaw_connect_attempts_total") == 1
    assert value(text, "edgeclaw_reconnects_total") == 0
    assert value(text, "edgeclaw_last_hello_ok_timestamp_seconds") > 1700000000
    assert value(text, "edgeclaw_pairing_state", state="approved") == 1
    assert value(text, "edgeclaw_pairing_state", state="surface-pending") == 0
    assert value(text, "edgeclaw_withheld_commands") == 1
    assert value(text, "edgeclaw_invokes_in_flight") == 2
    assert value(text, "edgeclaw_resident_memory_bytes") == 25_000_000
    assert value(text, "edgeclaw_event_loop_lag_seconds") == pytest.approx(0.002)
    assert value(text, "edgeclaw_event_loop_lag_events_total") == 1
    assert value(text, "edgeclaw_info", node_id="abc123", version="0.1.0") == 1
    assert value(text, "edgeclaw_start_time_seconds") == 1700000000

    bus.emit(events.DISCONNECT, code=1006, reason="lost", connected_s=5.0)
    text = metrics.render(Snapshot())
    assert value(text, "edgeclaw_connected") == 0
    assert value(text, "edgeclaw_reconnects_total") == 1
    assert value(text, "edgeclaw_pairing_state", state="unknown") == 1
    assert ("edgeclaw_resident_memory_bytes", ()) not in samples(text)


def test_label_values_from_the_gateway_are_bounded_and_escaped() -> None:
    bus = EventBus()
    metrics = Metrics(node_id="n", version="v")
    bus.subscribe(metrics)
    invoke(bus, 'evil"\ncommand\\', 0.01, "error", "UNKNOWN_COMMAND")
    for i in range(MAX_LABEL_VALUES + 50):
        invoke(bus, f"bogus.{i}", 0.01, "error", "UNKNOWN_COMMAND")
    parsed = samples(metrics.render(Snapshot()))
    commands = {dict(labels)["command"] for (name, labels) in parsed if name == "edgeclaw_invokes_total"}
    assert len(commands) == MAX_LABEL_VALUES + 1  # the cap plus the shared overflow label
    assert 'evil"\ncommand\\' in commands
    assert parsed[("edgeclaw_invokes_total", (("command", "other"), ("outcome", "error")))] == 51


def make_telemetry(tmp_path: Path, **config: Any) -> tuple[Telemetry, EventBus, dict[str, Any]]:
    bus = EventBus()
    snap: dict[str, Any] = {
        "pairing": "surface-pending",
        "invokes_in_flight": 0,
        "withheld_commands": ["device.info"],
    }
    tel = Telemetry(
        TelemetryConfig(**config),
        bus,
        node_id="n1",
        version="0.1.0",
        snapshot=lambda: snap,
        loop_lag=lambda: 0.0,
    )
    return tel, bus, snap


def test_textfile_is_replaced_atomically_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "edgeclaw.prom"
    tel, bus, _ = make_telemetry(tmp_path, textfile=str(target))
    invoke(bus, "device.info", 0.02)
    assert tel.write_now()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text()
    assert value(text, "edgeclaw_invokes_total", command="device.info", outcome="ok") == 1
    assert value(text, "edgeclaw_pairing_state", state="surface-pending") == 1
    assert value(text, "edgeclaw_withheld_commands") == 1
    assert value(text, "edgeclaw_resident_memory_bytes") > 1_000_000  # this process's real RSS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeclaw.prom"]  # no temp file left behind


def test_missing_textfile_directory_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "no-such-dir" / "edgeclaw.prom"
    tel, _, _ = make_telemetry(tmp_path, textfile=str(target))
    with caplog.at_level(logging.INFO, logger="edgeclaw.telemetry"):
        assert not tel.write_now()
        assert not tel.write_now()
    messages = [r.getMessage() for r in caplog.records if "no-such-dir" in r.getMessage()]
    assert len(messages) == 1 and "does not exist" in messages[0]
    target.parent.mkdir()
    assert tel.write_now() and target.exists()


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_serves_metrics_and_reload_moves_the_textfile(tmp_path: Path) -> None:
    first, second = tmp_path / "a.prom", tmp_path / "b.prom"
    tel, bus, _ = make_telemetry(tmp_path, textfile=str(first), textfile_interval_s=1.0)
    task = asyncio.create_task(tel.run())
    try:
        for _ in range(50):
            if first.exists():
                break
            await asyncio.sleep(0.05)
        assert first.exists()
        port = free_port()
        await tel.reload(TelemetryConfig(textfile=str(second), metrics_listen=f"127.0.0.1:{port}"))
        bus.emit(events.HELLO_OK, server_version="x", protocol=4, tick_interval_ms=1, elapsed_s=0.0)
        invoke(bus, "device.status", 0.3)
        code, body = await http_get(port, "/metrics")
        assert code == 200
        assert value(body, "edgeclaw_invokes_total", command="device.status", outcome="ok") == 1
        assert value(body, "edgeclaw_connected") == 1
        assert (await http_get(port, "/"))[0] == 404
        assert (await http_get(port, "/metrics", "POST"))[0] == 405
        for _ in range(50):
            if second.exists():
                break
            await asyncio.sleep(0.05)
        assert second.exists() and not first.exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # the last write on the way out says the node is no longer connected, and the port is closed
    assert value(second.read_text(), "edgeclaw_connected") == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("metrics_listen: 0.0.0.0:9464", "telemetry.metrics_listen"),
        ("metrics_listen: 192.168.1.5:9464", "telemetry.metrics_listen"),
        ("metrics_listen: '127.0.0.1'", "telemetry.metrics_listen"),
        ("textfile: relative/edgeclaw.prom", "telemetry.textfile"),
        ("textfile: /var/lib/node-exporter/edgeclaw.txt", "telemetry.textfile"),
        ("textfile_interval_s: 0", "telemetry.textfile_interval_s"),
    ],
)
def test_bad_telemetry_config_names_the_key(section: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"telemetry:\n  {section}\n")
    assert err.value.key == key


def test_telemetry_defaults() -> None:
    cfg = parse_config("telemetry: {}\n").core.telemetry
    assert cfg.textfile == "/var/lib/prometheus/node-exporter/edgeclaw.prom"
    assert cfg.metrics_listen is None
    assert parse_config("telemetry: {textfile: null}\n").core.telemetry.textfile is None
    assert parse_listen("[::1]:9464") == ("::1", 9464)
