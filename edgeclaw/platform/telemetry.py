"""Telemetry subscribers on the node's event bus: log lines, a Prometheus textfile-collector file
(atomically replaced) and an optional loopback-only /metrics endpoint.

The daemon creates one Telemetry, subscribes it and runs `run()` as a background task; `reload()`
applies a changed `telemetry:` section on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeclaw.platform import events
from edgeclaw.platform.metrics import LoopLag, Metrics, Snapshot

if TYPE_CHECKING:
    from edgeclaw.config import TelemetryConfig
    from edgeclaw.platform.events import EventBus
    from edgeclaw.platform.metrics_http import MetricsServer

log = logging.getLogger("edgeclaw.telemetry")

DEFAULT_TEXTFILE = "/var/lib/prometheus/node-exporter/edgeclaw.prom"  # Debian's node_exporter directory


def log_event(name: str, fields: dict[str, Any]) -> None:
    """Events nobody else logs, at a level that matches what an operator should do about them."""
    if name == events.INVOKE_STOP:
        ms = 1000 * float(fields.get("duration_s") or 0.0)
        outcome = fields.get("outcome")
        if outcome == "ok":
            log.debug("invoke %s %s ok in %.0f ms", fields.get("command"), fields.get("invoke_id"), ms)
        else:
            log.info(
                "invoke %s %s %s%s after %.0f ms",
                fields.get("command"),
                fields.get("invoke_id"),
                outcome,
                f" ({fields['code']})" if fields.get("code") else "",
                ms,
            )
    elif name == events.INVOKE_START:
        log.debug("invoke %s %s started", fields.get("command"), fields.get("invoke_id"))
    elif name == events.LOOP_LAG:
        log.warning(
            "the event loop stalled for %.1f s (CPU starved, swapping, or a blocking call)",
            float(fields.get("lag_s") or 0.0),
        )


def read_rss_bytes(path: str = "/proc/self/status") -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def write_textfile(path: Path, text: str) -> None:
    """Temp file + rename in the same directory, so node_exporter never reads half a file. The temp
    name does not end in .prom (node_exporter ignores it). No fsync: a lost sample after a power cut is
    harmless, an fsync every few seconds wears an SD card."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Telemetry:
    def __init__(
        self,
        config: TelemetryConfig,
        bus: EventBus,
        *,
        node_id: str,
        version: str,
        snapshot: Callable[[], dict[str, Any]],
        loop_lag: Callable[[], float] | None = None,
        loop_lag_samples: LoopLag | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics(node_id=node_id, version=version)
        self._snapshot = snapshot
        self._loop_lag = loop_lag
        self._loop_lag_samples = loop_lag_samples
        self._server: MetricsServer | None = None
        self._wake = asyncio.Event()
        self._textfile_problem: str | None = None
        self._unsubscribe = [bus.subscribe(self.metrics), bus.subscribe(log_event)]

    # rendering ------------------------------------------------------------------------------------
    def render(self) -> str:
        try:
            snap = self._snapshot()
        except Exception:
            log.exception("node snapshot failed")
            snap = {}
        return self.metrics.render(
            Snapshot(
                pairing=str(snap.get("pairing", "unknown")),
                invokes_in_flight=int(snap.get("invokes_in_flight", 0)),
                withheld_commands=len(snap.get("withheld_commands") or []),
                rss_bytes=read_rss_bytes(),
                loop_lag_s=self._loop_lag() if self._loop_lag is not None else None,
                loop_lag=self._loop_lag_samples,
                triggers=(snap.get("capability_reports") or {}).get("triggers"),
            )
        )

    @property
    def textfile(self) -> Path | None:
        return Path(self.config.textfile) if self.config.textfile else None

    def write_now(self) -> bool:
        """One textfile write; a problem is logged once (until it changes), and retried next time."""
        path = self.textfile
        if path is None:
            return False
        if not path.parent.is_dir():
            problem = f"directory {path.parent} does not exist"
            if problem != self._textfile_problem:
                level = logging.INFO if str(path) == DEFAULT_TEXTFILE else logging.WARNING
                log.log(
                    level,
                    "not writing Prometheus textfile %s: %s (is node_exporter's textfile collector "
                    "set up? set telemetry.textfile, or null to turn this off)",
                    path,
                    problem,
                )
            self._textfile_problem = problem
            return False
        try:
            write_textfile(path, self.render())
        except OSError as exc:
            problem = f"{exc.strerror or exc}"
            if problem != self._textfile_problem:
                log.warning(
                    "cannot write Prometheus textfile %s: %s (give the node's user write access to "
                    "%s, or change telemetry.textfile)",
                    path,
                    problem,
                    path.parent,
                )
            self._textfile_problem = problem
            return False
        if self._textfile_problem:
            log.info("writing Prometheus textfile %s again", path)
        self._textfile_problem = None
        return True

    # lifecycle ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve /metrics (if configured) and rewrite the textfile every interval until cancelled; the
        last write on the way out records the node as disconnected."""
        try:
            await self._start_server()
            while True:
                self.write_now()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(1.0, self.config.textfile_interval_s))
        except asyncio.CancelledError:
            # the node is stopping (after a crash the supervisor restarts this: keep the counters then)
            self.metrics.connected = 0
            with contextlib.suppress(Exception):
                self.write_now()
            for unsubscribe in self._unsubscribe:
                with contextlib.suppress(ValueError):
                    unsubscribe()
            raise
        finally:
            await self._stop_server()

    async def reload(self, config: TelemetryConfig) -> None:
        listen_changed = config.metrics_listen != self.config.metrics_listen
        old_path = self.textfile
        self.config = config
        self._textfile_problem = None
        if old_path is not None and old_path != self.textfile:
            with contextlib.suppress(OSError):
                old_path.unlink()
        if listen_changed:
            await self._stop_server()
            await self._start_server()
        self._wake.set()

    async def _start_server(self) -> None:
        if not self.config.metrics_listen:
            return
        from edgeclaw.platform.metrics_http import MetricsServer

        server = MetricsServer(self.config.metrics_listen, self.render)
        try:
            await server.start()
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", self.config.metrics_listen, exc.strerror or exc)
            return
        self._server = server

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
