"""What an allowlist entry matches: path and bare-name globs, argPattern, and allow-always's exact rules.

Decisions here are made on what the kernel will run (see command.Segment), never on how the request
spells it; docs/shell-approvals.md has the table of rule forms next to OpenClaw's node host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from edgeclaw.capabilities.shell.command import Segment

_JS_REGEX_SPECIAL = re.compile(r"[\\^$.*+?()\[\]{}|/-]")


@dataclass
class Rule:
    agent_key: str
    entry: dict[str, Any]


def rule_key(rule: dict[str, Any]) -> str:
    return "\x00".join((rule.get("pattern", ""), rule.get("argPattern") or "", rule.get("source") or ""))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("~"):
        pattern = os.path.expanduser(pattern)
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def python_regex(arg_pattern: str) -> str:
    """An ECMAScript argPattern in Python's dialect: an unescaped `$` outside a class means end of input
    (as in JavaScript without the m flag), not "before a trailing newline", so it becomes `\\Z`."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(arg_pattern):
        ch = arg_pattern[i]
        if ch == "\\" and i + 1 < len(arg_pattern):
            out.append(arg_pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            ch = r"\Z"
        out.append(ch)
        i += 1
    return "".join(out)


def argument_text(args: list[str]) -> str | None:
    """The space-joined arguments an argPattern reads, or None when joining would be ambiguous.

    `["/tmp/a b"]` and `["/tmp/a", "b"]` join to the same text, and `[]` and `[""]` too; an argument with
    whitespace (including a newline) or an empty one therefore never matches a hand-written argPattern."""
    if any(not a or any(c.isspace() for c in a) for a in args):
        return None
    return " ".join(args)


def _arg_matches(arg_pattern: str, argv: list[str]) -> bool:
    text = argument_text(argv[1:])
    if text is None:
        return False
    try:
        return re.search(python_regex(arg_pattern), text) is not None
    except re.error:
        return False


def _path_candidates(segment: Segment) -> list[str]:
    """What a path rule is matched against: the file the kernel opens (realpath: `..` and symlinks
    resolved), and the path as written only when it has no `.`/`..` parts to collapse lexically."""
    out = [segment.real] if segment.real else []
    given = segment.resolved
    if given and given == os.path.normpath(given) and not given.startswith("//"):
        out.append(given)
    return out


def match_segment(rules: list[Rule], segment: Segment) -> Rule | None:
    """The allowlist rule that covers this simple command, preferring one with a matching argPattern.

    A path (or `~`) pattern is a glob on the resolved path; a bare-name pattern matches only a command
    found through the node's PATH (never `./ls` or `/tmp/evil/ls`)."""
    if segment.resolved is None:
        return None
    path_only: Rule | None = None
    for rule in rules:
        entry = rule.entry
        pattern = str(entry.get("pattern", "")).strip()
        if not pattern:
            continue
        if pattern == "*":
            hit = not entry.get("argPattern") and entry.get("source") != "allow-always"
            if hit:
                return rule
            continue
        rx = _glob_regex(pattern)
        if "/" in pattern or pattern.startswith("~"):
            hit = any(rx.match(p) for p in _path_candidates(segment))
        else:
            hit = segment.via_path and rx.match(os.path.basename(segment.argv[0])) is not None
        if not hit:
            continue
        arg_pattern = entry.get("argPattern")
        if not arg_pattern:
            if entry.get("source") == "allow-always":
                continue  # allow-always is bound to the exact arguments that were approved
            path_only = path_only or rule
            continue
        if _arg_matches(str(arg_pattern), segment.argv):
            return rule
    return path_only


def js_escape(text: str) -> str:
    """Escape for an ECMAScript (and Python) regular expression, so OpenClaw tools read our patterns."""
    return _JS_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def allow_always_patterns(segments: list[Segment]) -> tuple[bool, list[dict[str, str]]]:
    """The exact-command rules allow-always persists: the binary's path plus its exact arguments.

    The path is the one invoked (a multi-call binary's `xzcat`, not the `xz` it links to); arguments that
    cannot be matched unambiguously (whitespace, empty) make the coverage incomplete: approve each run."""
    patterns: dict[str, dict[str, str]] = {}
    for seg in segments:
        text = argument_text(seg.argv[1:])
        if seg.real is None or seg.resolved is None or text is None:
            return False, list(patterns.values())
        path = seg.resolved if seg.resolved == os.path.normpath(seg.resolved) else seg.real
        item = {"pattern": path, "argPattern": "^" + js_escape(text) + "$"}
        patterns[rule_key(item)] = item
    return bool(segments), list(patterns.values())
