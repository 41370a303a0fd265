"""What a `system.run` argv means before it runs: its display text, whether it is a shell wrapper, and the
simple commands ("segments") the allowlist is checked against.

Shell payloads are analysed conservatively: a chain of plain commands joined by `;`, `&&`, `||` or `|` is
split into segments; anything the node cannot reason about (redirections, substitutions, variables, globs,
subshells, backgrounding) fails the analysis, which means "needs an explicit approval", never "allowed".
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

SHELL_WRAPPERS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox-sh"})
_CHAIN_OPERATORS = frozenset({";", "&&", "||", "|"})
# characters whose meaning the node does not model; their presence makes the analysis fail
_UNSAFE_SHELL = re.compile(r"[$`<>(){}*?\[\]~!#\\\n\r]")
_WHITESPACE_OR_QUOTE = re.compile(r"\s|\"")


def format_exec_command(argv: list[str]) -> str:
    """OpenClaw's `formatExecCommand`: join with spaces, double-quote args with whitespace or `"`."""
    out = []
    for arg in argv:
        if arg == "":
            out.append('""')
        elif _WHITESPACE_OR_QUOTE.search(arg):
            out.append('"' + arg.replace('"', '\\"') + '"')
        else:
            out.append(arg)
    return " ".join(out)


@dataclass
class ShellWrapper:
    """`sh -c PAYLOAD` (also `-lc`, `-l -c`): the payload and anything after it."""

    payload: str
    trailing: list[str]
    flags: list[str]


def parse_shell_wrapper(argv: list[str]) -> ShellWrapper | None:
    """Recognise `<shell> [-l|-e|-x…] -c PAYLOAD [args…]`; None when argv[0] is not a POSIX shell."""
    if not argv or os.path.basename(argv[0]) not in SHELL_WRAPPERS:
        return None
    flags: list[str] = []
    for index in range(1, len(argv)):
        token = argv[index]
        if not token.startswith("-") or token == "-" or token == "--":
            return None
        flags.append(token)
        if "c" in token[1:] and not token.startswith("--"):
            if index + 1 >= len(argv):
                return None
            return ShellWrapper(payload=argv[index + 1], trailing=argv[index + 2 :], flags=flags)
    return None


def is_shell_wrapper(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) in SHELL_WRAPPERS


@dataclass
class Segment:
    """One simple command: its argv and where argv[0] resolves on this node (None: not found)."""

    argv: list[str]
    resolved: str | None = None
    real: str | None = None


@dataclass
class Analysis:
    ok: bool
    segments: list[Segment] = field(default_factory=list)
    reason: str = ""
    shell: ShellWrapper | None = None


def resolve_executable(name: str, cwd: str | None, path_env: str) -> str | None:
    """Where the kernel would find argv[0]: a path is taken relative to cwd, a bare name searched on PATH."""
    if "/" in name:
        candidate = name if os.path.isabs(name) else os.path.join(cwd or os.getcwd(), name)
        return os.path.abspath(candidate) if _is_executable(candidate) else None
    for directory in path_env.split(os.pathsep):
        if not directory:
            continue
        candidate = os.path.join(directory, name)
        if _is_executable(candidate):
            return os.path.abspath(candidate)
    return None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _segment(argv: list[str], cwd: str | None, path_env: str) -> Segment:
    resolved = resolve_executable(argv[0], cwd, path_env) if argv and argv[0] else None
    return Segment(argv=argv, resolved=resolved, real=os.path.realpath(resolved) if resolved else None)


def analyze(argv: list[str], cwd: str | None, path_env: str) -> Analysis:
    """Split the request into segments; a shell wrapper's payload is parsed, a plain argv is one segment."""
    wrapper = parse_shell_wrapper(argv)
    if wrapper is None:
        if is_shell_wrapper(argv):
            return Analysis(ok=False, reason="shell invocation without an inline -c command")
        return Analysis(ok=True, segments=[_segment(argv, cwd, path_env)])
    payload = wrapper.payload
    if _UNSAFE_SHELL.search(payload):
        return Analysis(
            ok=False, reason="shell payload uses features the node does not analyse", shell=wrapper
        )
    try:
        lexer = shlex.shlex(payload, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        return Analysis(ok=False, reason=f"shell payload does not parse: {exc}", shell=wrapper)
    segments: list[Segment] = []
    current: list[str] = []
    for token in tokens:
        if token in _CHAIN_OPERATORS:
            if not current:
                return Analysis(ok=False, reason="empty command in shell chain", shell=wrapper)
            segments.append(_segment(current, cwd, path_env))
            current = []
        elif set(token) <= set(";&|"):
            return Analysis(ok=False, reason=f"unsupported shell operator {token!r}", shell=wrapper)
        else:
            current.append(token)
    if current:
        segments.append(_segment(current, cwd, path_env))
    if not segments:
        return Analysis(ok=False, reason="empty shell payload", shell=wrapper)
    if any("=" in seg.argv[0] for seg in segments):
        return Analysis(ok=False, reason="environment assignments in shell payload", shell=wrapper)
    return Analysis(ok=True, segments=segments, shell=wrapper)
