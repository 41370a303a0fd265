"""The node's honest one-look state: kept current by the runner, written to the runtime directory for
`edgeclaw status`, and rendered as the one-line systemd STATUS=."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw.platform.atomicfile import write_atomic

log = logging.getLogger("edgeclaw.status")

STATUS_FILE = "status.json"


@dataclass
class NodeStatus:
    pid: int = field(default_factory=os.getpid)
    device_id: str = ""
    display_name: str = ""
    gateway_url: str = ""
    connection: str = "starting"  # starting|connecting|connected|pairing-wait|backoff|stopping|stopped|fatal
    since: float = field(default_factory=time.time)
    pairing: str = "unknown"  # unknown|device-pending|surface-pending|approved
    device_request_id: str | None = None
    surface_request_id: str | None = None
    last_error: str | None = None
    reconnects: int = 0
    attempt: int = 0
    next_retry_at: float | None = None
    invokes: int = 0
    last_invoke_at: float | None = None
    ticks: int = 0  # gateway ticks received (liveness: one every tickIntervalMs while connected)
    last_tick_at: float | None = None
    server_version: str | None = None
    protocol: int | None = None
    commands: list[str] = field(default_factory=list)
    withheld_commands: list[str] = field(default_factory=list)
    reload_error: str | None = None
    safe_mode: str | None = None  # why the node runs in crash-loop safe mode
    waiting_for: str | None = None  # a fatal error (credentials, protocol): what the node waits for
    # the state directory refused a write (full, read-only): what, and how to fix it
    state_error: str | None = None
    loop_lag_ms: dict[str, float] = field(default_factory=dict)  # last/p50/p99/max over recent samples
    # supervised long-lived tasks: restarts since start, and {path: {state, restarts, last_error}}
    task_restarts: int = 0
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # sections capabilities report about themselves (Capability.status_report), e.g. "triggers"
    capabilities: dict[str, Any] = field(default_factory=dict)
    updated: float = field(default_factory=time.time)

    def set_connection(self, state: str) -> None:
        if state != self.connection:
            self.connection = state
            self.since = time.time()

    def line(self) -> str:
        """The STATUS= line: what an operator needs first, no jargon."""
        now = time.time()
        prefix = f"reload failed: {self.reload_error} · " if self.reload_error else ""
        if self.safe_mode:
            prefix = f"SAFE MODE: {self.safe_mode} · " + prefix
        if self.waiting_for:
            return prefix + f"waiting: {self.waiting_for}"
        if self.state_error:
            prefix += f"{self.state_error} · "
        down = sorted(name for name, child in self.tasks.items() if child.get("state") == "backoff")
        if down:
            prefix += f"task down: {', '.join(down)} · "
        if self.connection == "connected":
            approval = {
                "approved": "approved",
                "surface-pending": f"commands awaiting approval: openclaw nodes approve {self.surface_request_id or '<id>'}",
            }.get(self.pairing, self.pairing)
            text = f"connected to {self.gateway_url} as {self.display_name} · {approval} · {self.invokes} invokes"
            if self.last_invoke_at:
                text += f", last {now - self.last_invoke_at:.0f} s ago"
            if self.withheld_commands:
                text += f" · gateway withholds {','.join(self.withheld_commands)}"
        elif self.connection == "pairing-wait":
            rid = self.device_request_id or "<id>"
            text = f"waiting for pairing approval: openclaw devices approve {rid}"
        elif self.connection == "backoff":
            wait = max(0.0, (self.next_retry_at or now) - now)
            text = f"gateway unreachable, retry in {wait:.0f} s (attempt {self.attempt})"
            if self.last_error:
                text += f": {self.last_error}"
        elif self.connection == "fatal":
            text = f"stopped: {self.last_error}"
        else:
            text = f"{self.connection} {self.gateway_url}"
        return prefix + text

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["status_line"] = self.line()
        return doc


class StatusFile:
    """Writes the status atomically, at most every `min_interval` seconds unless forced."""

    def __init__(self, runtime_dir: Path, min_interval: float = 2.0) -> None:
        self.path = runtime_dir / STATUS_FILE
        self.min_interval = min_interval
        self._last = 0.0
        self._disabled = False

    def write(self, status: NodeStatus, *, force: bool = False) -> None:
        if self._disabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        status.updated = time.time()
        try:
            # runtime state, rewritten every few seconds: atomic, but no fsync (it would block the loop)
            write_atomic(self.path, json.dumps(status.to_json(), indent=1) + "\n", mode=0o644, durable=False)
        except OSError as exc:
            log.warning(
                "cannot write %s (%s); `edgeclaw status` will read the state directory", self.path, exc
            )
            self._disabled = True

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def read_live_status(runtime_dir: Path) -> dict[str, Any] | None:
    """The running daemon's status, or None when there is no live daemon behind the file."""
    try:
        doc = json.loads((runtime_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = doc.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return doc
