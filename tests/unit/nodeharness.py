"""Run the real NodeRunner in-process against a FakeGateway (for fault tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.capabilities.base import Capability
from edgeclaw.capabilities.system import SystemCapability
from edgeclaw.config import parse_config
from edgeclaw.node.runner import NodeRunner
from edgeclaw.platform.state import StateDir
from tests.support.fakegateway import FakeGateway


def make_config(tmp: Path, url: str, **overrides: Any) -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "token"
    token_file.write_text("fake-token-123456\n")
    doc: dict[str, Any] = {
        "gateway": {
            "url": url,
            "token_file": str(token_file),
            "pairing_retry_s": 1,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "connect_timeout_s": 2,
        },
        "node": {
            "display_name": "fault-node",
            "state_dir": str(tmp / "state"),
            "runtime_dir": str(tmp / "run"),
            "hardware": "simulated",
        },
    }
    for section, values in overrides.items():
        doc.setdefault(section, {}).update(values)
    return parse_config(yaml.safe_dump(doc), file=str(tmp / "config.yaml"))


@contextlib.asynccontextmanager
async def running_node(
    tmp: Path,
    gw: FakeGateway,
    *,
    extra_caps: list[Capability] | None = None,
    started_caps: Callable[[NodeRunner], list[Capability]] | None = None,
    **overrides: Any,
) -> AsyncIterator[NodeRunner]:
    """`started_caps` builds capabilities that use the runner as their services and need start()."""
    config = make_config(tmp, gw.url, **overrides)
    state = StateDir(config.state_dir)
    runner = NodeRunner(config, state.load_or_create_identity(), state)
    owned = started_caps(runner) if started_caps else []
    for cap in owned:
        await cap.start()
    runner.set_capabilities(
        [SystemCapability(config.capabilities["system"], runner), *(extra_caps or []), *owned]
    )
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        yield runner
    finally:
        for cap in owned:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cap.stop(), 5)
        runner.stop()
        session = runner.session
        if session is not None:
            session.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        if not task.done():
            task.cancel()
