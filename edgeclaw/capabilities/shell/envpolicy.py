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

BLOCKED_EVERYWHERE: frozenset[str] = frozenset(
    {
        "NODE_OPTIONS",
        "NODE_PATH",
        "NODE_REDIRECT_WARNINGS",
        "NODE_REPL_EXTERNAL_MODULE",
        "NODE_REPL_HISTORY",
        "NODE_V8_COVERAGE",
        "PYTHONHOME",
        "PYTHONPATH",
        "PERL5LIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "BASHOPTS",
        "BASH_ENV",
        "ENV",
        "KSH_ENV",
        "BROWSER",
        "GIT_ALLOW_PROTOCOL",
        "GIT_EDITOR",
        "GIT_EXTERNAL_DIFF",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_EXEC_PATH",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PROTOCOL_FROM_USER",
        "GIT_SEQUENCE_EDITOR",
        "GIT_TEMPLATE_DIR",
        "GIT_SSL_NO_VERIFY",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "CC",
        "CPP",
        "CXX",
        "CXXCPP",
        "CARGO_BUILD_RUSTC",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTDOC",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "CMAKE_C_COMPILER",
        "CMAKE_CXX_COMPILER",
        "SHELL",
        "SHELLOPTS",
        "PS4",
        "GCONV_PATH",
        "IFS",
        "SSLKEYLOGFILE",
        "JAVA_OPTS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "PYTHONBREAKPOINT",
        "DOTNET_STARTUP_HOOKS",
        "DOTNET_ADDITIONAL_DEPS",
        "FPATH",
        "GLIBC_TUNABLES",
        "MAVEN_OPTS",
        "MAKE",
        "MAKEFLAGS",
        "MFLAGS",
        "SBT_OPTS",
        "GRADLE_OPTS",
        "ANT_OPTS",
        "HGRCPATH",
        "HGEDITOR",
        "HGMERGE",
        "EXINIT",
        "VIMINIT",
        "MYVIMRC",
        "GVIMINIT",
        "LUA_INIT",
        "LUA_INIT_5_1",
        "LUA_INIT_5_2",
        "LUA_INIT_5_3",
        "LUA_INIT_5_4",
        "EMACSLOADPATH",
        "RUBYSHELL",
        "GIT_HOOK_PATH",
        "SVN_EDITOR",
        "SVN_SSH",
        "BZR_EDITOR",
        "BZR_SSH",
        "BZR_PLUGIN_PATH",
        "SUDO_ASKPASS",
        "JULIA_EDITOR",
        "CONFIG_SITE",
        "CONFIG_SHELL",
        "CMAKE_TOOLCHAIN_FILE",
        "CATALINA_OPTS",
        "CORECLR_PROFILER",
        "HELM_PLUGINS",
        "PACKER_PLUGIN_PATH",
        "VAGRANT_VAGRANTFILE",
        "ERL_AFLAGS",
        "ERL_FLAGS",
        "ERL_ZFLAGS",
        "ELIXIR_ERL_OPTIONS",
        "R_ENVIRON",
        "R_PROFILE",
        "R_ENVIRON_USER",
        "R_PROFILE_USER",
        "TCLLIBPATH",
        "HOSTALIASES",
    }
)
BLOCKED_OVERRIDE_ONLY: frozenset[str] = frozenset(
    {
        "HOME",
        "GRADLE_USER_HOME",
        "ZDOTDIR",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_SSH_COMMAND",
        "GIT_SSH",
        "GIT_PROXY_COMMAND",
        "GIT_ASKPASS",
        "GIT_SSL_NO_VERIFY",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "SSH_ASKPASS",
        "LESSOPEN",
        "LESSCLOSE",
        "PAGER",
        "MANPAGER",
        "GIT_PAGER",
        "EDITOR",
        "VISUAL",
        "FCEDIT",
        "SUDO_EDITOR",
        "PROMPT_COMMAND",
        "HISTFILE",
        "PERL5DB",
        "PERL5DBCMD",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "PYTHONSTARTUP",
        "WGETRC",
        "CURL_HOME",
        "CLASSPATH",
        "CFLAGS",
        "CGO_CFLAGS",
        "CGO_LDFLAGS",
        "GOFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CORECLR_PROFILER_PATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "DENO_DIR",
        "BUN_CONFIG_REGISTRY",
        "YARN_RC_FILENAME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "NODE_TLS_REJECT_UNAUTHORIZED",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "DOCKER_HOST",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "PIP_INDEX_URL",
        "PIP_PYPI_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_CONFIG_FILE",
        "PIP_FIND_LINKS",
        "PIP_TRUSTED_HOST",
        "UV_INDEX",
        "UV_INDEX_URL",
        "UV_PYTHON",
        "UV_EXTRA_INDEX_URL",
        "UV_DEFAULT_INDEX",
        "DOCKER_CONTEXT",
        "LIBRARY_PATH",
        "LDFLAGS",
        "CPATH",
        "C_INCLUDE_PATH",
        "CPLUS_INCLUDE_PATH",
        "OBJC_INCLUDE_PATH",
        "GOPROXY",
        "GONOSUMCHECK",
        "GONOSUMDB",
        "GONOPROXY",
        "GOPRIVATE",
        "GOENV",
        "GOPATH",
        "HGRCPATH",
        "PYTHONUSERBASE",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_DIST_ROOT",
        "RUSTUP_DIST_SERVER",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_UPDATE_ROOT",
        "CARGO_HOME",
        "VIRTUAL_ENV",
        "LUA_PATH",
        "LUA_CPATH",
        "GEM_HOME",
        "GEM_PATH",
        "BUNDLE_GEMFILE",
        "COMPOSER_HOME",
        "CONDA_DEFAULT_ENV",
        "CONDA_PREFIX",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_DIRS",
        "XDG_CONFIG_HOME",
        "XDG_DATA_DIRS",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        "XDG_STATE_HOME",
        "AWS_CONFIG_FILE",
        "KUBECONFIG",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AZURE_AUTH_LOCATION",
        "HELM_HOME",
        "ANSIBLE_CONFIG",
        "ANSIBLE_LIBRARY",
        "ANSIBLE_CALLBACK_PLUGINS",
        "ANSIBLE_COLLECTIONS_PATH",
        "ANSIBLE_CONNECTION_PLUGINS",
        "ANSIBLE_FILTER_PLUGINS",
        "ANSIBLE_INVENTORY_PLUGINS",
        "ANSIBLE_LOOKUP_PLUGINS",
        "ANSIBLE_MODULE_UTILS",
        "ANSIBLE_REMOTE_TEMP",
        "ANSIBLE_ROLES_PATH",
        "ANSIBLE_STRATEGY_PLUGINS",
        "R_LIBS_USER",
        "TF_CLI_CONFIG_FILE",
        "TF_PLUGIN_CACHE_DIR",
        "AMQP_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "DATABASE_URL",
        "GH_TOKEN",
        "GITHUB_TOKEN",
        "GITLAB_TOKEN",
        "MONGODB_URI",
        "NODE_AUTH_TOKEN",
        "NPM_TOKEN",
        "REDIS_URL",
        "SSH_AUTH_SOCK",
        "SYSTEMROOT",
        "WINDIR",
    }
)
BLOCKED_OVERRIDE_PREFIXES: tuple[str, ...] = ("GIT_CONFIG_", "NPM_CONFIG_", "CARGO_REGISTRIES_", "TF_VAR_")
BLOCKED_PREFIXES: tuple[str, ...] = ("DYLD_", "LD_", "BASH_FUNC_")
INHERIT_ALLOWED_OVERRIDE_ONLY: frozenset[str] = frozenset(
    {
        "ALL_PROXY",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AZURE_AUTH_LOCATION",
        "CURL_CA_BUNDLE",
        "DOCKER_CERT_PATH",
        "DOCKER_CONTEXT",
        "DOCKER_HOST",
        "DOCKER_TLS_VERIFY",
        "GIT_PAGER",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GRADLE_USER_HOME",
        "HISTFILE",
        "HOME",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "KUBECONFIG",
        "MANPAGER",
        "NODE_EXTRA_CA_CERTS",
        "NODE_TLS_REJECT_UNAUTHORIZED",
        "NO_PROXY",
        "PAGER",
        "REQUESTS_CA_BUNDLE",
        "RUSTUP_DIST_ROOT",
        "RUSTUP_DIST_SERVER",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_UPDATE_ROOT",
        "SSH_AUTH_SOCK",
        "SSL_CERT_DIR",
        "SSL_CERT_FILE",
        "SYSTEMROOT",
        "WINDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_DIRS",
        "XDG_CONFIG_HOME",
        "XDG_DATA_DIRS",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        "XDG_STATE_HOME",
        "ZDOTDIR",
    }
)

SHELL_WRAPPER_ALLOWED: frozenset[str] = frozenset(
    {"TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "COLORTERM", "NO_COLOR", "FORCE_COLOR"}
)
SHELL_WRAPPER_ALLOWED_PREFIXES: tuple[str, ...] = ("LC_",)
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
