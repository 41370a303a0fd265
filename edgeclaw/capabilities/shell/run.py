"""system.run, system.run.prepare and system.execApprovals.get/set: parse → policy → plan → run.

Shapes, messages and denial reasons follow OpenClaw's node host (`src/node-host/invoke-system-run.ts`,
openclaw 2026.9.6) so the gateway's approval flow and the agent's `exec host=node` work unchanged. Where
OpenClaw's node host fails (an allowlist under agent `*` for a request without `agentId`), this one works.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError, NodeServices
from edgeclaw.capabilities.shell import approvals as ap
from edgeclaw.capabilities.shell.command import Analysis, analyze, format_exec_command, is_shell_wrapper
from edgeclaw.capabilities.shell.contained import Unavailable, active_isolation, run_contained
from edgeclaw.capabilities.shell.envpolicy import (
    EnvRejected,
    check_overrides,
    child_environment,
    not_covered,
)
from edgeclaw.capabilities.shell.process import RunResult, run_process
from edgeclaw.capabilities.shell.request import (
    DENIED,
    Request,
    command_text,
    opt_str,
    parse_argv,
    parse_request,
)

if TYPE_CHECKING:
    from edgeclaw.capabilities.shell import Config

log = logging.getLogger("edgeclaw.shell")
EVENT_OUTPUT_TAIL = 20_000


def _env_note(uncovered: list[str]) -> str:
    if not uncovered:
        return ""
    return " (environment overrides not covered by the allowlist: " + ", ".join(uncovered) + ")"


class Denied(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ShellService:
    """Owns the approvals store and the run limiter; the capability's handlers delegate here."""

    def __init__(
        self, config: Config, services: NodeServices, pinned: tuple[bytes | None] | None = None
    ) -> None:
        """`pinned`: the approvals file's bytes as the capability read them at start (so an edit made
        between start and the first command is not trusted either); None: read the file now."""
        self.config = config
        self.services = services
        self.store = ap.ApprovalsStore(services.state_dir)
        self._lock = asyncio.Lock()  # serialises document writes (set, lastUsedAt, allow-always)
        self._reported_drift: str | None = None
        try:
            self.store.load(pinned[0] if pinned is not None else ap.DISK)
        except ap.ApprovalsInvalid as exc:
            log.error("exec approvals: %s", exc)

    def _path_env(self, _overrides: dict[str, str] | None = None) -> str:
        """The node's own PATH: a request can never choose where a bare name is looked up."""
        return child_environment({}).get("PATH", os.defpath)

    async def reload(self) -> None:
        """SIGHUP: the file on disk is trusted again (an operator edited it on purpose)."""
        async with self._lock:
            try:
                await asyncio.to_thread(self.store.load)
                self._reported_drift = None
            except ap.ApprovalsInvalid as exc:
                log.error("exec approvals: %s", exc)

    async def _load(self) -> ap.Snapshot:
        try:
            snap = self.store.snapshot()
            drift = await asyncio.to_thread(self.store.drift)
        except ap.ApprovalsInvalid as exc:
            raise InvokeError("UNAVAILABLE", str(exc)) from None
        if drift is not None and drift != self._reported_drift:
            self._reported_drift = drift
            log.warning(
                "%s was changed behind the node's back (now %s, in force %s); not honoured — use "
                "system.execApprovals.set or reload the node to accept it",
                self.store.path,
                drift[:12],
                snap.hash[:12],
            )
        return snap

    def drift(self) -> str | None:
        """The file's hash when it differs from the approvals in force (for get, status and doctor)."""
        try:
            return self.store.drift()
        except ap.ApprovalsInvalid:
            return None

    # --- events ---------------------------------------------------------------------------------------
    async def _event(self, event: str, payload: dict[str, Any]) -> None:
        try:
            reply = await self.services.send_event(event, payload, timeout=5.0)
        except Exception as exc:  # the run's outcome must not depend on the event being delivered
            log.info("could not send %s (runId %s): %s", event, payload.get("runId"), exc)
            return
        log.info(
            "%s sent (runId %s, reason %s): %s", event, payload.get("runId"), payload.get("reason"), reply
        )

    def _after_reply(self, ctx: InvokeContext, event: str, payload: dict[str, Any]) -> None:
        """Send the event once the invoke's answer is on the wire: the gateway's deadline is for the
        answer, and an event waits for its own reply (up to 5 s on a slow link)."""
        ctx.after_reply.append(partial(self._event, event, payload))

    def _deny(self, ctx: InvokeContext, req: Request, reason: str, message: str) -> InvokeError:
        log.warning("system.run denied (%s): %s", reason, req.command_text[:200])
        self._after_reply(
            ctx,
            "exec.denied",
            {
                "sessionKey": req.session_key or "node",
                "runId": req.run_id or str(uuid.uuid4()),
                "host": "node",
                "command": req.command_text,
                "reason": reason,
                "suppressNotifyOnExit": req.suppress,
            },
        )
        return InvokeError(DENIED, message)

    # --- system.run -----------------------------------------------------------------------------------
    async def handle_run(self, ctx: InvokeContext) -> dict[str, Any]:
        req = parse_request(ctx.params)
        try:
            argv, executable = await self._authorize(req)
        except Denied as exc:
            raise self._deny(ctx, req, exc.reason, exc.message) from None
        env = child_environment(req.env_overrides)
        timeout = req.timeout_ms / 1000 if req.timeout_ms and req.timeout_ms > 0 else None
        result = await self._spawn(argv, executable, req.cwd, env, timeout, ctx.deadline)
        if result.deadline_hit:
            raise InvokeError("TIMEOUT", "node invoke timed out; the command's process group was killed")
        if req.run_id:
            self._after_reply(ctx, "exec.finished", self._finished_payload(req, result))
        body: dict[str, Any] = {}
        if result.exit_code is not None:
            body["exitCode"] = result.exit_code
        body.update(
            timedOut=result.timed_out,
            success=result.success,
            stdout=result.stdout,
            stderr=result.stderr,
            error=result.error,
        )
        return body

    async def _spawn(
        self,
        argv: list[str],
        executable: str | None,
        cwd: str | None,
        env: dict[str, str],
        timeout: float | None,
        deadline: float,
    ) -> RunResult:
        """In a systemd run unit when one is configured/present, else as a contained child of the node."""
        cfg = self.config
        kw: dict[str, Any] = dict(
            cwd=cwd,
            env=env,
            timeout=timeout,
            deadline=deadline,
            cap=cfg.output_cap_bytes,
            grace=cfg.kill_grace_s,
        )
        if active_isolation(cfg.isolation, cfg.run_socket) == "inprocess":
            return await run_process(argv, executable=executable, **kw)
        try:
            return await run_contained(argv, executable=executable, path=cfg.run_socket, **kw)
        except Unavailable as exc:  # never fall back to an uncontained run
            raise InvokeError("UNAVAILABLE", str(exc)) from None

    def _finished_payload(self, req: Request, result: RunResult) -> dict[str, Any]:
        combined = "\n".join(x for x in (result.stdout, result.stderr, result.error) if x).strip()
        if len(combined) > EVENT_OUTPUT_TAIL:
            combined = "... (truncated) " + combined[-EVENT_OUTPUT_TAIL:]
        payload: dict[str, Any] = {
            "sessionKey": req.session_key or "node",
            "runId": req.run_id,
            "host": "node",
            "command": req.command_text,
        }
        if result.exit_code is not None:
            payload["exitCode"] = result.exit_code
        payload.update(
            timedOut=result.timed_out,
            success=result.success,
            output=combined,
            suppressNotifyOnExit=req.suppress,
        )
        return payload

    async def _authorize(self, req: Request) -> tuple[list[str], str | None]:
        """Decide; returns the argv to run (argv[0] as given) and the file to execute, or raises Denied."""
        snap = await self._load()
        policy = ap.resolve(snap.file, req.agent_id)
        current = policy.snapshot()
        delayed = req.approved or req.ask_fallback
        if delayed and not ap.snapshot_is_current((req.plan or {}).get("policySnapshot"), current):
            raise Denied(
                "approval-required", f"{DENIED}: exec approval policy changed; request approval again"
            )
        security, ask = policy.security, policy.ask
        if req.ask_fallback:
            security, ask = ap.min_security(security, policy.ask_fallback), "off"
        analysis = analyze(req.argv, req.cwd, self._path_env())
        used: list[tuple[ap.Rule, Any]] = []
        satisfied = False
        uncovered: list[str] = []
        if analysis.ok:
            for seg in analysis.segments:
                rule = ap.match_segment(policy.rules, seg)
                if rule is None:
                    used = []
                    break
                used.append((rule, seg))
            satisfied = bool(used) and len(used) == len(analysis.segments)
        if satisfied and req.env_overrides:
            # an allowlist entry covers the overrides it names; an operator's approval covers the env
            # the gateway bound into it; nothing else but terminal/locale keys
            allowed = set.intersection(*(set(r.entry.get("envKeys") or ()) for r, _ in used))
            uncovered = not_covered(req.env_overrides, allowed)
            satisfied = not uncovered
        if security == "deny":
            raise Denied("security=deny", "SYSTEM_RUN_DISABLED: security=deny")
        needs_ask = ask == "always" or (ask == "on-miss" and security == "allowlist" and not satisfied)
        if needs_ask and not req.approved:
            raise Denied("approval-required", f"{DENIED}: approval required" + _env_note(uncovered))
        if security == "allowlist" and not satisfied and not req.approved:
            raise Denied("allowlist-miss", f"{DENIED}: allowlist miss" + _env_note(uncovered))
        if req.cwd is not None and not (os.path.isdir(req.cwd) and os.access(req.cwd, os.X_OK)):
            raise Denied("cwd-unavailable", f"{DENIED}: working directory does not exist or is inaccessible")
        executable = self._plan_executable(req, analysis, satisfied and not req.approved)
        allow_always = None
        if req.approved and req.decision == "allow-always":
            complete, patterns = ap.allow_always_patterns(analysis.segments if analysis.ok else [])
            if complete:
                allow_always = (policy.agent_key, patterns)
        if used or allow_always:
            async with self._lock:
                try:
                    await asyncio.to_thread(self.store.record_use, used, req.command_text, allow_always)
                except (OSError, ap.StaleHash, ap.ApprovalsInvalid) as exc:
                    if allow_always:
                        log.warning("could not persist allow-always: %s", exc)
                        raise Denied(
                            "approval-state-write-failed", f"{DENIED}: approval state could not be persisted"
                        ) from None
                    log.info("could not record allowlist use: %s", exc)
        return list(req.argv), executable

    def _plan_executable(self, req: Request, analysis: Analysis, allowlisted: bool) -> str | None:
        """Bind what runs to what was checked: the real file that matched or was approved is executed,
        while argv[0] stays as given (a multi-call binary such as xz or busybox picks its applet from it).

        A shell wrapper runs the real system shell its analysis found; a program merely named `sh` that
        is not one was analysed, and is executed, as a plain command."""
        if analysis.shell_real is not None:
            if allowlisted and analysis.shell is not None and analysis.shell.trailing:
                raise Denied("execution-plan-miss", f"{DENIED}: execution plan mismatch")
            return analysis.shell_real
        if not analysis.ok or not analysis.segments:
            return None
        seg = analysis.segments[0]
        if req.approved:
            planned = (req.plan or {}).get("argv") or []
            if planned and os.path.isabs(planned[0]) and seg.resolved is None:
                # the approved executable vanished between approval and run
                raise Denied("execution-plan-miss", f"{DENIED}: execution plan mismatch")
        return seg.real  # None (not found): the launch reports ENOENT the way OpenClaw does

    # --- system.run.prepare ---------------------------------------------------------------------------
    async def handle_prepare(self, ctx: InvokeContext) -> dict[str, Any]:
        params = ctx.params
        argv = parse_argv(params)
        text, preview = command_text(argv, params.get("rawCommand"))
        cwd = opt_str(params.get("cwd"), "cwd")
        agent_id = opt_str(params.get("agentId"), "agentId")
        session_key = opt_str(params.get("sessionKey"), "sessionKey")
        env = params.get("env")
        if env is not None and not isinstance(env, dict):
            raise InvokeError("INVALID_REQUEST", "env must be an object of strings")
        try:
            check_overrides(env, shell_wrapper=is_shell_wrapper(argv))
        except EnvRejected as exc:
            raise InvokeError("INVALID_REQUEST", f"{DENIED}: environment override rejected ({exc})") from None
        if cwd is not None:
            cwd = os.path.realpath(cwd)
            if not os.path.isdir(cwd):
                raise InvokeError(
                    "INVALID_REQUEST", f"{DENIED}: working directory does not exist or is inaccessible"
                )
        analysis = analyze(argv, cwd, self._path_env())
        first = analysis.segments[0] if analysis.ok and analysis.segments else None
        if analysis.shell is None and first is not None and first.resolved and first.real:
            # pin the executable the operator approves: the path as invoked (a multi-call binary's
            # `xzcat`, not the `xz` it links to) unless it has `..` parts, then the real file
            pinned = first.resolved if first.resolved == os.path.normpath(first.resolved) else first.real
            argv = [pinned, *argv[1:]]
            text = format_exec_command(argv)
            analysis = analyze(argv, cwd, self._path_env())
        snap = await self._load()
        policy = ap.resolve(snap.file, agent_id)
        security, ask = policy.security, policy.ask
        for name, order in (("security", ap.SECURITY), ("ask", ap.ASK)):
            value = params.get(name)
            if value is not None and value not in order:
                raise InvokeError("INVALID_REQUEST", f"{name} must be one of {', '.join(order)}")
        if params.get("security") is not None:
            security = ap.min_security(security, params["security"])
        if params.get("ask") is not None:
            ask = ap.max_ask(ask, params["ask"])
        complete, patterns = ap.allow_always_patterns(analysis.segments if analysis.ok else [])
        plan = {
            "argv": argv,
            "cwd": cwd,
            "commandText": text,
            "commandPreview": preview if preview and preview != text else None,
            "agentId": agent_id,
            "sessionKey": session_key,
            "policySnapshot": policy.snapshot(),
        }
        return {
            "plan": plan,
            "execPolicy": {"security": security, "ask": ask},
            "allowAlwaysCoverage": {"complete": complete and analysis.ok, "patterns": patterns},
        }

    # --- approvals ------------------------------------------------------------------------------------
    async def handle_get(self, ctx: InvokeContext) -> dict[str, Any]:
        include = ctx.params.get("includeResolvedDefaults")
        if include is not None and not isinstance(include, bool):
            raise InvokeError("INVALID_REQUEST", "includeResolvedDefaults must be boolean")
        snap = await self._load()
        payload = snap.payload()
        drift = self.drift()
        if drift is not None:
            payload["externalChange"] = {
                "honoured": False,
                "diskHash": drift,
                "message": "the file was changed outside system.execApprovals.set; the node ignores it "
                "until it is set through the gateway or the node reloads",
            }
        if include:
            policy = ap.resolve(snap.file, None)
            payload["resolvedDefaults"] = {
                "security": policy.security,
                "ask": policy.ask,
                "askFallback": policy.ask_fallback,
                "autoAllowSkills": policy.auto_allow_skills,
            }
        return payload

    async def handle_set(self, ctx: InvokeContext) -> dict[str, Any]:
        doc = ctx.params.get("file")
        if not isinstance(doc, dict):
            raise InvokeError("INVALID_REQUEST", "exec approvals file required")
        base = ctx.params.get("baseHash")
        base_hash = base.strip() if isinstance(base, str) else ""
        try:
            ap.normalize(doc)
        except ap.ApprovalsInvalid as exc:
            raise InvokeError("INVALID_REQUEST", str(exc)) from None
        async with self._lock:
            snap = await self._load()
            if snap.exists and not base_hash:
                raise InvokeError("INVALID_REQUEST", "exec approvals base hash required; reload and retry")
            if base_hash and base_hash != snap.hash:
                raise InvokeError("INVALID_REQUEST", "exec approvals changed; reload and retry")
            try:
                written = await asyncio.to_thread(self.store.write, doc, snap.hash)
            except ap.StaleHash:
                raise InvokeError("INVALID_REQUEST", "exec approvals changed; reload and retry") from None
            except OSError as exc:
                raise InvokeError("UNAVAILABLE", f"cannot store exec approvals: {exc.strerror}") from None
        log.info("exec approvals replaced (hash %s)", written.hash[:12])
        return written.payload()
