"""Shell capability, pure parts: command text, shell analysis, env policy, approvals document and matching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeclaw.capabilities.shell import Config
from edgeclaw.capabilities.shell import approvals as ap
from edgeclaw.capabilities.shell.command import analyze, format_exec_command, parse_shell_wrapper
from edgeclaw.capabilities.shell.envpolicy import EnvRejected, check_overrides, child_environment

PATH = os.environ.get("PATH", "/usr/bin:/bin")


def test_command_text_quotes_like_openclaw() -> None:
    assert format_exec_command(["echo", "hello from node"]) == 'echo "hello from node"'
    assert (
        format_exec_command(["sh", "-c", "echo out; echo oops >&2; exit 3"])
        == 'sh -c "echo out; echo oops >&2; exit 3"'
    )
    assert format_exec_command(["printf", "", 'a"b']) == 'printf "" "a\\"b"'
    assert format_exec_command(["uname", "-a"]) == "uname -a"


def test_shell_wrapper_recognised_with_login_flag() -> None:
    wrapper = parse_shell_wrapper(["/bin/sh", "-lc", "echo hi"])
    assert wrapper is not None and wrapper.payload == "echo hi" and wrapper.trailing == []
    assert parse_shell_wrapper(["bash", "-l", "-c", "ls", "x"]).trailing == ["x"]  # type: ignore[union-attr]
    assert parse_shell_wrapper(["echo", "-c", "x"]) is None


def test_analysis_splits_plain_chains_and_refuses_what_it_cannot_model() -> None:
    ok = analyze(["sh", "-c", "echo a && uname -s | cat; true"], None, PATH)
    assert ok.ok and [s.argv for s in ok.segments] == [["echo", "a"], ["uname", "-s"], ["cat"], ["true"]]
    assert all(s.resolved for s in ok.segments)
    for payload in ("echo $HOME", "cat < /etc/passwd", "echo `id`", "sleep 1 &", "ls *", "FOO=1 env", "(id)"):
        assert not analyze(["sh", "-c", payload], None, PATH).ok, payload
    plain = analyze(["uname", "-a"], None, PATH)
    assert plain.ok and plain.segments[0].real == os.path.realpath(plain.segments[0].resolved or "")
    assert analyze(["nope-not-a-binary"], None, PATH).segments[0].resolved is None


def test_env_policy_rejects_hooks_path_and_credentials() -> None:
    with pytest.raises(EnvRejected) as exc:
        check_overrides(
            {"PATH": "/x", "LD_PRELOAD": "a", "BASH_FUNC_x%%": "b", "HTTPS_PROXY": "p"}, shell_wrapper=False
        )
    text = str(exc.value)
    assert "blocked override keys: HTTPS_PROXY, LD_PRELOAD, PATH" in text
    assert "invalid non-portable override keys: BASH_FUNC_x%%" in text
    for key in ("NODE_OPTIONS", "PYTHONPATH", "BASH_ENV", "HOME", "SSL_CERT_FILE", "AWS_SECRET_ACCESS_KEY"):
        with pytest.raises(EnvRejected):
            check_overrides({key: "x"}, shell_wrapper=False)
    assert check_overrides({"FOO": "1", "TERM": "xterm"}, shell_wrapper=False) == {
        "FOO": "1",
        "TERM": "xterm",
    }


def test_shell_wrappers_accept_only_terminal_and_locale_keys() -> None:
    allowed = {
        "TERM": "x",
        "LANG": "C",
        "LC_TIME": "C",
        "COLORTERM": "1",
        "NO_COLOR": "1",
        "FORCE_COLOR": "1",
    }
    assert check_overrides(allowed, shell_wrapper=True) == allowed
    with pytest.raises(EnvRejected, match="FOO"):
        check_overrides({"FOO": "1"}, shell_wrapper=True)


def test_child_environment_drops_secrets_and_loader_hooks() -> None:
    base = {
        "PATH": "/usr/bin",
        "LD_PRELOAD": "/evil.so",
        "EDGECLAW_GATEWAY_TOKEN": "secret",
        "LANG": "C",
        "NODE_OPTIONS": "x",
    }
    env = child_environment({"FOO": "1"}, base)
    assert env == {"PATH": "/usr/bin", "LANG": "C", "FOO": "1"}


def test_normalize_validates_and_assigns_ids() -> None:
    doc = ap.normalize(
        {"version": 1, "agents": {"*": {"allowlist": [{"pattern": " /usr/bin/echo "}, "uname"]}}}
    )
    entries = doc["agents"]["*"]["allowlist"]
    assert [e["pattern"] for e in entries] == ["/usr/bin/echo", "uname"] and all(e["id"] for e in entries)
    bad = [
        ({"version": 2}, "version"),
        ({"defaults": {"security": "sometimes"}}, "defaults.security"),
        ({"agents": {"main": {"ask": "maybe"}}}, "agents.main.ask"),
        ({"agents": {"main": {"allowlist": [{"pattern": ""}]}}}, "pattern"),
        ({"agents": {"main": {"allowlist": [{"pattern": "x", "argPattern": "("}]}}}, "argPattern"),
        ({"defaults": {"allowlist": []}}, "agents"),
        ([], "object"),
    ]
    for doc_bad, needle in bad:
        with pytest.raises(ap.ApprovalsInvalid, match=needle):
            ap.normalize(doc_bad)


def test_resolution_defaults_to_edgeclaw_safe_policy() -> None:
    policy = ap.resolve(ap.default_document(), None)
    assert (policy.security, policy.ask, policy.ask_fallback, policy.rules) == (
        "allowlist",
        "on-miss",
        "deny",
        [],
    )
    policy = ap.resolve({"version": 1}, "main")
    assert (policy.security, policy.ask, policy.ask_fallback) == ("allowlist", "on-miss", "deny")


def test_resolution_agent_over_wildcard_over_defaults() -> None:
    doc = ap.normalize(
        {
            "defaults": {"security": "full", "ask": "off"},
            "agents": {
                "*": {"ask": "always", "allowlist": [{"pattern": "/usr/bin/echo"}]},
                "main": {"security": "allowlist", "allowlist": [{"pattern": "uname"}]},
            },
        }
    )
    main = ap.resolve(doc, "main")
    assert (main.security, main.ask) == ("allowlist", "always")
    assert [r.entry["pattern"] for r in main.rules] == ["/usr/bin/echo", "uname"]
    anon = ap.resolve(doc, None)  # no agentId: the "*" agent and the defaults apply
    assert (anon.security, anon.ask, anon.agent_key) == ("full", "always", "default")
    assert [r.entry["pattern"] for r in anon.rules] == ["/usr/bin/echo"]


def _seg(argv: list[str]):  # type: ignore[no-untyped-def]
    return analyze(argv, None, PATH).segments[0]


def test_allowlist_matching_by_path_glob_name_and_args() -> None:
    rules = [
        ap.Rule("*", e)
        for e in ap.normalize(
            {
                "agents": {
                    "*": {
                        "allowlist": [
                            {"pattern": "/usr/bin/ec*"},
                            {"pattern": "uname", "argPattern": "^-s$"},
                        ]
                    }
                }
            }
        )["agents"]["*"]["allowlist"]
    ]
    assert ap.match_segment(rules, _seg(["echo", "x"])) is rules[0]
    assert ap.match_segment(rules, _seg(["/bin/echo", "x"])) is rules[0]  # real path /usr/bin/echo
    assert ap.match_segment(rules, _seg(["uname", "-s"])) is rules[1]
    assert ap.match_segment(rules, _seg(["uname", "-a"])) is None
    assert ap.match_segment(rules, _seg(["not-installed-anywhere"])) is None
    star = [ap.Rule("*", {"pattern": "*", "id": "1"})]
    assert ap.match_segment(star, _seg(["uname"])) is star[0]


def test_allow_always_rules_bind_exact_arguments() -> None:
    complete, patterns = ap.allow_always_patterns([_seg(["uname", "-s"])])
    assert complete and patterns == [
        {"pattern": os.path.realpath(_seg(["uname"]).resolved or ""), "argPattern": "^\\-s$"}
    ]
    rules = [ap.Rule("main", {**patterns[0], "source": "allow-always", "id": "1"})]
    assert ap.match_segment(rules, _seg(["uname", "-s"])) is rules[0]
    assert ap.match_segment(rules, _seg(["uname", "-s", "-a"])) is None
    no_args = [ap.Rule("main", {"pattern": patterns[0]["pattern"], "source": "allow-always", "id": "2"})]
    assert ap.match_segment(no_args, _seg(["uname", "-s"])) is None  # allow-always without args is too broad
    complete, _ = ap.allow_always_patterns([_seg(["not-installed-anywhere"])])
    assert not complete


def test_policy_snapshot_is_current_until_the_policy_changes() -> None:
    doc = ap.normalize({"agents": {"*": {"allowlist": [{"pattern": "/usr/bin/echo"}]}}})
    snap = ap.resolve(doc, None).snapshot()
    assert snap["allowlistRules"] == [{"pattern": "/usr/bin/echo"}]
    assert ap.snapshot_is_current(snap, ap.resolve(doc, None).snapshot())
    doc["defaults"]["security"] = "deny"
    assert not ap.snapshot_is_current(snap, ap.resolve(doc, None).snapshot())
    assert not ap.snapshot_is_current(None, snap)


def test_store_compare_and_swap_and_file_mode(tmp_path: Path) -> None:
    store = ap.ApprovalsStore(tmp_path)
    first = store.snapshot()
    assert not first.exists and first.file["defaults"]["security"] == "allowlist"
    written = store.write({"version": 1, "defaults": {"security": "full"}}, first.hash)
    assert written.exists and (tmp_path / ap.FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert store.snapshot().hash == written.hash
    with pytest.raises(ap.StaleHash):
        store.write({"version": 1}, first.hash)
    (tmp_path / ap.FILE_NAME).write_text("{not json")
    assert store.snapshot().hash == written.hash  # in force until the node reloads
    assert store.drift() not in (None, written.hash)
    with pytest.raises(ap.ApprovalsInvalid, match="unreadable"):
        store.load()  # a reload of a damaged file refuses everything until it is fixed
    with pytest.raises(ap.ApprovalsInvalid, match="unreadable"):
        store.snapshot()


def test_seed_from_config_applies_once_and_keeps_allow_always(tmp_path: Path) -> None:
    store = ap.ApprovalsStore(tmp_path)
    seed = {
        "version": 1,
        "defaults": {"security": "allowlist", "ask": "off"},
        "agents": {"*": {"allowlist": [{"pattern": "/usr/bin/echo"}]}},
    }
    assert store.apply_seed(seed)
    assert not store.apply_seed(seed)  # unchanged config: operator edits on the board survive restarts
    used = [(ap.resolve(store.snapshot().file, None).rules[0], _seg(["echo", "x"]))]
    store.record_use(used, "echo x", ("default", [{"pattern": "/usr/bin/uname", "argPattern": "^$"}]))
    doc = store.snapshot().file
    assert doc["agents"]["*"]["allowlist"][0]["lastUsedCommand"] == "echo x"
    seed2 = json.loads(json.dumps(seed))
    seed2["agents"]["*"]["allowlist"].append({"pattern": "/usr/bin/date"})
    assert store.apply_seed(seed2)
    doc = store.snapshot().file
    assert [e["pattern"] for e in doc["agents"]["*"]["allowlist"]] == ["/usr/bin/echo", "/usr/bin/date"]
    assert [(e["pattern"], e["source"]) for e in doc["agents"]["default"]["allowlist"]] == [
        ("/usr/bin/uname", "allow-always")
    ]


def test_config_validation_reports_a_bad_document() -> None:
    with pytest.raises(ValueError, match=r"approvals: defaults\.security"):
        Config(approvals={"defaults": {"security": "yes"}}).validate()
    with pytest.raises(ValueError):
        Config(max_concurrency=0).validate()
    Config(approvals={"version": 1}).validate()


def test_arg_pattern_dollar_is_end_of_text_outside_classes_and_escapes() -> None:
    from edgeclaw.capabilities.shell.matching import argument_text, python_regex

    assert python_regex(r"^a\$[$x]b$") == r"^a\$[$x]b\Z"
    assert python_regex(r"^(x|y)$") == r"^(x|y)\Z"
    assert argument_text(["-s", "x"]) == "-s x"
    assert argument_text(["a b"]) is None and argument_text([""]) is None and argument_text(["a\n"]) is None
