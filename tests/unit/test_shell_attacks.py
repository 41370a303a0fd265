"""Adversarial suite: each test is an attack on `system.run`'s approvals that succeeded before the fix
(issue 15), driven through the project's own ShellService, plus benign controls that must keep working.

Every attack's payload, when it gets to run, leaves a marker file; a closed hole means a coded refusal
and no marker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.shell import Config, create
from edgeclaw.platform.events import EventBus

TRUE = os.path.realpath(shutil.which("true") or "/usr/bin/true")


class Services:
    node_id = "n" * 64
    display_name = "attacks"
    simulated = True

    def __init__(self, state_dir: Path, event_delay: float = 0.0) -> None:
        self._state_dir = state_dir
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_delay = event_delay

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    def is_connected(self) -> bool:
        return True

    async def send_event(self, event: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Any:
        self.events.append((event, payload))
        await asyncio.sleep(self.event_delay)  # a gateway slow to acknowledge
        return {"ok": True}


def ctx(params: dict[str, Any], seconds: float = 20.0) -> InvokeContext:
    loop = asyncio.get_running_loop()
    return InvokeContext("inv", "system.run", params, loop.time() + seconds, int(seconds * 1000))


async def node(tmp_path: Path, doc: dict[str, Any] | None) -> tuple[Any, Services]:
    """A shell capability whose approvals file holds `doc`; handlers run like the dispatcher runs them."""
    state = tmp_path / "state"
    state.mkdir(parents=True)
    services = Services(state)
    if doc is not None:
        (state / "exec-approvals.json").write_text(json.dumps(doc))
    cap = create(Config(), services)  # type: ignore[arg-type]
    await cap.start()

    def answered(handler: Any) -> Any:
        async def call(c: InvokeContext) -> Any:
            try:
                return await handler(c)
            finally:
                for hook in getattr(c, "after_reply", []):
                    await hook()

        return call

    return {n: answered(h) for n, h in cap.handlers().items()}, services


def allow(*entries: Any, ask: str = "off") -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"security": "allowlist", "ask": ask, "askFallback": "deny"},
        "agents": {"*": {"allowlist": list(entries)}},
    }


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


async def refused(h: Any, params: dict[str, Any], code: str = "SYSTEM_RUN_DENIED") -> str:
    with pytest.raises(InvokeError) as exc:
        await h["system.run"](ctx(params))
    assert exc.value.code == code, exc.value.message
    return exc.value.message


# --- wrapper shells ---------------------------------------------------------------------------------
async def test_a_program_merely_named_sh_is_not_a_shell(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    evil = script(tmp_path / "evil" / "sh", f"touch {pwned}")
    h, services = await node(tmp_path, allow({"pattern": TRUE}))
    await refused(h, {"command": [str(evil), "-c", "true"], "runId": "r1"})
    await refused(h, {"command": ["./sh", "-c", "true"], "cwd": str(evil.parent), "runId": "r2"})
    await refused(h, {"command": ["./sh", "-lc", "true"], "cwd": str(evil.parent)})
    assert not pwned.exists()
    assert [e[1]["reason"] for e in services.events] == ["allowlist-miss"] * 3
    assert [e[1]["runId"] for e in services.events][:2] == ["r1", "r2"]
    # the real system shell still works for an allowlisted payload, and runs as the /etc/shells shell
    out = await h["system.run"](ctx({"command": ["sh", "-c", "true"]}))
    assert out["success"] is True


async def test_shell_options_that_load_code_are_not_analysed(tmp_path: Path) -> None:
    h, _ = await node(tmp_path, allow({"pattern": TRUE}))
    for argv in (["sh", "-i", "-c", "true"], ["bash", "--rcfile", "/tmp/x", "-c", "true"]):
        await refused(h, {"command": argv})


# --- bare names -------------------------------------------------------------------------------------
async def test_bare_name_rule_matches_only_path_lookups(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    evil = script(tmp_path / "evil" / "ls", f"touch {pwned}")
    h, _ = await node(tmp_path, allow({"pattern": "ls"}))
    await refused(h, {"command": [str(evil)]})
    await refused(h, {"command": ["./ls"], "cwd": str(evil.parent)})
    await refused(h, {"command": ["sh", "-c", "./ls"], "cwd": str(evil.parent)})
    assert not pwned.exists()
    # control: the PATH lookup the rule means still runs, also pinned by prepare to its PATH location
    out = await h["system.run"](ctx({"command": ["ls", "-d", "/"]}))
    assert out["stdout"] == "/\n"
    pinned = shutil.which("ls")
    assert (await h["system.run"](ctx({"command": [pinned, "-d", "/"]})))["stdout"] == "/\n"


# --- environment overrides ----------------------------------------------------------------------------
async def test_tar_options_cannot_smuggle_a_command_past_an_arg_pattern(tmp_path: Path) -> None:
    tar = shutil.which("tar")
    if tar is None:
        pytest.fail("tar is needed for this attack (it is in every Debian image)")
    pwned = tmp_path / "pwned"
    hook = script(tmp_path / "hook", f"touch {pwned}")
    (tmp_path / "f").write_text("data")
    archive = tmp_path / "a.tar"
    args = ["-cf", str(archive), "-C", str(tmp_path), "f"]
    h, services = await node(
        tmp_path, allow({"pattern": os.path.realpath(tar), "argPattern": "^" + " ".join(args) + "$"})
    )
    env = {"TAR_OPTIONS": f"--checkpoint=1 --checkpoint-action=exec={hook}"}
    message = await refused(h, {"command": ["tar", *args], "env": env, "runId": "r"})
    assert "TAR_OPTIONS" in message
    assert not pwned.exists() and not archive.exists()
    assert services.events[-1][1]["reason"] == "allowlist-miss"
    # control: the pinned command itself runs, with a terminal key that is always allowed
    out = await h["system.run"](ctx({"command": ["tar", *args], "env": {"TERM": "dumb"}}))
    assert out["success"] is True and archive.exists()


@pytest.mark.parametrize(
    "key",
    [
        "RSYNC_RSH",
        "RSYNC_CONNECT_PROG",
        "CVS_RSH",
        "PERLLIB",
        "PYTHONWARNINGS",
        "OPENSSL_MODULES",
        "BASH_LOADABLES_PATH",
        "MANOPT",
        "AWKLIBPATH",
        "SYSTEMD_EDITOR",
        "GIT_CONFIG",
        "SOME_NEW_TOOL_HOOK",
    ],
)
async def test_override_keys_are_an_allowlist_not_a_denylist(tmp_path: Path, key: str) -> None:
    h, _ = await node(tmp_path, allow({"pattern": TRUE}))
    with pytest.raises(InvokeError) as exc:
        await h["system.run"](ctx({"command": [TRUE], "env": {key: "x"}}))
    assert exc.value.code in ("SYSTEM_RUN_DENIED", "INVALID_REQUEST") and key in exc.value.message


async def test_an_entry_can_name_the_override_keys_it_allows(tmp_path: Path) -> None:
    h, _ = await node(tmp_path, allow({"pattern": "printenv", "envKeys": ["GREETING"]}))
    out = await h["system.run"](ctx({"command": ["printenv", "GREETING"], "env": {"GREETING": "hi"}}))
    assert out["stdout"] == "hi\n"
    await refused(h, {"command": ["printenv", "OTHER"], "env": {"OTHER": "x"}})


async def test_nul_and_non_string_env_values_are_invalid_requests(tmp_path: Path) -> None:
    h, _ = await node(tmp_path, allow({"pattern": TRUE}))
    for env in ({"TERM": "a\x00b"}, {"TERM": 3}, {"TERM": None}, {"TERM": ["x"]}):
        await refused(h, {"command": [TRUE], "env": env}, code="INVALID_REQUEST")


# --- argv[0] and multi-call binaries ---------------------------------------------------------------
async def test_multi_call_binary_keeps_its_name(tmp_path: Path) -> None:
    xzcat = shutil.which("xzcat")
    if xzcat is None or os.path.realpath(xzcat) == xzcat:
        pytest.fail("needs xzcat as a link to xz (xz-utils)")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    h, _ = await node(tmp_path, allow({"pattern": "xzcat"}))
    out = await h["system.run"](ctx({"command": ["xzcat", "notes.txt"], "cwd": str(tmp_path)}))
    assert out["success"] is False and "format" in out["stderr"]  # xzcat reads; it does not compress
    assert notes.read_text() == "my notes\n" and not (tmp_path / "notes.txt.xz").exists()
    # the plan an operator approves names xzcat too, so the approved run is xzcat
    plan = (await h["system.run.prepare"](ctx({"command": ["xzcat", "notes.txt"]})))["plan"]
    assert os.path.basename(plan["argv"][0]) == "xzcat"


# --- paths, symlinks and `..` -----------------------------------------------------------------------
async def test_dotdot_through_a_symlink_does_not_escape_a_glob_rule(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    allowed = tmp_path / "allowed"
    script(allowed / "tool", "echo benign")
    script(tmp_path / "evil" / "tool", f"touch {pwned}")
    (tmp_path / "evil" / "sub").mkdir()
    (allowed / "link").symlink_to(tmp_path / "evil" / "sub")
    sneaky = f"{allowed}/link/../tool"  # lexically allowed/tool; the kernel opens evil/tool
    h, _ = await node(tmp_path, allow({"pattern": f"{allowed}/*"}))
    await refused(h, {"command": [sneaky]})
    await refused(h, {"command": ["sh", "-c", sneaky]})
    assert not pwned.exists()
    assert (await h["system.run"](ctx({"command": [f"{allowed}/tool"]})))["stdout"] == "benign\n"


# --- argPattern ---------------------------------------------------------------------------------------
async def test_arg_pattern_dollar_does_not_match_before_a_trailing_newline(tmp_path: Path) -> None:
    h, _ = await node(tmp_path, allow({"pattern": "echo", "argPattern": "^safe$"}))
    await refused(h, {"command": ["echo", "safe\n"]})
    assert (await h["system.run"](ctx({"command": ["echo", "safe"]})))["stdout"] == "safe\n"


async def test_arg_pattern_keeps_argument_boundaries(tmp_path: Path) -> None:
    """A space in an argPattern separates arguments, and only that: `["<dir>/a b"]` (one argument, a
    file the rule never named) no longer matches a rule written for `<dir>/a` and `b`."""
    (tmp_path / "a").write_text("A\n")
    (tmp_path / "b").write_text("B\n")
    (tmp_path / "a b").write_text("private\n")
    rule = {"pattern": "cat", "argPattern": f"^{tmp_path}/a b$"}
    h, _ = await node(tmp_path, allow(rule))
    await refused(h, {"command": ["cat", f"{tmp_path}/a b"]})
    out = await h["system.run"](ctx({"command": ["cat", f"{tmp_path}/a", "b"], "cwd": str(tmp_path)}))
    assert out["stdout"] == "A\nB\n"
    empty = {"pattern": "true", "argPattern": "^$"}  # `[]` and `[""]` join to the same text
    h2, _ = await node(tmp_path / "two", allow(empty))
    await refused(h2, {"command": ["true", ""]})
    assert (await h2["system.run"](ctx({"command": ["true"]})))["success"] is True


# --- the approvals file is not rewritable by a run ---------------------------------------------------
async def test_a_run_cannot_rewrite_the_approvals_in_force(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"version": 1, "defaults": {"security": "full", "ask": "off"}}))
    h, _ = await node(tmp_path, allow({"pattern": TRUE}, ask="on-miss"))
    target = tmp_path / "state" / "exec-approvals.json"
    argv = ["cp", str(full), str(target)]
    plan = (await h["system.run.prepare"](ctx({"command": argv})))["plan"]
    params = {"command": plan["argv"], "systemRunPlan": plan, "approved": True}
    assert (await h["system.run"](ctx({**params, "approvalDecision": "allow-once"})))["success"]
    assert json.loads(target.read_text())["defaults"]["security"] == "full"  # the file did change
    await refused(h, {"command": ["touch", str(pwned)]})
    assert not pwned.exists()
    shown = await h["system.execApprovals.get"](ctx({}))
    assert shown["file"]["defaults"]["security"] == "allowlist"
    assert shown["externalChange"]["honoured"] is False
    # the operator's own channel still works: set (against the hash in force) replaces the file
    await h["system.execApprovals.set"](ctx({"file": allow({"pattern": TRUE}), "baseHash": shown["hash"]}))
    assert "externalChange" not in await h["system.execApprovals.get"](ctx({}))


# --- the answer is not held back by events -----------------------------------------------------------
async def test_result_is_sent_before_the_event_and_meets_a_short_deadline(tmp_path: Path) -> None:
    from edgeclaw.node.dispatch import Dispatcher

    state = tmp_path / "state"
    state.mkdir()
    (state / "exec-approvals.json").write_text(json.dumps(allow({"pattern": TRUE})))
    services = Services(state, event_delay=30.0)  # the gateway never acknowledges in time
    cap = create(Config(), services)  # type: ignore[arg-type]
    await cap.start()
    order: list[str] = []
    answered = asyncio.Event()

    async def send_result(params: dict[str, Any]) -> None:
        order.append("result:" + ("ok" if params["ok"] else params["error"]["code"]))
        answered.set()

    dispatcher = Dispatcher(node_id="n", bus=EventBus(), send_result=send_result, max_payload=lambda: 1 << 20)
    dispatcher.set_capabilities([cap])
    for invoke_id, argv in (("i1", [TRUE]), ("i2", ["id"])):
        answered.clear()
        before = len(services.events)
        params = {"command": argv, "runId": invoke_id, "sessionKey": "s"}
        dispatcher.on_invoke_request(
            {"id": invoke_id, "command": "system.run", "paramsJSON": json.dumps(params), "timeoutMs": 2000}
        )
        await asyncio.wait_for(answered.wait(), timeout=1.5)
        await asyncio.sleep(0.05)
        events = [e for e, _ in services.events[before:]]
        order.extend(events)
    assert order == ["result:ok", "exec.finished", "result:SYSTEM_RUN_DENIED", "exec.denied"]
    await dispatcher.drain(0.1)


async def test_an_operator_edit_is_honoured_after_a_reload(tmp_path: Path) -> None:
    """Control for the above: editing the file on purpose and reloading (SIGHUP) is the operator's way."""
    state = tmp_path / "state"
    state.mkdir()
    target = state / "exec-approvals.json"
    target.write_text(json.dumps(allow({"pattern": TRUE})))
    cap = create(Config(), Services(state))  # type: ignore[arg-type]
    await cap.start()
    target.write_text(json.dumps(allow({"pattern": TRUE}, {"pattern": "echo"})))  # before any command
    run = cap.handlers()["system.run"]
    with pytest.raises(InvokeError, match="allowlist miss"):
        await run(ctx({"command": ["echo", "x"]}))
    await cap.reload(Config())
    assert (await run(ctx({"command": ["echo", "x"]})))["stdout"] == "x\n"
