"""A `system.run` request's parameters, validated into a Request (every bad field a coded INVALID_REQUEST).

An explicit approval must carry the plan `system.run.prepare` made for exactly this argv, text, cwd,
agent and session, with the policy snapshot it was made under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.shell.command import format_exec_command, is_shell_wrapper
from edgeclaw.capabilities.shell.envpolicy import EnvRejected, check_overrides

DENIED = "SYSTEM_RUN_DENIED"


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


def opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvokeError("INVALID_REQUEST", f"{name} must be a string")
    return value.strip() or None


def parse_argv(params: dict[str, Any]) -> list[str]:
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


def command_text(argv: list[str], raw: Any) -> tuple[str, str | None]:
    """The canonical display text; `rawCommand`, when given, must be it (or the shell payload)."""
    text = format_exec_command(argv)
    analysis_preview: str | None = None
    if is_shell_wrapper(argv):
        from edgeclaw.capabilities.shell.command import parse_shell_wrapper

        wrapper = parse_shell_wrapper(argv)
        if wrapper is not None and not wrapper.trailing:
            analysis_preview = wrapper.payload.strip()
    raw_text = opt_str(raw, "rawCommand")
    if raw_text is not None and raw_text != text and raw_text != analysis_preview:
        raise InvokeError("INVALID_REQUEST", "rawCommand does not match command")
    return text, analysis_preview


def parse_request(params: dict[str, Any]) -> Request:
    argv = parse_argv(params)
    text, preview = command_text(argv, params.get("rawCommand"))
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
        cwd=opt_str(params.get("cwd"), "cwd"),
        env_overrides=overrides,
        timeout_ms=timeout,
        agent_id=opt_str(params.get("agentId"), "agentId"),
        session_key=opt_str(params.get("sessionKey"), "sessionKey"),
        run_id=opt_str(params.get("runId"), "runId"),
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
