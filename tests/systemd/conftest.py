"""Fixtures for the systemd tier: EdgeClaw installed into a Debian bookworm rootfs the way a user installs
it, booted with systemd 252 as PID 1 in systemd-nspawn, paired with a real OpenClaw gateway.

The gateway and the container share one network namespace that this test process creates and enters
(tests.support.nspawn.loopback_netns): all traffic stays on its loopback, nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import nspawn
from tests.support.gateway import Gateway, install_gateway, wait_for

NODE_NAME = "sd-node"
# Test-only tuning, the way a user tunes a unit (`systemctl edit edgeclaw`): a short watchdog and restart
# delay so a hang is detected and recovered within seconds.
TEST_DROPIN = """[Service]
WatchdogSec=4
RestartSec=1
"""


FIGURES: list[str] = []


def report(line: str) -> None:
    """A measured figure: printed now and again in the terminal summary (CI logs show it without -s)."""
    FIGURES.append(line)
    print(f"\n[systemd] {line}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("systemd tier: measured")
        for line in FIGURES:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/systemd/" in str(item.fspath):
            item.add_marker(pytest.mark.systemd)
            # the first test's setup builds the install layer and waits for the gateway (minutes on a
            # loaded 2-core box); the tier as a whole is bounded by scripts/test.sh
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def sd_ready() -> None:
    reason = nspawn.available()
    if reason:
        pytest.fail(f"the systemd tier cannot run here: {reason}")


@pytest.fixture(scope="session")
def installed(sd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Overlay lowers: [EdgeClaw install layer, cached bookworm rootfs]."""
    base = nspawn.rootfs()
    t0 = time.monotonic()
    layer = nspawn.install_layer(base, tmp_path_factory.mktemp("install"))
    report(f"EdgeClaw installed into the rootfs in {time.monotonic() - t0:.1f} s")
    return [layer, base]


@pytest.fixture(scope="session")
def sd_world(sd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A real gateway inside the loopback-only namespace this process has entered; it starts in the
    background (10-60 s) while the rootfs is installed."""
    gw_install = install_gateway()
    nspawn.wheelhouse()  # downloads (cached): must happen before we leave the host's network
    with nspawn.loopback_netns():
        world = World(Gateway(gw_install, tmp_path_factory.mktemp("gateway")))
        try:
            yield world
        finally:
            world.thread.join(GATEWAY_START_S + 10)
            world.gw.stop()


GATEWAY_START_S = 240.0


class World:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._start, name="gateway-start", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            took = self.gw.start(GATEWAY_START_S)
            report(f"gateway ready in {took:.1f} s")
        except BaseException as exc:  # reported by ready()
            self.errors.append(exc)

    def ready(self) -> Gateway:
        self.thread.join(GATEWAY_START_S + 10)
        if self.errors or self.thread.is_alive():
            raise RuntimeError(f"gateway did not start: {self.errors or 'timeout'}\n{self.gw.tail()}")
        return self.gw


def setup_code(gw: Gateway) -> str:
    doc = gw.call(
        "device.pair.setupCode",
        {"bootstrapProfile": "node", "publicUrl": gw.url, "includeQr": False, "joinUrl": True},
    )
    return str(doc["setupCode"])


class Node:
    """The edgeclaw.service inside a booted container, seen from the host."""

    def __init__(self, ct: nspawn.Container, gw: Gateway) -> None:
        self.ct = ct
        self.gw = gw
        self.node_id = ""

    def show(self) -> dict[str, str]:
        return self.ct.show(
            "edgeclaw",
            "MainPID",
            "NRestarts",
            "StatusText",
            "ActiveState",
            "SubState",
            "Result",
            "ExecMainStatus",
            "ExecMainCode",
        )

    def status_text(self) -> str:
        return self.show().get("StatusText", "")

    def wait_connected(self, timeout: float = 60.0, *, not_pid: str | None = None) -> dict[str, str]:
        def ok() -> dict[str, str] | None:
            s = self.show()
            good = s.get("ActiveState") == "active" and s.get("StatusText", "").startswith("connected to")
            if not_pid is not None and s.get("MainPID") in (not_pid, "0"):
                good = False
            return s if good else None

        return wait_for(ok, timeout, interval=0.1, what="edgeclaw.service active and connected")

    def journal(self) -> str:
        return self.ct.journal("edgeclaw")

    def config(self) -> str:
        return self.ct.exec(["cat", "/etc/edgeclaw/config.yaml"]).stdout

    def write_config(self, text: str) -> None:
        self.ct.write("/etc/edgeclaw/config.yaml", text, mode=0o644)


@pytest.fixture(scope="module")
def sd_node(sd_world: World, installed: list[Path]) -> Iterator[Node]:
    """Booted, `edgeclaw pair`ed with a setup code, `systemctl enable --now edgeclaw`, connected."""
    ct = nspawn.Container(installed)
    try:
        took = ct.boot()
        report(f"container booted to multi-user in {took:.2f} s")
        gw = sd_world.ready()
        ct.write("/root/setup-code", setup_code(gw) + "\n", mode=0o600)  # kept out of argv
        t0 = time.monotonic()
        out = ct.exec(
            [
                "edgeclaw",
                "pair",
                "--setup-code-file",
                "/root/setup-code",
                "--display-name",
                NODE_NAME,
                "--hardware",
                "simulated",
                "--wait",
                "60",
            ],
            timeout=90,
        )
        assert "paired and approved" in out.stdout, out.stdout
        assert ct.exec(["test", "-e", "/root/setup-code"], check=False).returncode == 1  # used: removed
        report(f"`edgeclaw pair` with a setup code: {time.monotonic() - t0:.1f} s")
        ct.write("/etc/systemd/system/edgeclaw.service.d/test.conf", TEST_DROPIN)
        ct.exec(["systemctl", "daemon-reload"])
        node = Node(ct, gw)
        node.node_id = json.loads(ct.exec(["edgeclaw", "identity", "--json"]).stdout)["deviceId"]
        t0 = time.monotonic()
        ct.exec(["systemctl", "enable", "--now", "edgeclaw"], timeout=60)
        node.wait_connected(60)
        report(f"systemctl enable --now -> connected: {time.monotonic() - t0:.2f} s")
        yield node
    except BaseException:
        print(ct.console())
        with contextlib.suppress(Exception):
            print(ct.journal()[-6000:])
        raise
    finally:
        ct.stop()
