"""`edgeclaw.doctor`: `edgeclaw doctor --json` run as a bounded subprocess of the node, its checks
returned as JSON. A subprocess, not in-process: the doctor probes the gateway with its own event loop
(asyncio.run) and reads a lot of files; in the daemon's loop that would stall invokes and the watchdog."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.platform import procgroup
from edgeclaw.platform.redact import Redactor

KILL_GRACE_S = 2.0
MAX_OUTPUT = 256 * 1024
# the child must not talk to systemd as if it were the unit's main process
_SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def doctor_argv(config_path: str) -> list[str]:
    return [sys.executable, "-m", "edgeclaw", "--config", config_path, "doctor", "--json"]


async def run_doctor(config_path: str, timeout: float, redactor: Redactor) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    try:
        code, out, err = await procgroup.communicate(
            doctor_argv(config_path), timeout=timeout, grace=KILL_GRACE_S, env=env
        )
    except TimeoutError:
        raise InvokeError("DOCTOR_TIMEOUT", f"edgeclaw doctor did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise InvokeError("DOCTOR_FAILED", f"edgeclaw doctor cannot start: {exc.strerror or exc}") from None
    try:
        doc = json.loads(out[:MAX_OUTPUT])
        raw_checks = doc["checks"]
        assert isinstance(raw_checks, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        tail = redactor.redact(err.decode("utf-8", "replace")[-500:])
        raise InvokeError(
            "DOCTOR_FAILED", f"edgeclaw doctor exited {code} without a report: {tail}"
        ) from None
    checks = []
    for c in raw_checks:
        if not isinstance(c, dict):
            continue
        checks.append(
            {
                "id": str(c.get("id", "")),
                "name": redactor.redact(str(c.get("title", c.get("id", "")))),
                "status": str(c.get("status", "fail")),  # pass | warn | fail, as `edgeclaw doctor --json`
                "detail": redactor.redact(str(c.get("detail", ""))),
                "fix": redactor.redact(str(c["fix"])) if c.get("fix") else None,
            }
        )
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in ("pass", "warn", "fail")}
    return {"ok": counts["fail"] == 0, "counts": counts, "checks": checks}
