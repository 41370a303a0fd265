"""One supervision primitive for every long-lived task: the asyncio equivalent of an OTP supervisor.

Why: a bare `create_task` loop that raises dies silently and the node looks healthy while a part of it
is gone for good (a spool pump killed by one bad entry delivered nothing more, and nobody knew). Here a
named child that ends is logged with its exception, counted, and restarted on its own (one-for-one)
after an exponential backoff. A child that keeps failing — more than `intensity` restarts within
`period_s` — is not retried forever: its supervisor gives up and escalates to its parent, which restarts
that whole subtree; the root escalates by asking the process to exit with EX_SOFTWARE (70), which the
systemd unit restarts (see README, "Exit statuses").

Short-lived tasks (one per invoke, one per connection) are not children: `spawn()` only keeps a
reference, logs their failure with the traceback, and cancels them on stop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edgeclaw.platform import events
from edgeclaw.platform.events import EventBus

log = logging.getLogger("edgeclaw.supervisor")

EX_SOFTWARE = 70  # the root supervisor gave up: systemd restarts the process (Restart=on-failure)
STABLE_S = 10.0  # a child that ran this long before failing starts its backoff from the beginning


class Restart(enum.Enum):
    PERMANENT = "permanent"  # restarted whenever it ends: a loop that must always run
    TRANSIENT = "transient"  # restarted only when it fails: a job that may finish


class Escalated(Exception):
    """The supervisor gave up (restart intensity exceeded, or a child raised a fatal error)."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


@dataclass
class Child:
    """A named long-lived task and what happened to it (shown in `edgeclaw status`)."""

    name: str
    factory: Callable[[], Awaitable[Any]]
    restart: Restart
    critical: bool  # counts toward the restart intensity and health(); False: retried forever, quietly
    state: str = "running"  # running | backoff | done | stopped
    restarts: int = 0
    last_error: str | None = None
    failures_in_row: int = 0
    started_at: float = 0.0
    retry_at: float | None = None
    task: asyncio.Task[Any] | None = None
    timer: asyncio.TimerHandle | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Named children, one-for-one restarts with backoff, an intensity limit, escalation upwards."""

    def __init__(
        self,
        name: str = "root",
        *,
        intensity: int = 5,
        period_s: float = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        bus: EventBus | None = None,
        fatal: tuple[type[BaseException], ...] = (),
        parent: Supervisor | None = None,
    ) -> None:
        self.name = name
        self.intensity = intensity
        self.period_s = period_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.bus: EventBus | None = bus if bus is not None else (parent.bus if parent is not None else None)
        self.fatal: tuple[type[BaseException], ...] = fatal or (parent.fatal if parent is not None else ())
        self.parent = parent
        self.children: dict[str, Child] = {}
        self.subs: dict[str, Supervisor] = {}
        self.restarts_total = 0
        self._history: deque[float] = deque()
        self._short: set[asyncio.Task[Any]] = set()
        self._escalation: asyncio.Future[Escalated] | None = None
        self._stopped = False

    # children -------------------------------------------------------------------------------------
    def start_child(
        self,
        name: str,
        factory: Callable[[], Awaitable[Any]],
        *,
        restart: Restart = Restart.PERMANENT,
        critical: bool = True,
        retrying: str | None = None,
    ) -> Child:
        """Start (or keep) the child called `name`: idempotent while it runs or waits to restart.
        `retrying`: the first try already failed elsewhere (with this error): begin with a backoff."""
        child = self.children.get(name)
        if child is not None and child.state in ("running", "backoff"):
            return child
        child = Child(name=name, factory=factory, restart=restart, critical=critical)
        self.children[name] = child
        if retrying is None:
            self._launch(child)
        else:
            child.last_error = retrying
            child.failures_in_row = 1
            child.state = "backoff"
            delay = self._backoff(1)
            child.retry_at = time.monotonic() + delay
            child.timer = asyncio.get_running_loop().call_later(delay, self._restart, child)
        return child

    def is_active(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.state in ("running", "backoff")

    def cancel_child(self, name: str) -> None:
        """Stop a child without waiting (from synchronous code); it is not restarted."""
        child = self.children.pop(name, None)
        if child is not None:
            self._halt(child)

    async def stop_child(self, name: str, timeout: float = 5.0) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            task = self._halt(child)
            if task is not None:
                await asyncio.wait({task}, timeout=timeout)

    async def join(self, name: str) -> None:
        """Wait until the child ends for good (a transient child's normal return); raises Escalated if
        this supervisor gives up first."""
        child = self.children[name]
        waiter: asyncio.Future[Any] = asyncio.ensure_future(child.finished.wait())
        escalation = self._escalation_future()
        either: set[asyncio.Future[Any]] = {waiter, escalation}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if escalation.done() and not child.finished.is_set():
            raise escalation.result()

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A short-lived task (not restarted): kept referenced, its failure logged, cancelled on stop."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._short.add(task)
        task.add_done_callback(self._short_done)
        return task

    def child_supervisor(self, name: str, **kwargs: Any) -> Supervisor:
        """A nested supervisor (e.g. one per capability): when it gives up, this one restarts it."""
        old = self.subs.pop(name, None)
        if old is not None:
            old._halt_all()
        sub = Supervisor(f"{self.name}/{name}", parent=self, **kwargs)
        self.subs[name] = sub
        return sub

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel every child, nested supervisor and short task, and wait (bounded) for them."""
        self._stopped = True
        tasks = self._halt_all()
        if self.parent is not None:
            short = self.name.rsplit("/", 1)[-1]
            if self.parent.subs.get(short) is self:
                del self.parent.subs[short]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def reset_escalation(self) -> None:
        """The root's owner handled an escalation (a fatal error it waits out): the next one counts anew."""
        root = self.root
        if root._escalation is not None and root._escalation.done():
            root._escalation = None

    def cancel_all(self) -> None:
        """Cancel everything without waiting (the process is about to exit)."""
        self._stopped = True
        self._halt_all()

    # state for health, status and telemetry -------------------------------------------------------
    def health(self, now: float | None = None) -> str | None:
        """Why not healthy: a critical child down or waiting to restart (None when all run)."""
        for child in self.children.values():
            if child.critical and child.state == "backoff":
                return f"{self.name}/{child.name} is down ({child.last_error}); restart pending"
        for sub in self.subs.values():
            reason = sub.health(now)
            if reason is not None:
                return reason
        return None

    def snapshot(self) -> dict[str, Any]:
        """Every child (nested ones by their path) with its state and restart count."""
        out: dict[str, Any] = {}
        for child in self.children.values():
            out[f"{self.name}/{child.name}"] = {
                "state": child.state,
                "restarts": child.restarts,
                "last_error": child.last_error,
            }
        for sub in self.subs.values():
            out.update(sub.snapshot())
        return out

    def total_restarts(self) -> int:
        return self.restarts_total + sum(sub.total_restarts() for sub in self.subs.values())

    # internals ------------------------------------------------------------------------------------
    def _launch(self, child: Child) -> None:
        child.state = "running"
        child.timer = None
        child.retry_at = None
        child.started_at = time.monotonic()
        child.task = asyncio.get_running_loop().create_task(self._run(child), name=child.name)

    async def _run(self, child: Child) -> None:
        try:
            await child.factory()
        except asyncio.CancelledError:
            raise
        except self.fatal as exc:
            child.state = "done"  # not `finished`: join() raises the escalation
            self._escalate(f"{child.name}: {exc}", exc)
        except Exception as exc:
            self._ended(child, exc)
        else:
            self._ended(child, None)

    def _ended(self, child: Child, exc: BaseException | None) -> None:
        if self.children.get(child.name) is not child or self._stopped:
            return
        if exc is None and child.restart is Restart.TRANSIENT:
            child.state = "done"
            child.finished.set()
            return
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "returned (permanent child)"
        child.last_error = why
        if time.monotonic() - child.started_at >= STABLE_S:
            child.failures_in_row = 0
        child.failures_in_row += 1
        if child.critical and self._too_many_restarts():
            log.error(
                "%s/%s failed: %s; more than %d restarts in %.0f s: giving up",
                self.name,
                child.name,
                why,
                self.intensity,
                self.period_s,
                exc_info=exc,
            )
            child.state = "backoff"
            self._emit(events.CHILD_DOWN, child=f"{self.name}/{child.name}", error=why, restart_in_s=None)
            self._escalate(f"{child.name} failed {self.intensity + 1} times in {self.period_s:.0f} s", exc)
            return
        delay = self._backoff(child.failures_in_row)
        log.error(
            "%s/%s failed: %s; restart #%d in %.1f s",
            self.name,
            child.name,
            why,
            child.restarts + 1,
            delay,
            exc_info=exc,
        )
        child.state = "backoff"
        child.retry_at = time.monotonic() + delay
        self._emit(events.CHILD_DOWN, child=f"{self.name}/{child.name}", error=why, restart_in_s=delay)
        child.timer = asyncio.get_running_loop().call_later(delay, self._restart, child)

    def _restart(self, child: Child) -> None:
        if self.children.get(child.name) is not child or self._stopped:
            return
        child.restarts += 1
        self.restarts_total += 1
        self._launch(child)
        self._emit(events.CHILD_RESTART, child=f"{self.name}/{child.name}", error=child.last_error)

    def _too_many_restarts(self) -> bool:
        now = time.monotonic()
        self._history.append(now)
        while self._history and now - self._history[0] > self.period_s:
            self._history.popleft()
        return len(self._history) > self.intensity

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, failures - 1)))
        return base * random.uniform(0.8, 1.2)

    def _escalate(self, reason: str, cause: BaseException | None) -> None:
        if self.parent is None or (cause is not None and isinstance(cause, self.fatal)):
            if self.parent is not None:
                self.parent._escalate(reason, cause)  # fatal errors go straight to the top
                return
            future = self._escalation_future()
            if not future.done():
                log.error("supervisor %s gives up: %s", self.name, reason)
                future.set_result(Escalated(reason, cause))
            return
        self._halt_all()
        self._history.clear()
        for child in self.children.values():
            if child.state == "stopped":
                child.state = "backoff"  # down until the parent restarts this subtree
        self.parent._sub_failed(self, reason, cause)

    def _sub_failed(self, sub: Supervisor, reason: str, cause: BaseException | None) -> None:
        """A nested supervisor gave up: it counts as one restart here; restart its whole subtree."""
        name = sub.name.rsplit("/", 1)[-1]
        if self.subs.get(name) is not sub or self._stopped:
            return
        if self._too_many_restarts():
            self._escalate(f"{name}: {reason}", cause)
            return
        self.restarts_total += 1
        delay = self._backoff(1)
        log.error("supervisor %s gave up (%s); restarting it in %.1f s", sub.name, reason, delay)
        asyncio.get_running_loop().call_later(delay, sub._restart_all)

    def _restart_all(self) -> None:
        if self._stopped:
            return
        for child in list(self.children.values()):
            if child.state != "done":
                child.restarts += 1
                self.restarts_total += 1
                self._launch(child)
                self._emit(events.CHILD_RESTART, child=f"{self.name}/{child.name}", error=child.last_error)

    def _halt(self, child: Child) -> asyncio.Task[Any] | None:
        if child.timer is not None:
            child.timer.cancel()
        child.state = "stopped"
        task = child.task
        if task is not None and not task.done():
            task.cancel()
            return task
        return None

    def _halt_all(self) -> set[asyncio.Task[Any]]:
        tasks: set[asyncio.Task[Any]] = set()
        for child in self.children.values():
            task = self._halt(child)
            if task is not None:
                tasks.add(task)
        for sub in list(self.subs.values()):
            tasks |= sub._halt_all()
        for task in list(self._short):
            task.cancel()
            tasks.add(task)
        return tasks

    def _short_done(self, task: asyncio.Task[Any]) -> None:
        self._short.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s/%s failed: %r", self.name, task.get_name(), exc, exc_info=exc)

    @property
    def root(self) -> Supervisor:
        return self.parent.root if self.parent is not None else self

    def _emit(self, name: str, **fields: Any) -> None:
        if self.bus is not None:
            self.bus.emit(name, **fields)

    def _escalation_future(self) -> asyncio.Future[Escalated]:
        if self.parent is not None:
            return self.parent._escalation_future()
        if self._escalation is None:
            self._escalation = asyncio.get_running_loop().create_future()
        return self._escalation
