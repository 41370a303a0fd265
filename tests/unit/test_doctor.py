"""`edgeclaw doctor` in a temp setup: a healthy baseline, then each fault injected in turn — bad key
permissions, a missing group, a wrong TLS pin, an unreachable gateway — must be named, with its fix."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeclaw.capabilities.gpio import MANIFEST as GPIO_MANIFEST
from edgeclaw.doctor import Check, Host, check_capability_access, check_clock, run_checks
from edgeclaw.platform.state import PairingState, StateDir

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_UNIT = "LoadState=loaded\nWatchdogUSec=30s\nFragmentPath=/etc/systemd/system/edgeclaw.service\n"


@dataclass
class FakeGateway:
    """Just enough of a gateway for the reachability probe: it sends connect.challenge, like the real one."""

    port: int
    cert_der: bytes | None = None


def _serve(tls: ssl.SSLContext | None, ready: threading.Event, box: dict[str, Any]) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        await ws.send(
            json.dumps(
                {
                    "type": "event",
                    "event": "connect.challenge",
                    "payload": {"nonce": "n", "ts": int(time.time() * 1000)},
                }
            )
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.recv(), 5)

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        async with serve(handler, "127.0.0.1", 0, ssl=tls) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await stop.wait()

    asyncio.run(main())


@pytest.fixture
def fake_gateway_factory(tmp_path: Path) -> Iterator[Any]:
    threads: list[tuple[threading.Thread, dict[str, Any]]] = []

    def start(tls: bool = False) -> FakeGateway:
        ctx = None
        der = None
        if tls:
            key, cert = tmp_path / "gw.key", tmp_path / "gw.crt"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    str(key),
                    "-out",
                    str(cert),
                    "-days",
                    "2",
                    "-subj",
                    "/CN=gateway.test",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        ready, box = threading.Event(), {}
        thread = threading.Thread(target=_serve, args=(ctx, ready, box), daemon=True)
        thread.start()
        assert ready.wait(10), "fake gateway did not start"
        threads.append((thread, box))
        return FakeGateway(box["port"], der)

    yield start
    for thread, box in threads:
        loop, stop = box["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_setup(tmp_path: Path, url: str, *, gpio: bool = True, **gateway: Any) -> Path:
    state = StateDir(tmp_path / "state")
    state.create_identity()
    os.chmod(state.path, 0o700)
    state.save_pairing(PairingState(device_approved=True, surface_approved=True, withheld_commands=[]))
    token = tmp_path / "gateway.token"
    token.write_text("gw-secret-token\n")
    token.chmod(0o600)
    config: dict[str, Any] = {
        "gateway": {"url": url, "token_file": str(token), **gateway},
        "node": {"state_dir": str(state.path), "runtime_dir": str(tmp_path / "run"), "hardware": "auto"},
        "telemetry": {"textfile": None},
    }
    if gpio:
        config["gpio"] = {"enabled": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_host(tmp_path: Path, *, in_gpio_group: bool = True) -> Host:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nedgeclaw:x:999:999::/var/lib/edgeclaw:/usr/sbin/nologin\n"
    )
    members = "edgeclaw" if in_gpio_group else "pi"
    (root / "etc/group").write_text(f"root:x:0:\ngpio:x:997:{members}\nvideo:x:44:\nedgeclaw:x:999:\n")
    chip = root / "dev/gpiochip0"
    chip.write_text("")
    chip.chmod(0o666)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    return Host(
        root=root,
        user="edgeclaw",
        systemctl=lambda args: SYSTEM_UNIT if "--user" not in args else None,
        has_module=lambda name: True,
    )


def failing(checks: list[Check]) -> dict[str, Check]:
    return {c.id: c for c in checks if c.status == "fail"}


def test_healthy_setup_passes(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory()
    checks = run_checks(str(make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")), fake_host(tmp_path))
    assert failing(checks) == {}
    by_id = {c.id: c for c in checks}
    assert by_id["gateway"].status == "pass"
    assert by_id["gpio.group.gpio"].status == "pass"
    assert by_id["gpio.device./dev/gpiochip*"].status == "pass"
    assert by_id["gpio.factory"].detail.startswith("LGPIOFactory: real board:")
    assert by_id["systemd.watchdog"].detail == "WatchdogSec=30s"
    assert by_id["clock"].status in ("pass", "warn")  # warn only if this machine's kernel clock is unsynced


def test_bad_key_permissions_are_named(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory()
    config = make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")
    identity = tmp_path / "state" / "identity.json"
    identity.chmod(0o644)
    fails = failing(run_checks(str(config), fake_host(tmp_path)))
    assert set(fails) == {"permissions", "identity"}
    assert f"{identity} has mode 644" in fails["permissions"].detail
    assert fails["permissions"].fix == f"chmod 600 {identity}"


def test_missing_group_is_named(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory()
    config = make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")
    fails = failing(run_checks(str(config), fake_host(tmp_path, in_gpio_group=False)))
    assert set(fails) == {"gpio.group.gpio"}
    assert "edgeclaw is not in the 'gpio' group" in fails["gpio.group.gpio"].detail
    assert fails["gpio.group.gpio"].fix == "sudo usermod -aG gpio edgeclaw && sudo systemctl restart edgeclaw"


def test_wrong_pin_is_named_and_the_right_pin_passes(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory(tls=True)
    actual = hashlib.sha256(gw.cert_der).hexdigest()
    wrong = make_setup(tmp_path / "wrong", f"wss://127.0.0.1:{gw.port}", tls_fingerprint="ab" * 32)
    fails = failing(run_checks(str(wrong), fake_host(tmp_path / "wrong")))
    assert set(fails) == {"gateway"}
    assert "pin mismatch" in fails["gateway"].detail and actual in fails["gateway"].detail
    assert "gateway.tls_fingerprint" in (fails["gateway"].fix or "")

    right = make_setup(tmp_path / "right", f"wss://127.0.0.1:{gw.port}", tls_fingerprint=actual)
    checks = run_checks(str(right), fake_host(tmp_path / "right"))
    assert failing(checks) == {}
    assert {c.id: c for c in checks}["gateway"].detail.endswith("over TLS with pinned certificate")


def test_unreachable_gateway_is_named(tmp_path: Path) -> None:
    port = free_port()
    fails = failing(run_checks(str(make_setup(tmp_path, f"ws://127.0.0.1:{port}")), fake_host(tmp_path)))
    assert set(fails) == {"gateway"}
    assert fails["gateway"].detail == f"cannot reach 127.0.0.1:{port} over TCP: connection refused"


def test_user_unit_and_missing_watchdog(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory()
    config = make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")
    host = fake_host(tmp_path)
    host.systemctl = lambda args: "LoadState=loaded\n" if "--user" in args else "LoadState=not-found\n"
    fails = failing(run_checks(str(config), host))
    assert set(fails) == {"systemd.unit"} and "user unit" in fails["systemd.unit"].detail
    host.systemctl = lambda args: "LoadState=loaded\nWatchdogUSec=0\n"
    checks = {c.id: c for c in run_checks(str(config), host)}
    assert checks["systemd.watchdog"].status == "warn" and "WatchdogSec=30s" in (
        checks["systemd.watchdog"].fix or ""
    )


def test_device_node_in_a_group_the_user_lacks(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    chip = host.root / "dev/gpiochip0"
    chip.chmod(0o660)
    if os.getuid() == 0:
        os.chown(chip, 0, 44)  # group video in the fake /etc/group
        checks = {c.id: c for c in check_capability_access("gpio", GPIO_MANIFEST, host, "edgeclaw")}
        assert checks["gpio.device./dev/gpiochip*"].status == "fail"
        assert (
            checks["gpio.device./dev/gpiochip*"].fix
            == "sudo usermod -aG video edgeclaw && sudo systemctl restart edgeclaw"
        )
    chip.unlink()
    checks = {c.id: c for c in check_capability_access("gpio", GPIO_MANIFEST, host, "edgeclaw")}
    assert checks["gpio.devices"].status == "fail" and "/dev/gpiochip*" in checks["gpio.devices"].detail


def test_clock_against_the_gateway() -> None:
    now = time.time()
    assert check_clock(now, int((now - 300) * 1000), True).status == "fail"
    assert check_clock(now, int((now - 30) * 1000), True).status == "warn"
    assert check_clock(now, int(now * 1000), True).status == "pass"
    assert check_clock(86400 * 365, None, None).status == "fail"  # booted in 1971: no RTC, no NTP


def test_cli_json_and_exit_status(tmp_path: Path, fake_gateway_factory: Any) -> None:
    gw = fake_gateway_factory()
    good = make_setup(tmp_path / "good", f"ws://127.0.0.1:{gw.port}", gpio=False)
    bad = make_setup(tmp_path / "bad", f"ws://127.0.0.1:{free_port()}", gpio=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgeclaw", "doctor", "--json", "--user", "root", "--config"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    ko = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=60, env=env)
    assert ko.returncode == 1
    report = json.loads(ko.stdout)
    assert report["ok"] is False
    assert [c["id"] for c in report["checks"] if c["status"] == "fail"] == ["gateway"]
    text = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "doctor", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "FAIL  gateway reachable: cannot reach" in text.stdout and "      fix: " in text.stdout


def test_shell_isolation_is_named_and_a_forced_missing_socket_fails(
    tmp_path: Path, fake_gateway_factory: Any
) -> None:
    import socket

    gw = fake_gateway_factory()
    path = make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")
    doc = yaml.safe_load(path.read_text())
    sock_path = str(tmp_path / "run.sock")
    doc["shell"] = {"run_socket": sock_path}
    path.write_text(yaml.safe_dump(doc))
    by_id = {c.id: c for c in run_checks(str(path), fake_host(tmp_path))}
    assert by_id["shell.isolation"].status == "pass" and by_id["shell.isolation"].detail.startswith(
        "inprocess"
    )
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(sock_path)
        by_id = {c.id: c for c in run_checks(str(path), fake_host(tmp_path / "2"))}
        assert by_id["shell.isolation"].detail.startswith("systemd: each run as edgeclaw-run")
    os.unlink(sock_path)
    doc["shell"]["isolation"] = "systemd"
    path.write_text(yaml.safe_dump(doc))
    by_id = {c.id: c for c in run_checks(str(path), fake_host(tmp_path / "3"))}
    assert by_id["shell.isolation"].status == "fail" and "UNAVAILABLE" in by_id["shell.isolation"].detail
