"""A tiny synchronous telemetry bus: the node emits facts, subscribers (logs, metrics, status,
watchdog) turn them into whatever they need, so instrumentation stays out of the logic."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edgeclaw.events")

Subscriber = Callable[[str, dict[str, Any]], None]

# Event names: one table in the README documents each and its fields.
CONNECT = "connect"  # url, attempt
HELLO_OK = "hello_ok"  # server_version, protocol, tick_interval_ms, elapsed_s
DISCONNECT = "disconnect"  # code, reason, connected_s
PAIRING = "pairing"  # stage: device-pending|surface-pending|approved, request_id
INVOKE_START = "invoke_start"  # command, invoke_id
INVOKE_STOP = "invoke_stop"  # command, invoke_id, duration_s, outcome (ok|error|cancelled), code
INVOKE_EXCEPTION = "invoke_exception"  # command, invoke_id, error
STATE = "state"  # state, detail
LOOP_LAG = "loop_lag"  # lag_s
CHILD_DOWN = "child_down"  # child (supervisor/name), error, restart_in_s (None: the supervisor gave up)
CHILD_RESTART = "child_restart"  # child (supervisor/name), error
GPIO_EDGE = (
    "gpio_edge"  # pin_name, pin, kind, active, state, value, ts, seq, description (debounced input edge)
)
TRIGGER = "trigger"  # trigger, outcome (fired|suppressed|sent|dropped|scheduled|reading|watching), reason


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, name: str, **fields: Any) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(name, fields)
            except Exception:
                log.exception("telemetry subscriber failed on %s", name)
