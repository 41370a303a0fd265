"""Waiting instead of exiting: a failure no restart can fix (a refused credential, no common protocol, a
broken config) used to end the process with 77/76/78; with Restart= and StartLimitBurst= that could leave
a board down for good. Under systemd the node now stays up, says what it waits for, and tries again when
the config or token file changes, on SIGHUP, or after a long backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable

from edgeclaw.config import Config, load_config, resolve_config_path
from edgeclaw.platform.systemd import Notifier, watchdog_interval
from edgeclaw.typedconfig import ConfigError

log = logging.getLogger("edgeclaw.daemon")

FILE_POLL_S = 2.0
RETRY_BACKOFF_S = (300.0, 600.0, 1800.0, 3600.0)  # a refused credential asked again, at most hourly


def retry_delay(attempt: int) -> float:
    return RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]


def _stamp(paths: Iterable[str | None]) -> tuple[tuple[str, float, int], ...]:
    out = []
    for path in paths:
        if not path:
            continue
        try:
            st = os.stat(path)
            out.append((path, st.st_mtime, st.st_size))
        except OSError:
            out.append((path, -1.0, -1))
    return tuple(out)


def watched_files(config_path: str | None, config: Config | None) -> list[str | None]:
    files: list[str | None] = [resolve_config_path(config_path)]
    if config is not None:
        files += [config.gateway.token_file, config.gateway.setup_code_file]
    return files


async def wait_for_change(
    files: list[str | None],
    wake: asyncio.Event,
    timeout: float,
    tick: Callable[[], None] | None = None,
) -> str:
    """Until one of `files` changes, `wake` is set (SIGHUP, stop) or `timeout` passes; says which.
    `tick` runs every poll (the watchdog ping of a process with nothing else to do)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    before = _stamp(files)
    while True:
        if wake.is_set():
            wake.clear()
            return "signal"
        if _stamp(files) != before:
            return "file changed"
        if tick is not None:
            tick()
        left = deadline - loop.time()
        if left <= 0:
            return "backoff elapsed"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), min(FILE_POLL_S, left))


async def wait_for_valid_config(config_path: str | None, first: ConfigError) -> Config | None:
    """At start under systemd, an invalid config: READY=1 with STATUS= saying what is wrong, then wait
    for a fix (file change or SIGHUP); None when stopped (SIGTERM/SIGINT) meanwhile."""
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    stop = asyncio.Event()

    def on_stop() -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, wake.set)
    error = first
    notifier.ready(f"waiting for a valid config: {error}")
    try:
        while True:
            # still alive and waiting on purpose: WatchdogSec= must not kill and restart it
            tick = notifier.watchdog if watchdog_interval() else None
            await wait_for_change(watched_files(config_path, None), wake, 3600.0, tick)
            if stop.is_set():
                return None
            notifier.reloading()
            try:
                config = load_config(config_path)
            except ConfigError as exc:
                if str(exc) != str(error):
                    log.error("%s", exc)
                error = exc
                notifier.ready(f"waiting for a valid config: {error}")
                continue
            log.info("the config is valid now; starting")
            notifier.ready("config valid; starting")
            return config
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
