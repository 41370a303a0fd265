"""Run the real Daemon (signals, capabilities, runner) in the test's own event loop against a FakeGateway,
with GPIO on gpiozero's MockFactory: what `edgeclaw run` does, minus the process boundary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.config import load_config
from edgeclaw.node.daemon import Daemon

RELAY: dict[str, Any] = {"pin": "GPIO17", "kind": "output", "safe_state": 0}


def write_config(tmp: Path, url: str, **sections: Any) -> Path:
    """A config file on disk (reload re-reads it); `sections` are merged over the defaults."""
    tmp.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "token"
    if not token_file.exists():
        token_file.write_text("fake-token-123456\n")
    doc: dict[str, Any] = {
        "gateway": {
            "url": url,
            "token_file": str(token_file),
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "connect_timeout_s": 2,
        },
        "node": {
            "display_name": "life-node",
            "state_dir": str(tmp / "state"),
            "runtime_dir": str(tmp / "run"),
            "hardware": "simulated",
        },
        "telemetry": {"textfile": None},
        "gpio": {"enabled": True, "pins": {"relay": RELAY}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_daemon(config_path: Path) -> AsyncIterator[tuple[Daemon, asyncio.Task[int]]]:
    """The daemon's main() as a task; on exit it is stopped as by SIGTERM (bounded) if still running."""
    daemon = Daemon(load_config(str(config_path)), str(config_path))
    task = asyncio.get_running_loop().create_task(daemon.main())
    try:
        # signal handlers are installed before the runner starts: only then may a test send one
        await wait_until(lambda: daemon.runner is not None and daemon.runner.is_connected(), 10, "daemon up")
        yield daemon, task
    finally:
        if not task.done():
            daemon._on_stop_signal()  # what SIGTERM does, without risking a signal to pytest itself
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 30)
        if not task.done():
            task.cancel()
