"""Config validation (file, line and key path; exit 78), state files (atomic, 0600, corrupt identity kept)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclaw.config import is_private_host, load_config, parse_config
from edgeclaw.platform.state import StateDir, StateError
from edgeclaw.typedconfig import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe_and_complete() -> None:
    config = parse_config("node: {display_name: garage}\n")
    assert config.gateway.url == "ws://127.0.0.1:18789"
    assert config.node.display_name == "garage"
    assert config.capabilities["system"].enabled is True


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ("gateway:\n  url: ws://127.0.0.1:1\n  colour: blue\n", 3, "gateway.colour", "unknown key"),
        (
            "node:\n  display_name: x\n  max_concurrent_invokes: many\n",
            3,
            "node.max_concurrent_invokes",
            "integer",
        ),
        ("log:\n  level: loud\n", 2, "log.level", "one of"),
        ("gateway:\n  url: http://gw\n", 2, "gateway.url", "ws://"),
        ("\n\nmystery: {}\n", 3, "mystery", "unknown section"),
        ("gateway:\n  url: ws://example.com:18789\n", 2, "gateway.url", "unencrypted"),
        ("gateway:\n  tls_fingerprint: nothex\n", 2, "gateway.tls_fingerprint", "SHA-256"),
        ("system:\n  notify_hook: notalist\n", 2, "system.notify_hook", "list"),
        ("gateway: [1, 2]\n", 1, "gateway", "mapping"),
        ("node: {display_name: [unclosed\n", 2, "", "not valid YAML"),
    ],
)
def test_config_errors_name_file_line_and_key(text: str, line: int, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="/etc/edgeclaw/config.yaml")
    err = info.value
    assert err.file == "/etc/edgeclaw/config.yaml"
    assert err.line == line, str(err)
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(f"/etc/edgeclaw/config.yaml:{line}: ")


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_missing_token_file_is_reported_with_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"gateway:\n  token_file: {tmp_path}/missing\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.key == "gateway.token_file"


def test_env_overrides_gateway_url_and_token(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("gateway:\n  url: ws://10.0.0.1:18789\n")
    config = load_config(
        str(path),
        env={"EDGECLAW_GATEWAY_URL": "wss://gw.example:443", "EDGECLAW_GATEWAY_TOKEN": "s3cret-token"},
    )
    assert config.gateway.url == "wss://gw.example:443"
    assert config.gateway_token == "s3cret-token"
    assert "s3cret" not in repr(config)


def test_insecure_ws_to_public_host_only_when_allowed() -> None:
    parse_config("gateway:\n  url: ws://example.com\n  allow_insecure_ws: true\n")


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("10.1.2.3", True),
        ("192.168.1.9", True),
        ("gw.local", True),
        ("box.tail1234.ts.net", True),
        ("[::1]", True),
        ("8.8.8.8", False),
        ("gw.example.com", False),
    ],
)
def test_private_hosts(host: str, private: bool) -> None:
    assert is_private_host(host) is private


def test_bad_config_exits_78_with_the_location(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("node:\n  display_name: x\n  bogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "--config", str(path), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 78
    assert f"{path}:3: node.bogus: unknown key" in proc.stderr


# state ------------------------------------------------------------------------------------------------
def test_identity_is_created_0600_and_reloaded_identically(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    first = state.load_or_create_identity()
    assert oct((state.identity_path).stat().st_mode & 0o777) == "0o600"
    again = StateDir(tmp_path / "state").load_identity()
    assert again.device_id == first.device_id and len(first.device_id) == 64


def test_corrupt_identity_is_an_error_and_is_never_replaced(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.load_or_create_identity()
    state.identity_path.write_text("{garbage")
    with pytest.raises(StateError, match="NOT replaced"):
        state.load_identity()
    with pytest.raises(StateError):
        state.create_identity()
    assert state.identity_path.read_text() == "{garbage"


def test_identity_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.load_or_create_identity()
    state.identity_path.chmod(0o644)
    with pytest.raises(StateError, match="0600"):
        state.load_identity()


def test_reset_identity_keeps_the_old_key_and_forgets_the_token(tmp_path: Path) -> None:
    from edgeclaw.platform.state import StoredToken

    state = StateDir(tmp_path)
    old = state.load_or_create_identity()
    state.save_token(StoredToken("ws://gw", old.device_id, "node", [], "tok"))
    new = state.reset_identity()
    assert new.device_id != old.device_id
    assert list(tmp_path.glob("identity.json.replaced-*"))
    assert state.load_token("ws://gw", new.device_id) is None


def test_token_is_scoped_to_gateway_and_device(tmp_path: Path) -> None:
    from edgeclaw.platform.state import StoredToken

    state = StateDir(tmp_path)
    state.save_token(StoredToken("ws://gw:1/", "dev", "node", [], "tok-123456"))
    assert state.load_token("ws://GW:1", "dev") is not None
    assert state.load_token("ws://other:1", "dev") is None
    assert state.load_token("ws://gw:1", "other") is None


def test_corrupt_identity_exits_65(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    StateDir(state_dir).load_or_create_identity()
    (state_dir / "identity.json").write_text("[]")
    (state_dir / "identity.json").chmod(0o600)
    path = tmp_path / "c.yaml"
    path.write_text(f"node:\n  state_dir: {state_dir}\n  runtime_dir: {tmp_path}/run\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclaw", "--config", str(path), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 65
    assert "corrupt" in proc.stderr and json.loads((state_dir / "identity.json").read_text()) == []


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    import io
    import logging

    from edgeclaw.platform.logsetup import REDACTOR, setup_logging

    stream = io.StringIO()
    setup_logging("debug", stream=stream)
    REDACTOR.add("super-secret-token-value")
    log = logging.getLogger("edgeclaw.test")
    log.debug("auth %s", {"token": "super-secret-token-value"})
    try:
        raise ValueError("bad super-secret-token-value")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert "super-secret-token-value" not in text
    assert "sup…[redacted]" in text


def test_journal_format_has_priority_and_no_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from edgeclaw.platform.logsetup import setup_logging

    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    logging.getLogger("edgeclaw.x").warning("hello")
    assert stream.getvalue() == "<4>edgeclaw.x: hello\n"
