"""`edgeclaw pair` is run with sudo: it must pair and nothing else (issue 15, item 3). The real CLI runs as
a subprocess against the in-process fake gateway, which keeps the command surface pending (as a real
gateway does until `openclaw nodes approve`) and meanwhile sends invokes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeclaw.node.setupcode import PREFIX
from edgeclaw.protocol.identity import b64url
from tests.support.fakegateway import FakeGateway

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]


class SurfacePendingGateway(FakeGateway):
    """Answers the node's surface probe with "pending approval" until `approve()`."""

    surface_approved: bool = False

    async def _on_message(self, ws: Any, message: Any) -> None:
        frame = json.loads(message)
        if frame.get("method") == "node.runnerInventory.update" and not self.surface_approved:
            self.requests.append(frame)
            error = {
                "code": "NOT_PAIRED",
                "message": "node command surface pending approval: run `openclaw nodes approve surf-1`",
            }
            await ws.send(json.dumps({"type": "res", "id": frame["id"], "ok": False, "error": error}))
            return
        await super()._on_message(ws, message)


@pytest.fixture
async def pending_gw() -> Any:
    gateway = SurfacePendingGateway()
    await gateway.start()
    yield gateway
    await gateway.stop()


def _base_config(tmp: Path, marker: Path) -> Path:
    """A node that would run anything (security=full) and has a notify hook: what `pair` must not serve."""
    config = tmp / "config.yaml"
    hook = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('hook')", str(marker)]
    doc = {
        "shell": {"approvals": {"version": 1, "defaults": {"security": "full", "ask": "off"}}},
        "system": {"notify_hook": hook},
    }
    config.write_text(yaml.safe_dump(doc))
    return config


async def _start_pair(config: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeclaw",
        "--config",
        str(config),
        "pair",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )


async def _read_until(proc: asyncio.subprocess.Process, needle: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"pair exited before {needle!r}: {seen}")
            seen += line.decode()
    return seen


async def _finish(proc: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return int(proc.returncode or 0), out.decode()


async def test_pair_declares_the_surface_but_serves_no_command(
    tmp_path: Path, pending_gw: SurfacePendingGateway
) -> None:
    """The attack: while `sudo edgeclaw pair` waits for the surface approval, the gateway (or whoever
    holds the operator token) invokes system.run. It must not run — as root it would own the board."""
    marker = tmp_path / "ran-as-pair"
    config = _base_config(tmp_path, marker)
    token = tmp_path / "gw.token"
    token.write_text(pending_gw.token)
    proc = await _start_pair(
        config,
        *("--gateway", pending_gw.url, "--token-file", str(token), "--hardware", "simulated"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run"), "--wait", "60"),
    )
    try:
        await _read_until(proc, "openclaw nodes approve surf-1")
        # the surface the operator approves is the service's full one
        assert {"system.run", "system.notify", "system.which"} <= set(pending_gw.connects[-1]["commands"])
        run = await pending_gw.invoke(
            "system.run", {"command": ["/bin/sh", "-c", f"echo run >> {marker}"], "timeoutMs": 5000}
        )
        notify = await pending_gw.invoke("system.notify", {"title": "hello"})
        which = await pending_gw.invoke("system.which", {"bins": ["sh"]})
        results = [await pending_gw.result_for(i) for i in (run, notify, which)]
        for result in results:
            assert not result["ok"], result
            assert result["error"]["code"] == "UNAVAILABLE", result
            assert "edgeclaw pair" in result["error"]["message"]
        await asyncio.sleep(0.5)  # a command that had started would have written by now
        assert not marker.exists(), marker.read_text()
        # approval ends `pair`: it exits instead of staying on as a node
        pending_gw.surface_approved = True
        await pending_gw.send_event("node.pair.resolved", {"requestId": "surf-1", "decision": "approved"})
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    code, out = await _finish(proc)
    assert code == 0, out
    assert "paired and approved" in out
    assert not marker.exists()
    # what root wrote is config, runtime status, or in the state dir that the unit's ExecStartPre
    # (systemd-tmpfiles `Z`) hands to the service user; nothing else (no exec-approvals seeded as root)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    stray = {p for p in written if p.parts[0] not in ("state", "run")} - {
        Path("config.yaml"),
        Path("gw.token"),
    }
    assert not stray, stray
    assert not (tmp_path / "state" / "exec-approvals.json").exists()


def _setup_code(url: str, token: str = "boot-strap-secret-7e57") -> str:
    doc = {"url": url, "bootstrapToken": token, "expiresAtMs": 4_102_444_800_000}
    return PREFIX + b64url(json.dumps(doc).encode())


async def test_setup_code_file_keeps_the_code_out_of_argv_and_is_removed_after_use(
    tmp_path: Path, gw: FakeGateway
) -> None:
    code = _setup_code(gw.url)
    code_file = tmp_path / "setup-code.txt"
    code_file.write_text(code + "\n")
    code_file.chmod(0o600)
    config = tmp_path / "config.yaml"
    proc = await _start_pair(
        config,
        *("--setup-code-file", str(code_file), "--hardware", "simulated", "--wait", "30"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")),
    )
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    code, out = await _finish(proc)
    assert code == 0, out
    assert "boot-strap-secret-7e57" not in cmdline and "oc-pair" not in cmdline
    assert gw.connects[0]["auth"].get("bootstrapToken") == "boot-strap-secret-7e57"
    assert "boot-strap-secret-7e57" not in out and "warning" not in out.lower()
    assert not code_file.exists(), "the single-use code was left behind"
    assert not (tmp_path / "state" / "setup-code").exists()
    written = yaml.safe_load(config.read_text())
    assert written["gateway"]["url"] == gw.url
    assert (tmp_path / "state" / "device-token.json").exists()


async def test_setup_code_file_is_kept_when_the_gateway_refuses_it(tmp_path: Path, gw: FakeGateway) -> None:
    """Not used = not consumed: a refused (expired, mistyped) code is left for the user to look at."""
    gw.connect_error = {
        "code": "INVALID_REQUEST",
        "message": "bootstrap token invalid",
        "details": {"code": "AUTH_BOOTSTRAP_TOKEN_INVALID"},
    }
    code_file = tmp_path / "setup-code.txt"
    code_file.write_text(_setup_code(gw.url, "refused-token-1234") + "\n")
    proc = await _start_pair(
        tmp_path / "config.yaml",
        *("--setup-code-file", str(code_file), "--hardware", "simulated", "--wait", "3"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")),
    )
    _code, out = await _finish(proc)
    assert gw.connects[0]["auth"].get("bootstrapToken") == "refused-token-1234", gw.connects
    assert code_file.exists(), out


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("not a code\n", "not a setup code"), (None, "No such file")],
)
async def test_setup_code_file_errors_are_config_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    code_file = tmp_path / "code"
    if content is not None:
        code_file.write_text(content)
    proc = await _start_pair(
        tmp_path / "config.yaml",
        *("--setup-code-file", str(code_file), "--state-dir", str(tmp_path / "state")),
    )
    code, out = await _finish(proc)
    assert code == 78, out
    assert message in out and "--setup-code-file" in out


async def test_setup_code_on_argv_warns_and_recommends_the_file(tmp_path: Path, gw: FakeGateway) -> None:
    proc = await _start_pair(
        tmp_path / "config.yaml",
        *("--setup-code", _setup_code(gw.url), "--hardware", "simulated", "--wait", "30"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")),
    )
    code, out = await _finish(proc)
    assert code == 0, out
    assert "warning" in out and "--setup-code-file" in out and "/proc" in out
