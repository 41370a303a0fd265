"""What a `system.run` argv means before it runs: its display text, whether it is a shell wrapper, and the
simple commands ("segments") the allowlist is checked against.

Where argv[0] leads is decided the way the kernel decides it: a bare name through the node's own PATH
(never the request's), a path relative to `cwd` without lexical `..` collapsing, and symlinks resolved by
`realpath`; a program *named* like a shell is treated as one only when its real path is a shell listed
in /etc/shells. Shell payloads are analysed conservatively: a chain of plain commands joined by `;`, `&&`, `||` or `|` is
split into segments; anything the node cannot reason about (redirections, substitutions, variables, globs,
subshells, backgrounding) fails the analysis, which means "needs an explicit approval", never "allowed".
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

SHELL_WRAPPERS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox-sh"})
ETC_SHELLS = "/etc/shells"
# options a non-interactive `sh -c` may carry: -e -u -x -l (login) and -c itself; anything else (-i, -s,
# -o …, --rcfile) changes what the shell reads or runs before the payload, so it is not analysed
_SAFE_SHELL_FLAG = re.compile(r"^-[celux]+$|^--login$")
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
        if not _SAFE_SHELL_FLAG.match(token):
            return None
        flags.append(token)
        if "c" in token[1:] and not token.startswith("--"):
            if index + 1 >= len(argv):
                return None
            return ShellWrapper(payload=argv[index + 1], trailing=argv[index + 2 :], flags=flags)
    return None


def is_shell_wrapper(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) in SHELL_WRAPPERS


def system_shells(path: str = ETC_SHELLS) -> frozenset[str]:
    """Real paths of the shells /etc/shells lists (re-read each time: it is tiny and may change)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return frozenset()
    return frozenset(os.path.realpath(line.strip()) for line in lines if line.strip().startswith("/"))


@dataclass
class Segment:
    """One simple command: its argv and where argv[0] resolves on this node (None: not found).

    `resolved` is the absolute path as the kernel is handed it (no lexical `..` collapsing); `real` is
    what the kernel opens (symlinks and `..` resolved); `via_path` says argv[0] was found by a PATH
    lookup (a bare name, or an absolute path that is exactly what the node's PATH lookup of its basename
    gives, as `system.run.prepare` pins it)."""

    argv: list[str]
    resolved: str | None = None
    real: str | None = None
    via_path: bool = False


@dataclass
class Analysis:
    ok: bool
    segments: list[Segment] = field(default_factory=list)
    reason: str = ""
    shell: ShellWrapper | None = None
    shell_real: str | None = None  # a wrapper: the real system shell that runs it


def resolve_executable(name: str, cwd: str | None, path_env: str) -> str | None:
    """Where the kernel would find argv[0]: a path is taken relative to cwd, a bare name searched on PATH.

    The path is made absolute but never normalised: `dir/link/../x` is where the kernel goes, not `dir/x`."""
    if "/" in name:
        candidate = name if os.path.isabs(name) else os.path.join(cwd or os.getcwd(), name)
        return candidate if _is_executable(candidate) else None
    for directory in path_env.split(os.pathsep):
        if not directory or not os.path.isabs(directory):
            continue  # a relative PATH entry would search the attacker-chosen cwd
        candidate = os.path.join(directory, name)
        if _is_executable(candidate):
            return candidate
    return None


def _found_via_path(name: str, path_env: str) -> bool:
    if "/" not in name:
        return True
    if not os.path.isabs(name) or name != os.path.normpath(name):
        return False
    return resolve_executable(os.path.basename(name), None, path_env) == name


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _segment(argv: list[str], cwd: str | None, path_env: str) -> Segment:
    resolved = resolve_executable(argv[0], cwd, path_env) if argv and argv[0] else None
    return Segment(
        argv=argv,
        resolved=resolved,
        real=os.path.realpath(resolved) if resolved else None,
        via_path=resolved is not None and _found_via_path(argv[0], path_env),
    )


def analyze(argv: list[str], cwd: str | None, path_env: str) -> Analysis:
    """Split the request into segments; a shell wrapper's payload is parsed, a plain argv is one segment.

    A program merely *named* `sh` (say `/tmp/evil/sh`) is not a shell: it is one plain segment that the
    allowlist must cover like any other binary."""
    if not is_shell_wrapper(argv):
        return Analysis(ok=True, segments=[_segment(argv, cwd, path_env)])
    head = _segment(argv, cwd, path_env)
    if head.real is None or head.real not in system_shells():
        return Analysis(ok=True, segments=[head])
    wrapper = parse_shell_wrapper(argv)
    if wrapper is None:
        return Analysis(
            ok=False, reason="shell invocation without a plain inline -c command", shell_real=head.real
        )
    return _analyze_payload(wrapper, head.real, cwd, path_env)


def _analyze_payload(wrapper: ShellWrapper, shell_real: str, cwd: str | None, path_env: str) -> Analysis:
    """The `-c` string, split into the simple commands it chains (or a refusal to guess)."""
    payload = wrapper.payload
    if _UNSAFE_SHELL.search(payload):
        return Analysis(
            ok=False,
            reason="shell payload uses features the node does not analyse",
            shell=wrapper,
            shell_real=shell_real,
        )
    try:
        lexer = shlex.shlex(payload, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        return Analysis(
            ok=False, reason=f"shell payload does not parse: {exc}", shell=wrapper, shell_real=shell_real
        )
    segments: list[Segment] = []
    current: list[str] = []
    for token in tokens:
        if token in _CHAIN_OPERATORS:
            if not current:
                return Analysis(
                    ok=False, reason="empty command in shell chain", shell=wrapper, shell_real=shell_real
                )
            segments.append(_segment(current, cwd, path_env))
            current = []
        elif set(token) <= set(";&|"):
            return Analysis(
                ok=False, reason=f"unsupported shell operator {token!r}", shell=wrapper, shell_real=shell_real
            )
        else:
            current.append(token)
    if current:
        segments.append(_segment(current, cwd, path_env))
    if not segments:
        return Analysis(ok=False, reason="empty shell payload", shell=wrapper, shell_real=shell_real)
    if any("=" in seg.argv[0] for seg in segments):
        return Analysis(
            ok=False, reason="environment assignments in shell payload", shell=wrapper, shell_real=shell_real
        )
    return Analysis(ok=True, segments=segments, shell=wrapper, shell_real=shell_real)
