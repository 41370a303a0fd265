"""Attacks on the `system` capability (issue 15, item 3): what an agent's system.notify/system.which must
not reach. Each test is written as the attack; the benign control sits next to it."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.platform.logsetup import JournalFormatter
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

pytestmark = pytest.mark.timeout(60)

_DUMP_ENV = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


async def _notify(gw: FakeGateway, params: dict[str, Any]) -> dict[str, Any]:
    return await gw.result_for(await gw.invoke("system.notify", params), timeout=20)


async def test_notify_hook_gets_no_gateway_token_nor_notify_socket(
    tmp_path: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook is an operator's script fed agent text: it must not inherit the node's secrets or the
    socket through which it could tell systemd READY/STOPPING/WATCHDOG on the node's behalf."""
    monkeypatch.setenv("EDGECLAW_GATEWAY_TOKEN", "secret-gateway-token-0123")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.setenv("SOME_UNRELATED_SECRET", "s3cr3t")
    monkeypatch.setenv("LANG", "C.UTF-8")
    dump = tmp_path / "hook-env.json"
    hook = [sys.executable, "-c", _DUMP_ENV, str(dump)]
    async with running_node(tmp_path, gw, system={"notify_hook": hook}):
        await gw.wait_hello(1)
        result = await _notify(gw, {"title": "door", "body": "open\nreally", "priority": "timeSensitive"})
    assert result["ok"], result
    env = json.loads(dump.read_text())
    leaked = {"EDGECLAW_GATEWAY_TOKEN", "NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "SOME_UNRELATED_SECRET"}
    assert not leaked & set(env), sorted(leaked & set(env))
    assert "secret-gateway-token-0123" not in json.dumps(env)
    # the control: the hook still gets what it needs to run and the notification itself
    assert env["PATH"] and env["LANG"] == "C.UTF-8"
    assert env["EDGECLAW_NOTIFY_TITLE"] == "door"
    assert env["EDGECLAW_NOTIFY_BODY"] == "open\nreally"
    assert env["EDGECLAW_NOTIFY_PRIORITY"] == "timeSensitive"


def _journal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What journald would split the node's stderr into: one entry per line, `<prio>` prefix each."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    for record in caplog.records:
        if record.name == "edgeclaw.notify":
            handler.emit(record)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    "title",
    [
        "hi\n<0>edgeclaw.daemon: stopping: drained, exiting",  # a forged second journal entry
        "hi\r<3>edgeclaw.runner: gateway refused our credentials",
        "hi\u2028<0>forged after a Unicode line separator",
        "hi\x1b[2J\x1b[31mscreen cleared",  # ANSI escapes for whoever reads the journal on a terminal
        "hi\x85<0>next-line control",
        "hi\u202egnp.exe",  # right-to-left override: the reader sees other text than was sent
    ],
)
async def test_notify_text_reaches_the_journal_as_one_escaped_entry(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture, title: str
) -> None:
    caplog.set_level(logging.INFO, logger="edgeclaw.notify")
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await _notify(gw, {"title": title, "body": "tail", "priority": "passive"})
    assert result["ok"], result
    lines = _journal_lines(caplog)
    assert len(lines) == 1, lines  # one notification, one journal entry
    line = lines[0]
    assert line.startswith("<6>edgeclaw.notify: notification [passive]: hi")
    assert line.isprintable(), repr(line)
    assert not {"\u2028", "\x1b", "\u202e", "\x85"} & set(line)
    assert line.endswith("tail")


async def test_notify_plain_text_is_logged_unchanged(
    tmp_path: Path, gw: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Control: ordinary text (accents, emoji, quotes) is not mangled; a tab is shown as `\\t`."""
    caplog.set_level(logging.INFO, logger="edgeclaw.notify")
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await _notify(gw, {"title": 'Tür "offen" 🚪 👩\u200d🔧', "body": "5\u00a0°C\tkalt"})
    assert result["ok"], result
    assert _journal_lines(caplog) == [
        '<4>edgeclaw.notify: notification [active]: Tür "offen" 🚪 👩\u200d🔧 — 5\u00a0°C\\tkalt'
    ]


async def test_notify_nul_is_a_coded_error_with_a_hook(tmp_path: Path, gw: FakeGateway) -> None:
    """A NUL or a lone surrogate cannot go into the hook's environment: INVALID_REQUEST, not
    INTERNAL_ERROR, and the node keeps serving."""
    marker = tmp_path / "hook-ran"
    hook = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('x')", str(marker)]
    async with running_node(tmp_path, gw, system={"notify_hook": hook}):
        await gw.wait_hello(1)
        bad = ({"title": "a\x00b"}, {"title": "t", "body": "MESSAGE=x\x00PRIORITY=0"}, {"title": "\ud800"})
        for params in bad:
            result = await _notify(gw, params)
            assert not result["ok"] and result["error"]["code"] == "INVALID_REQUEST", result
        assert not marker.exists()
        assert (await _notify(gw, {"title": "still here"}))["ok"]
    assert marker.read_text() == "x"


@pytest.mark.parametrize(
    "name", ["/etc/shadow", "/usr/bin/sh", "../x", "a/b", "./sh", "..", ".", "sh\\x", "x" * 256]
)
async def test_which_refuses_paths(tmp_path: Path, gw: FakeGateway, name: str) -> None:
    """system.which answers names on PATH; a path would let the agent probe the file system."""
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await gw.result_for(await gw.invoke("system.which", {"bins": ["sh", name]}))
    assert not result["ok"], result
    assert result["error"]["code"] == "INVALID_REQUEST", result
    assert "name" in result["error"]["message"]


async def test_which_finds_names_on_path(tmp_path: Path, gw: FakeGateway) -> None:
    """Control: the wire fixture 03a's request still gets 03a's kind of answer."""
    async with running_node(tmp_path, gw):
        await gw.wait_hello(1)
        result = await gw.result_for(
            await gw.invoke("system.which", {"bins": ["sh", "uname", "definitely-not-here"]})
        )
    assert result["ok"], result
    bins = json.loads(result["payloadJSON"])["bins"]
    assert set(bins) == {"sh", "uname"}
    assert all(Path(p).is_absolute() and Path(p).name == n for n, p in bins.items())
