"""Which environment overrides a `system.run` caller may set, and what the child inherits.

The lists are OpenClaw's `src/infra/host-env-security-policy.json` (openclaw 2026.9.6), so a request that
OpenClaw's own node host refuses is refused here too: interpreter and loader hooks (`NODE_OPTIONS`,
`PYTHONPATH`, `LD_*`, `BASH_FUNC_*` …), `PATH`, and redirects of home, proxy, CA, credential and
package-index settings. Shell wrappers (`sh -c …`) are stricter still: only terminal/locale keys.

That denylist is only the first gate. What is *approved* is an allowlist: an override passes
authorization only when its key is one of DEFAULT_OVERRIDE_KEYS (terminal, locale, time zone) or is
named in the `envKeys` of the allowlist entry that matched (see `not_covered`). An option-smuggling key
such as `TAR_OPTIONS` or `RSYNC_RSH` therefore needs the owner to have said so for that binary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from edgeclaw.capabilities.shell.envlists import (
    BLOCKED_EVERYWHERE,
    BLOCKED_OVERRIDE_ONLY,
    BLOCKED_OVERRIDE_PREFIXES,
    BLOCKED_PREFIXES,
    INHERIT_ALLOWED_OVERRIDE_ONLY,
    SHELL_WRAPPER_ALLOWED,
    SHELL_WRAPPER_ALLOWED_PREFIXES,
)

# What any request may set without the approvals saying more: display and locale only.
DEFAULT_OVERRIDE_KEYS: frozenset[str] = SHELL_WRAPPER_ALLOWED | frozenset({"TZ", "COLUMNS", "LINES"})
# Keys OpenClaw's list lets through that make a common tool load or run other code; refused even under
# `security: full` (an owner who wants them sets them in the service unit). Option keys such as
# TAR_OPTIONS are not here: the override allowlist refuses them unless an entry's `envKeys` names them.
EDGECLAW_BLOCKED: frozenset[str] = frozenset(
    {
        "AWKLIBPATH",
        "AWKPATH",
        "BASH_LOADABLES_PATH",
        "CVS_RSH",
        "GIT_CONFIG",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_PARAMETERS",
        "MANOPT",
        "OPENSSL_MODULES",
        "PERLLIB",
        "PERL_MB_OPT",
        "PERL_MM_OPT",
        "PYTHONWARNINGS",
        "PYTHONINSPECT",
        "PYTHONEXECUTABLE",
        "RSYNC_CONNECT_PROG",
        "RSYNC_RSH",
        "SYSTEMD_EDITOR",
        "SYSTEMD_PAGER",
        "SYSTEMD_PAGERSECURE",
        "WGETRC",
        "LOCPATH",
        "NLSPATH",
    }
)
_PORTABLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CARGO_TARGET_RUNNER = re.compile(r"^CARGO_TARGET_[A-Z0-9_]+_(?:LINKER|RUNNER)$")
# The daemon's own settings and systemd plumbing never reach a child: they may carry the gateway token.
_PRIVATE_PREFIXES: tuple[str, ...] = ("EDGECLAW_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "INVOCATION_ID")
_BLOCKED_INHERITED = BLOCKED_EVERYWHERE | (BLOCKED_OVERRIDE_ONLY - INHERIT_ALLOWED_OVERRIDE_ONLY)


class EnvRejected(ValueError):
    """An override the policy refuses; str() is the operator-facing detail."""


def not_covered(overrides: Mapping[str, str], allowed_keys: frozenset[str] | set[str]) -> list[str]:
    """Override keys that neither the default allowlist nor the matched entries' `envKeys` name."""
    out = []
    for key in overrides:
        upper = key.upper()
        if upper in DEFAULT_OVERRIDE_KEYS or upper.startswith("LC_") or upper in allowed_keys:
            continue
        if upper in ("PAGER", "GIT_PAGER") and overrides[key] == "":
            continue
        out.append(upper)
    return sorted(set(out))


def _blocked_override(upper: str) -> bool:
    if upper == "PATH" or upper in BLOCKED_EVERYWHERE or upper in BLOCKED_OVERRIDE_ONLY:
        return True
    if upper in EDGECLAW_BLOCKED:
        return True
    if any(upper.startswith(p) for p in BLOCKED_PREFIXES + BLOCKED_OVERRIDE_PREFIXES):
        return True
    return bool(_CARGO_TARGET_RUNNER.match(upper))


def check_overrides(env: Mapping[str, object] | None, *, shell_wrapper: bool) -> dict[str, str]:
    """Validate caller overrides; returns the accepted ones or raises EnvRejected naming every bad key."""
    if not env:
        return {}
    blocked: list[str] = []
    invalid: list[str] = []
    bad_value: list[str] = []
    not_for_shell: list[str] = []
    accepted: dict[str, str] = {}
    for raw_key, value in env.items():
        key = raw_key.strip()
        if not isinstance(value, str) or "\x00" in value or "\x00" in key:
            bad_value.append(repr(key or raw_key))
            continue
        if not key or not _PORTABLE_KEY.match(key):
            invalid.append(key or raw_key)
            continue
        upper = key.upper()
        if upper in ("PAGER", "GIT_PAGER") and value in ("", "cat"):
            accepted[key] = ""  # "no pager" is harmless and common
            continue
        if _blocked_override(upper):
            blocked.append(upper)
            continue
        if shell_wrapper and not (
            upper in SHELL_WRAPPER_ALLOWED or any(upper.startswith(p) for p in SHELL_WRAPPER_ALLOWED_PREFIXES)
        ):
            not_for_shell.append(upper)
            continue
        accepted[key] = value
    details = []
    if blocked:
        details.append("blocked override keys: " + ", ".join(sorted(set(blocked))))
    if invalid:
        details.append("invalid non-portable override keys: " + ", ".join(sorted(set(invalid))))
    if bad_value:
        details.append(
            "override values must be strings without NUL bytes: " + ", ".join(sorted(set(bad_value)))
        )
    if not_for_shell:
        details.append(
            "shell wrappers accept only TERM, LANG, LC_*, COLORTERM, NO_COLOR, FORCE_COLOR: "
            + ", ".join(sorted(set(not_for_shell)))
        )
    if details:
        raise EnvRejected("; ".join(details))
    return accepted


def child_environment(overrides: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service's environment minus loader/interpreter hooks, credentials and the daemon's own keys."""
    source = os.environ if base is None else base
    env: dict[str, str] = {}
    for key, value in source.items():
        upper = key.upper()
        if upper in _BLOCKED_INHERITED or any(upper.startswith(p) for p in BLOCKED_PREFIXES):
            continue
        if any(key.startswith(p) for p in _PRIVATE_PREFIXES):
            continue
        env[key] = value
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(overrides)
    return env
