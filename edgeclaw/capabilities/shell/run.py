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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError, NodeServices
from edgeclaw.capabilities.shell import approvals as ap
from edgeclaw.capabilities.shell.command import Analysis, analyze, format_exec_command, is_shell_wrapper
from edgeclaw.capabilities.shell.contained import Unavailable, active_isolation, run_contained
from edgeclaw.capabilities.shell.envpolicy import EnvRejected, check_overrides, child_environment
from edgeclaw.capabilities.shell.process import RunResult, run_process

if TYPE_CHECKING:
    from edgeclaw.capabilities.shell import Config

log = logging.getLogger("edgeclaw.shell")
EVENT_OUTPUT_TAIL = 20_000
DENIED = "SYSTEM_RUN_DENIED"


class Denied(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Request:
    argv: list[str]
    command_text: str
    preview: str | None
    cwd: str | None
    env_overrides: dict[str, str]
    timeout_ms: float | None
    agent_id: str | None
    session_key: str | None
    run_id: str | None
    suppress: bool
    approved: bool
    decision: str | None
    plan: dict[str, Any] | None
    ask_fallback: bool = False  # the operator did not answer in time: the askFallback policy decides


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvokeError("INVALID_REQUEST", f"{name} must be a string")
    return value.strip() or None


def _argv(params: dict[str, Any]) -> list[str]:
    command = params.get("command")
    if command is None or (isinstance(command, list) and not command):
        raise InvokeError("INVALID_REQUEST", "command required")
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise InvokeError("INVALID_REQUEST", "command must be an argv array of strings")
    if any("\x00" in a for a in command):
        raise InvokeError("INVALID_REQUEST", "command arguments must not contain NUL bytes")
    if not command[0]:
        raise InvokeError("INVALID_REQUEST", "command[0] must name an executable")
    return list(command)


def _command_text(argv: list[str], raw: Any) -> tuple[str, str | None]:
    """The canonical display text; `rawCommand`, when given, must be it (or the shell payload)."""
    text = format_exec_command(argv)
    analysis_preview: str | None = None
    if is_shell_wrapper(argv):
        from edgeclaw.capabilities.shell.command import parse_shell_wrapper

        wrapper = parse_shell_wrapper(argv)
        if wrapper is not None and not wrapper.trailing:
            analysis_preview = wrapper.payload.strip()
    raw_text = _opt_str(raw, "rawCommand")
    if raw_text is not None and raw_text != text and raw_text != analysis_preview:
        raise InvokeError("INVALID_REQUEST", "rawCommand does not match command")
    return text, analysis_preview


def parse_request(params: dict[str, Any]) -> Request:
    argv = _argv(params)
    text, preview = _command_text(argv, params.get("rawCommand"))
    timeout = params.get("timeoutMs")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise InvokeError("INVALID_REQUEST", "timeoutMs must be a number of milliseconds")
    env = params.get("env")
    if env is not None and not isinstance(env, dict):
        raise InvokeError("INVALID_REQUEST", "env must be an object of strings")
    try:
        overrides = check_overrides(env, shell_wrapper=is_shell_wrapper(argv))
    except EnvRejected as exc:
        raise InvokeError("INVALID_REQUEST", f"{DENIED}: environment override rejected ({exc})") from None
    decision = params.get("approvalDecision")
    if decision is not None and decision not in ("allow-once", "allow-always"):
        raise InvokeError("INVALID_REQUEST", "approvalDecision must be allow-once or allow-always")
    source = params.get("approvalSource")
    if source is not None and source != "ask-fallback":
        raise InvokeError("INVALID_REQUEST", "approvalSource invalid")
    if source is not None and (params.get("approved") is not None or decision is not None):
        raise InvokeError("INVALID_REQUEST", "approvalSource cannot be combined with explicit approval")
    approved = params.get("approved") is True
    plan = params.get("systemRunPlan")
    if plan is not None and not isinstance(plan, dict):
        raise InvokeError("INVALID_REQUEST", "systemRunPlan invalid")
    req = Request(
        argv=argv,
        command_text=text,
        preview=preview,
        cwd=_opt_str(params.get("cwd"), "cwd"),
        env_overrides=overrides,
        timeout_ms=timeout,
        agent_id=_opt_str(params.get("agentId"), "agentId"),
        session_key=_opt_str(params.get("sessionKey"), "sessionKey"),
        run_id=_opt_str(params.get("runId"), "runId"),
        suppress=params.get("suppressNotifyOnExit") is True,
        approved=approved or decision is not None,
        decision=decision or ("allow-once" if approved else None),
        plan=plan,
        ask_fallback=source == "ask-fallback",
    )
    if req.approved or req.ask_fallback:
        p = plan or {}
        if not (
            p.get("argv") == argv
            and p.get("commandText") == text
            and _norm(p.get("cwd")) == req.cwd
            and _norm(p.get("agentId")) == req.agent_id
            and _norm(p.get("sessionKey")) == req.session_key
        ):
            raise InvokeError("INVALID_REQUEST", "explicit approval requires matching systemRunPlan")
        if not isinstance(p.get("policySnapshot"), dict):
            raise InvokeError("INVALID_REQUEST", "delayed approval requires a prepared policy snapshot")
    return req


def _norm(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


class ShellService:
    """Owns the approvals store and the run limiter; the capability's handlers delegate here."""

    def __init__(self, config: Config, services: NodeServices) -> None:
        self.config = config
        self.services = services
        self.store = ap.ApprovalsStore(services.state_dir)
        self._lock = asyncio.Lock()  # serialises document writes (set, lastUsedAt, allow-always)

    def _path_env(self, overrides: dict[str, str]) -> str:
        return child_environment(overrides).get("PATH", os.defpath)

    async def _load(self) -> ap.Snapshot:
        try:
            return await asyncio.to_thread(self.store.snapshot)
        except ap.ApprovalsInvalid as exc:
            raise InvokeError("UNAVAILABLE", str(exc)) from None

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

    async def _deny(self, req: Request, reason: str, message: str) -> InvokeError:
        log.warning("system.run denied (%s): %s", reason, req.command_text[:200])
        await self._event(
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
            plan = await self._authorize(req)
        except Denied as exc:
            raise await self._deny(req, exc.reason, exc.message) from None
        env = child_environment(req.env_overrides)
        timeout = req.timeout_ms / 1000 if req.timeout_ms and req.timeout_ms > 0 else None
        result = await self._spawn(plan, req.cwd, env, timeout, ctx.deadline)
        if result.deadline_hit:
            raise InvokeError("TIMEOUT", "node invoke timed out; the command's process group was killed")
        if req.run_id:
            await self._event("exec.finished", self._finished_payload(req, result))
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
        self, argv: list[str], cwd: str | None, env: dict[str, str], timeout: float | None, deadline: float
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
            return await run_process(argv, **kw)
        try:
            return await run_contained(argv, path=cfg.run_socket, **kw)
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

    async def _authorize(self, req: Request) -> list[str]:
        """Decide; returns the argv to execute (argv[0] pinned where the allowlist matched) or raises Denied."""
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
        analysis = analyze(req.argv, req.cwd, self._path_env(req.env_overrides))
        used: list[tuple[ap.Rule, Any]] = []
        satisfied = False
        if analysis.ok:
            for seg in analysis.segments:
                rule = ap.match_segment(policy.rules, seg)
                if rule is None:
                    used = []
                    break
                used.append((rule, seg))
            satisfied = bool(used) and len(used) == len(analysis.segments)
        if security == "deny":
            raise Denied("security=deny", "SYSTEM_RUN_DISABLED: security=deny")
        needs_ask = ask == "always" or (ask == "on-miss" and security == "allowlist" and not satisfied)
        if needs_ask and not req.approved:
            raise Denied("approval-required", f"{DENIED}: approval required")
        if security == "allowlist" and not satisfied and not req.approved:
            raise Denied("allowlist-miss", f"{DENIED}: allowlist miss")
        if req.cwd is not None and not (os.path.isdir(req.cwd) and os.access(req.cwd, os.X_OK)):
            raise Denied("cwd-unavailable", f"{DENIED}: working directory does not exist or is inaccessible")
        argv = self._plan_argv(req, analysis, satisfied and not req.approved)
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
        return argv

    def _plan_argv(self, req: Request, analysis: Analysis, allowlisted: bool) -> list[str]:
        """Bind what runs to what was checked: pin argv[0] to the file that matched or was approved."""
        argv = list(req.argv)
        if analysis.shell is not None:
            if allowlisted and analysis.shell.trailing:
                raise Denied("execution-plan-miss", f"{DENIED}: execution plan mismatch")
            return argv
        if not analysis.ok or not analysis.segments:
            return argv
        seg = analysis.segments[0]
        if req.approved:
            planned = (req.plan or {}).get("argv") or []
            if planned and os.path.isabs(planned[0]) and seg.resolved is None:
                # the approved executable vanished between approval and run
                raise Denied("execution-plan-miss", f"{DENIED}: execution plan mismatch")
        if seg.real is None:
            return argv  # not found: the launch reports ENOENT the way OpenClaw does
        if allowlisted:
            argv[0] = seg.real
        return argv

    # --- system.run.prepare ---------------------------------------------------------------------------
    async def handle_prepare(self, ctx: InvokeContext) -> dict[str, Any]:
        params = ctx.params
        argv = _argv(params)
        text, preview = _command_text(argv, params.get("rawCommand"))
        cwd = _opt_str(params.get("cwd"), "cwd")
        agent_id = _opt_str(params.get("agentId"), "agentId")
        session_key = _opt_str(params.get("sessionKey"), "sessionKey")
        env = params.get("env")
        if env is not None and not isinstance(env, dict):
            raise InvokeError("INVALID_REQUEST", "env must be an object of strings")
        try:
            overrides = check_overrides(env, shell_wrapper=is_shell_wrapper(argv))
        except EnvRejected as exc:
            raise InvokeError("INVALID_REQUEST", f"{DENIED}: environment override rejected ({exc})") from None
        if cwd is not None:
            cwd = os.path.realpath(cwd)
            if not os.path.isdir(cwd):
                raise InvokeError(
                    "INVALID_REQUEST", f"{DENIED}: working directory does not exist or is inaccessible"
                )
        analysis = analyze(argv, cwd, self._path_env(overrides))
        if analysis.shell is None and analysis.ok and analysis.segments and analysis.segments[0].real:
            argv = [analysis.segments[0].real, *argv[1:]]  # pin the executable the operator approves
            text = format_exec_command(argv)
            analysis = analyze(argv, cwd, self._path_env(overrides))
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
