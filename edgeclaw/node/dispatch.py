"""node.invoke.request → the capability's handler, each in its own task, with deadlines, cancellation,
a global and per-capability concurrency limit with bounded queues, and a coded result for every failure.

A handler still running at its deadline plus DEADLINE_GRACE_S is cancelled and answered `TIMEOUT`
(the code the gateway itself gives its caller), so an overrun ends instead of holding hardware until the
watchdog kills the whole node; only a handler that ignores that cancel shows up in oldest_overdue()."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from edgeclaw.capabilities.base import Capability, Handler, InvokeContext, InvokeError
from edgeclaw.node.recentids import RecentIds
from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus

log = logging.getLogger("edgeclaw.dispatch")

ResultSender = Callable[[dict[str, Any]], Awaitable[None]]
DEFAULT_TIMEOUT_MS = 30_000
AFTER_REPLY_BUDGET_S = 15.0  # events after an answer (each waits at most a few seconds for its ack)
# Handlers see ctx.deadline and should answer by then; this is the slack before the dispatcher cancels.
DEADLINE_GRACE_S = 1.0
ENVELOPE_BYTES = 4096  # frame around payloadJSON: type/id/method/params/id/nodeId/ok


class _Limiter:
    """A semaphore whose waiting line is bounded, so a flood gets a busy error instead of piling up."""

    def __init__(self, limit: int, queue: int) -> None:
        self.sem = asyncio.Semaphore(limit)
        self.limit = limit
        self.queue = queue
        self.waiting = 0
        self.running = 0

    def full(self) -> bool:
        return self.running >= self.limit and self.waiting >= self.queue

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self.sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    async def __aexit__(self, *exc: object) -> None:
        self.running -= 1
        self.sem.release()


class Dispatcher:
    def __init__(
        self,
        *,
        node_id: str,
        bus: EventBus,
        send_result: ResultSender,
        max_payload: Callable[[], int],
        max_concurrent: int = 16,
        queue: int = 64,
    ) -> None:
        self.node_id = node_id
        self.bus = bus
        self._send_result = send_result
        self._max_payload = max_payload
        self._global = _Limiter(max_concurrent, queue)
        self._handlers: dict[str, tuple[Handler, Capability]] = {}
        self._cap_limits: dict[str, _Limiter] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._seen = RecentIds(4096)
        self.accepting = True
        self.invoke_count = 0
        self.last_invoke_at: float | None = None

    def set_capabilities(self, capabilities: list[Capability]) -> None:
        handlers: dict[str, tuple[Handler, Capability]] = {}
        for cap in capabilities:
            for command, handler in cap.handlers().items():
                handlers[command] = (handler, cap)
            name = cap.manifest.name
            if name not in self._cap_limits or self._cap_limits[name].limit != cap.max_concurrency:
                self._cap_limits[name] = _Limiter(cap.max_concurrency, cap.queue_limit)
        self._handlers = handlers

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def oldest_overdue(self, now: float, grace: float) -> str | None:
        """An invoke still running `grace` seconds after it was cancelled at its deadline: the
        cancel did not take, the watchdog's sign of a wedged handler."""
        for invoke_id, task in self._tasks.items():
            deadline = getattr(task, "edgeclaw_deadline", None)
            if deadline is not None and now > deadline + DEADLINE_GRACE_S + grace:
                return invoke_id
        return None

    # entry points from the session ----------------------------------------------------------------
    def on_invoke_request(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or not payload["id"]:
            log.warning("ignoring node.invoke.request without an id")
            return
        invoke_id: str = payload["id"]
        if not self._seen.add(invoke_id):
            log.info("ignoring repeated node.invoke.request %s", invoke_id)
            return
        command = payload.get("command")
        timeout_ms = payload.get("timeoutMs")
        budget_ms = (
            int(timeout_ms) if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else DEFAULT_TIMEOUT_MS
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_ms / 1000
        task = loop.create_task(
            self._run(invoke_id, command, payload, deadline, budget_ms), name=f"invoke:{invoke_id}"
        )
        task.edgeclaw_deadline = deadline  # type: ignore[attr-defined]
        self._tasks[invoke_id] = task
        task.add_done_callback(lambda _t, i=invoke_id: self._tasks.pop(i, None))  # type: ignore[misc]

    def on_invoke_cancel(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        invoke_id = payload.get("invokeId") or payload.get("id")
        task = self._tasks.get(invoke_id) if isinstance(invoke_id, str) else None
        if task is not None:
            log.info("invoke %s cancelled by the gateway", invoke_id)
            task.edgeclaw_cancelled_by_gateway = True  # type: ignore[attr-defined]
            task.cancel()

    async def drain(self, timeout: float) -> int:
        """Stop taking invokes and let running ones finish (their results are sent); returns how many were cut."""
        self.accepting = False
        pending = list(self._tasks.values())
        if not pending:
            return 0
        _done, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=2.0)
        return len(still)

    async def invoke_local(self, command: str, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """One of the node's own commands for the node itself (a trigger's snap or pin read): the same
        handler, limits and deadline as a gateway invoke, every failure a coded InvokeError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        after_reply: list[Callable[[], Awaitable[None]]] = []
        timer = asyncio.timeout_at(deadline + DEADLINE_GRACE_S)
        invoke_id = f"local-{self.invoke_count + 1}-{id(after_reply):x}"
        try:
            async with timer:
                body = await self._execute(
                    invoke_id, command, {"params": params}, deadline, int(timeout * 1000), after_reply
                )
        except TimeoutError:
            if not timer.expired():
                raise InvokeError("INTERNAL_ERROR", f"{command} raised TimeoutError") from None
            raise InvokeError("TIMEOUT", f"{command} did not finish within {timeout:g} s") from None
        except InvokeError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("local invoke of %s failed", command)
            raise InvokeError("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}") from None
        for hook in after_reply:  # events about the invoke (a snap's media event) still go out
            try:
                await hook()
            except Exception as exc:
                log.debug("after-reply step of local %s failed: %s", command, exc)
        return body

    # one invoke -----------------------------------------------------------------------------------
    async def _run(
        self, invoke_id: str, command: Any, payload: dict[str, Any], deadline: float, budget_ms: int
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        name = command if isinstance(command, str) else "?"
        self.invoke_count += 1
        self.last_invoke_at = loop.time()
        # bookkeeping (metrics, telemetry, status) runs on the next loop turn, in order, so that it is
        # not between the gateway's request and the node's answer
        loop.call_soon(partial(self.bus.emit, events.INVOKE_START, command=name, invoke_id=invoke_id))
        outcome, code = "ok", None
        result: dict[str, Any]
        after_reply: list[Callable[[], Awaitable[None]]] = []
        timer = asyncio.timeout_at(deadline + DEADLINE_GRACE_S)
        try:
            try:
                async with timer:
                    body = await self._execute(invoke_id, command, payload, deadline, budget_ms, after_reply)
            except TimeoutError:
                if not timer.expired():
                    raise  # the handler's own TimeoutError: an internal error like any other
                log.warning(
                    "invoke %s (%s) overran its %d ms deadline: cancelled", invoke_id, name, budget_ms
                )
                raise InvokeError(
                    "TIMEOUT", f"{name} did not finish within its {budget_ms} ms deadline; it was cancelled"
                ) from None
            result = {"ok": True, "payloadJSON": self._encode_payload(body)}
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and getattr(task, "edgeclaw_cancelled_by_gateway", False):
                self.bus.emit(
                    events.INVOKE_STOP,
                    command=name,
                    invoke_id=invoke_id,
                    duration_s=loop.time() - started,
                    outcome="cancelled",
                    code=None,
                )
                return  # the gateway already gave up: it wants nothing back
            outcome, code = "error", "CANCELLED"
            result = {"ok": False, "error": {"code": "CANCELLED", "message": "the node is shutting down"}}
        except InvokeError as exc:
            outcome, code = "error", exc.code
            result = {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:
            log.exception("handler for %s failed", name)
            self.bus.emit(events.INVOKE_EXCEPTION, command=name, invoke_id=invoke_id, error=repr(exc))
            outcome, code = "error", "INTERNAL_ERROR"
            result = {
                "ok": False,
                "error": {"code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"},
            }
        loop.call_soon(
            partial(
                self.bus.emit,
                events.INVOKE_STOP,
                command=name,
                invoke_id=invoke_id,
                duration_s=loop.time() - started,
                outcome=outcome,
                code=code,
            )
        )
        params = {"id": invoke_id, "nodeId": self.node_id, **result}
        try:
            await self._send_result(params)
        except Exception as exc:
            log.warning("could not deliver the result of %s (%s): %s", name, invoke_id, exc)
        task = asyncio.current_task()
        if after_reply and task is not None:  # answered: the watchdog's clock is now the events' own
            task.edgeclaw_deadline = loop.time() + AFTER_REPLY_BUDGET_S  # type: ignore[attr-defined]
        for hook in after_reply:
            try:
                await hook()
            except Exception as exc:
                log.warning("after-reply step of %s (%s) failed: %s", name, invoke_id, exc)

    def _encode_payload(self, body: dict[str, Any]) -> str:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        limit = self._max_payload() - ENVELOPE_BYTES
        if len(text.encode("utf-8")) > limit:
            raise InvokeError(
                "PAYLOAD_TOO_LARGE",
                f"result is {len(text)} bytes; the gateway accepts at most {limit} in one frame",
            )
        return text

    async def _execute(
        self,
        invoke_id: str,
        command: Any,
        payload: dict[str, Any],
        deadline: float,
        budget_ms: int,
        after_reply: list[Callable[[], Awaitable[None]]],
    ) -> dict[str, Any]:
        if not self.accepting:
            raise InvokeError("UNAVAILABLE", "the node is shutting down")
        if not isinstance(command, str) or not command:
            raise InvokeError("INVALID_REQUEST", "node.invoke.request without a command")
        entry = self._handlers.get(command)
        if entry is None:
            raise InvokeError("UNKNOWN_COMMAND", f"this node does not implement {command!r}")
        handler, capability = entry
        params = _parse_params(payload.get("paramsJSON"), payload.get("params"))
        loop = asyncio.get_running_loop()
        session_key = payload.get("sessionKey")
        ctx = InvokeContext(
            invoke_id=invoke_id,
            command=command,
            params=params,
            deadline=deadline,
            timeout_ms=budget_ms,
            session_key=session_key if isinstance(session_key, str) else None,
            idempotency_key=payload.get("idempotencyKey")
            if isinstance(payload.get("idempotencyKey"), str)
            else None,
            max_payload_bytes=self._max_payload() - ENVELOPE_BYTES,
            after_reply=after_reply,
        )
        cap_limit = (
            _Limiter(1, 0)
            if command in getattr(capability, "unlimited_commands", ())  # quick bookkeeping commands
            else self._cap_limits[capability.manifest.name]
        )
        if self._global.full():
            raise InvokeError("NODE_BUSY", "too many invokes are running or queued on this node")
        if cap_limit.full():
            raise InvokeError(capability.busy_code, f"{capability.manifest.name} is busy; try again shortly")
        # capability slot first: invokes queued behind a busy capability must not hold global slots
        async with cap_limit, self._global:
            remaining = ctx.deadline - loop.time()
            if remaining <= 0:
                raise InvokeError("TIMEOUT", "the invoke deadline passed while it waited in the queue")
            result = await handler(ctx)
        if not isinstance(result, dict):
            raise InvokeError("INTERNAL_ERROR", f"{command} returned {type(result).__name__}, not an object")
        return result


def _parse_params(params_json: Any, params_obj: Any) -> dict[str, Any]:
    if params_json is None:
        if isinstance(params_obj, dict):
            return params_obj
        return {}
    if not isinstance(params_json, str):
        raise InvokeError("INVALID_REQUEST", "paramsJSON must be a JSON string")
    try:
        value = json.loads(params_json) if params_json.strip() else {}
    except ValueError as exc:
        raise InvokeError("INVALID_REQUEST", f"paramsJSON is not valid JSON: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvokeError("INVALID_REQUEST", f"params must be an object, got {type(value).__name__}")
    return value
