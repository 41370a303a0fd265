"""The node's config: YAML on disk, validated into typed objects at start, env overrides for secrets."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from edgeclaw.capabilities.registry import load_capability_modules
from edgeclaw.typedconfig import ConfigError, build, load_yaml_with_lines

DEFAULT_CONFIG_PATH = "/etc/edgeclaw/config.yaml"
EX_CONFIG = 78


@dataclass
class GatewayConfig:
    url: str = "ws://127.0.0.1:18789"
    token_file: str | None = None
    setup_code_file: str | None = None
    tls_fingerprint: str | None = None
    allow_insecure_ws: bool = False
    pairing_retry_s: float = 30.0
    connect_timeout_s: float = 15.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # Dead-link probe: a WebSocket ping after this much inbound silence (0 = off, tick liveness only),
    # and how long to wait for its pong. 10 + 4 s: a cut link or a frozen gateway is seen in <= 14 s
    # (the bound is 15 s; 4 s for a pong is still ~40 × a Wi-Fi round trip). A quiet node fed a tick
    # every 30 s sends 2 pings per tick: 4 a minute.
    ping_interval_s: float = 10.0
    ping_timeout_s: float = 4.0

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"must be a ws:// or wss:// URL, got {self.url!r}", key="gateway.url")
        if parts.scheme == "ws" and not self.allow_insecure_ws and not is_private_host(parts.hostname):
            raise ConfigError(
                f"plain ws:// to the public host {parts.hostname!r} would send the token unencrypted; "
                "use wss:// or set gateway.allow_insecure_ws: true",
                key="gateway.url",
            )
        if self.tls_fingerprint is not None:
            normalise_fingerprint(self.tls_fingerprint)
        if (
            self.pairing_retry_s < 1
            or self.backoff_initial_s <= 0
            or self.backoff_max_s < self.backoff_initial_s
        ):
            raise ConfigError("retry intervals must be positive and max >= initial", key="gateway")
        if self.ping_interval_s != 0 and not 1 <= self.ping_interval_s <= 300:
            raise ConfigError("must be 0 (off) or from 1 to 300 seconds", key="gateway.ping_interval_s")
        if not 1 <= self.ping_timeout_s <= 60:
            raise ConfigError("must be from 1 to 60 seconds", key="gateway.ping_timeout_s")


@dataclass
class SafeModeConfig:
    """Crash-loop safe mode: `failed_starts` starts within `window_s` that died before running
    `healthy_after_s` seconds start the node in safe mode (see README, "Crash loops")."""

    enabled: bool = True
    failed_starts: int = 3  # below the unit's StartLimitBurst=10, so safe mode comes before systemd gives up
    window_s: float = 900.0
    healthy_after_s: float = 60.0

    def validate(self) -> None:
        if not 1 <= self.failed_starts <= 100:
            raise ConfigError("must be between 1 and 100", key="node.safe_mode.failed_starts")
        if not 10 <= self.window_s <= 7 * 86400:
            raise ConfigError("must be between 10 s and 7 days", key="node.safe_mode.window_s")
        if not 1 <= self.healthy_after_s <= 86400:
            raise ConfigError("must be between 1 s and 1 day", key="node.safe_mode.healthy_after_s")


@dataclass
class NodeConfig:
    display_name: str = ""
    state_dir: str = "/var/lib/edgeclaw"
    runtime_dir: str = "/run/edgeclaw"
    hardware: Literal["auto", "simulated"] = "auto"
    max_concurrent_invokes: int = 16
    invoke_queue: int = 64
    stats_interval_s: float = 60.0
    safe_mode: SafeModeConfig = field(default_factory=SafeModeConfig)

    def validate(self) -> None:
        if self.max_concurrent_invokes < 1 or self.invoke_queue < 0:
            raise ConfigError("max_concurrent_invokes must be >= 1 and invoke_queue >= 0", key="node")


@dataclass
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass
class TelemetryConfig:
    textfile: str | None = "/var/lib/prometheus/node-exporter/edgeclaw.prom"  # null turns it off
    metrics_listen: str | None = None  # e.g. 127.0.0.1:9464; loopback only; off by default
    textfile_interval_s: float = 15.0

    def validate(self) -> None:
        if self.textfile is not None and not (
            self.textfile.startswith("/") and self.textfile.endswith(".prom")
        ):
            raise ConfigError(
                "must be an absolute path ending in .prom (node_exporter reads only *.prom)",
                key="telemetry.textfile",
            )
        if self.metrics_listen is not None:
            from edgeclaw.platform.metrics_http import parse_listen

            try:
                parse_listen(self.metrics_listen)
            except ValueError as exc:
                raise ConfigError(str(exc), key="telemetry.metrics_listen") from None
        if not 1 <= self.textfile_interval_s <= 3600:
            raise ConfigError("must be between 1 and 3600 seconds", key="telemetry.textfile_interval_s")


@dataclass
class CoreConfig:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)


@dataclass
class Config:
    """Everything the daemon runs from; `capabilities` maps a config key to that capability's Config."""

    core: CoreConfig
    capabilities: dict[str, Any]
    path: str
    gateway_token: str | None = field(default=None, repr=False)
    setup_code: str | None = field(default=None, repr=False)

    @property
    def gateway(self) -> GatewayConfig:
        return self.core.gateway

    @property
    def node(self) -> NodeConfig:
        return self.core.node

    @property
    def state_dir(self) -> Path:
        return Path(self.core.node.state_dir)

    @property
    def runtime_dir(self) -> Path:
        return Path(self.core.node.runtime_dir)


def is_private_host(host: str) -> bool:
    """Hosts where plain ws:// is acceptable: loopback, private ranges, mDNS and tailnet names."""
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith((".local", ".ts.net", ".localhost")):
        return True
    try:
        addr = ipaddress.ip_address(lowered.strip("[]"))
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_link_local


def normalise_fingerprint(value: str) -> str:
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    text = text.replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError("must be a SHA-256 fingerprint (64 hex digits)", key="gateway.tls_fingerprint")
    return text


def _read_secret(path: str, key: str, file: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key, file=file) from None
    if not text:
        raise ConfigError(f"{path} is empty", key=key, file=file)
    return text


def resolve_config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("EDGECLAW_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Read, validate and resolve the config; raises ConfigError naming file, line and key."""
    env = dict(os.environ) if env is None else env
    file = resolve_config_path(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found (create it with `edgeclaw pair` or --config)", file=file
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", file=file) from None
    return parse_config(text, file=file, env=env)


def parse_config(text: str, *, file: str = "config.yaml", env: dict[str, str] | None = None) -> Config:
    env = {} if env is None else env
    data, lines = load_yaml_with_lines(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of sections", file=file, line=1)
    modules = load_capability_modules()
    core_keys = {"gateway", "node", "log", "telemetry"}
    core_data: dict[str, Any] = {}
    cap_data: dict[str, Any] = {}
    for key, value in data.items():
        if key in core_keys:
            core_data[key] = value
        elif key in modules:
            cap_data[key] = value
        else:
            known = ", ".join(sorted(core_keys | set(modules)))
            raise ConfigError(
                f"unknown section (known: {known})", key=str(key), file=file, line=lines(str(key))
            )
    if "EDGECLAW_GATEWAY_URL" in env:
        core_data.setdefault("gateway", {})
        if core_data["gateway"] is None:
            core_data["gateway"] = {}
        core_data["gateway"] = {**core_data["gateway"], "url": env["EDGECLAW_GATEWAY_URL"]}
    try:
        core = build(CoreConfig, core_data, file=file, lines=lines)
    except ConfigError as exc:
        if not exc.file:
            exc.file = file
        raise
    capabilities = {
        key: build(module.Config, cap_data.get(key), path=key, file=file, lines=lines)
        for key, module in modules.items()
    }
    token = env.get("EDGECLAW_GATEWAY_TOKEN") or None
    if token is None and core.gateway.token_file:
        token = _read_secret(core.gateway.token_file, "gateway.token_file", file)
    setup_code = None
    if core.gateway.setup_code_file and Path(core.gateway.setup_code_file).exists():
        setup_code = _read_secret(core.gateway.setup_code_file, "gateway.setup_code_file", file)
    return Config(core=core, capabilities=capabilities, path=file, gateway_token=token, setup_code=setup_code)
