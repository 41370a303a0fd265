"""Fixtures for tests against the real OpenClaw gateway (run inside a loopback-only netns by scripts/test.sh)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakemodel import FakeModel
from tests.support.gateway import Gateway, install_gateway, only_loopback, wait_for
from tests.support.node import NodeProcess

pytestmark = pytest.mark.gateway


@pytest.fixture(scope="session")
def gateway_install() -> Path:
    if not only_loopback() and not os.environ.get("EDGECLAW_ALLOW_NETWORK"):
        pytest.fail("gateway tests must run in a loopback-only network namespace: use scripts/test.sh")
    return install_gateway()


@pytest.fixture(scope="session")
def gateway_factory(gateway_install: Path) -> Iterator[Callable[..., Gateway]]:
    """Start extra gateways (own port and state) for tests that restart or reconfigure one."""
    started: list[Gateway] = []
    base = Path(tempfile.mkdtemp(prefix="edgeclaw-gw-"))

    def make(
        allow: list[str] | None = None,
        *,
        vision_model: bool = False,
        model: FakeModel | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> Gateway:
        """vision_model: an image-capable default model nothing answers for; model: a started
        tests.support.fakemodel.FakeModel as the agents' default model (answers, records requests);
        extra_config: gateway config merged over the test defaults."""
        gw = Gateway(
            gateway_install,
            base / f"gw{len(started)}",
            vision_model=vision_model,
            model=model,
            extra_config=extra_config or {},
        )
        if allow is not None:
            gw.allow = allow
        started.append(gw)
        gw.start()
        return gw

    yield make
    for gw in started:
        gw.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    """The shared gateway: custom and dangerous commands allow-listed, loopback pairing NOT automatic."""
    return gateway_factory()


def setup_code(gateway: Gateway) -> str:
    doc = gateway.call(
        "device.pair.setupCode",
        {"bootstrapProfile": "node", "publicUrl": gateway.url, "includeQr": False, "joinUrl": True},
    )
    return str(doc["setupCode"])


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start EdgeClaw daemons on a simulated board; `paired=True` pairs them with a setup code (the
    gateway auto-approves device and surface), so capability tests start from a serving node."""
    nodes: list[NodeProcess] = []

    def make(
        gateway: Gateway,
        *,
        name: str = "test-node",
        extra: dict[str, Any] | None = None,
        paired: bool = True,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        node = NodeProcess(tmp_path / f"{name}-{len(nodes)}", gateway, name=name, extra=extra)
        if paired:
            code_file = node.base / "setup-code"
            code_file.write_text(setup_code(gateway))
            code_file.chmod(0o600)
            node.config["gateway"]["setup_code_file"] = str(code_file)
            node.write_config()
        nodes.append(node)
        node.start(env=env)
        if paired:
            wait_for(
                lambda: node.live_status().get("pairing") == "approved" or node._dead(),
                60,
                what="paired node",
            )
            if node._dead():
                raise AssertionError(f"node exited:\n{node.log()[-3000:]}")
        return node

    yield make
    for node in nodes:
        node.stop()
