"""`edgeclaw doctor [--json]`: every check says pass/warn/fail and, when not pass, the exact fix.

The checks read the config, the state directory, the running daemon's status, the gateway (TCP, TLS pin,
its connect.challenge) and the host (groups, device nodes, backends, the systemd unit). The host is
reached through `Host`, whose root path tests point at a fake tree. Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from edgeclaw.capabilities.base import CapabilityManifest
from edgeclaw.config import Config, load_config, normalise_fingerprint
from edgeclaw.typedconfig import ConfigError

Status = Literal["pass", "warn", "fail"]
MIN_SANE_TIME = 1735689600  # 2025-01-01: a board that thinks it is earlier booted without a clock
SKEW_FAIL_S = 120.0  # the gateway rejects a connect signed further than this from its clock
SKEW_WARN_S = 10.0
PROBE_TIMEOUT_S = 5.0
UNIT = "edgeclaw.service"


@dataclass
class Check:
    id: str
    title: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass
class Host:
    """The machine as the doctor sees it: `root` for /etc and /dev, `user` the service runs as."""

    root: Path = Path("/")
    user: str | None = None
    systemctl: Callable[[list[str]], str | None] | None = None
    which: Callable[[str], str | None] = shutil.which
    has_module: Callable[[str], bool] = field(default=lambda name: importlib.util.find_spec(name) is not None)

    def _table(self, rel: str) -> list[list[str]]:
        try:
            text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    def groups(self) -> dict[str, tuple[int, set[str]]]:
        return {
            r[0]: (int(r[2]), set(filter(None, r[3].split(","))))
            for r in self._table("etc/group")
            if len(r) >= 4 and r[2].isdigit()
        }

    def passwd(self, user: str) -> tuple[int, int] | None:
        for r in self._table("etc/passwd"):
            if len(r) >= 4 and r[0] == user and r[2].isdigit() and r[3].isdigit():
                return int(r[2]), int(r[3])
        return None

    def user_groups(self, user: str) -> set[str]:
        entry = self.passwd(user)
        out = set()
        for name, (gid, members) in self.groups().items():
            if user in members or (entry is not None and entry[1] == gid):
                out.add(name)
        return out

    def group_name(self, gid: int) -> str | None:
        for name, (g, _) in self.groups().items():
            if g == gid:
                return name
        return None

    def glob(self, pattern: str) -> list[Path]:
        rel = pattern.lstrip("/")
        return sorted(self.root.glob(rel))

    def run_systemctl(self, args: list[str]) -> str | None:
        if self.systemctl is not None:
            return self.systemctl(args)
        if not (self.root / "run/systemd/system").is_dir() or shutil.which("systemctl") is None:
            return None
        try:
            out = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None


# config, state, identity ---------------------------------------------------------------------------
def check_config(path: str) -> tuple[Check, Config | None]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        fix = (
            "create it with `edgeclaw pair`, or pass --config"
            if "not found" in exc.message
            else f"edit {exc.file or path} at the line and key named above"
        )
        return Check("config", "config valid", "fail", str(exc), fix), None
    return Check("config", "config valid", "pass", f"{path} is valid"), config


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def check_permissions(config: Config) -> Check:
    state = config.state_dir
    problems: list[str] = []
    fixes: list[str] = []
    mode = _mode(state)
    if mode is None:
        return Check(
            "permissions",
            "state directory and key permissions",
            "fail",
            f"state directory {state} does not exist",
            f"create it: sudo install -d -m 700 -o <service user> {state} (or run `edgeclaw pair`)",
        )
    if mode & 0o022:
        problems.append(f"{state} is writable by others (mode {mode:o})")
        fixes.append(f"chmod 700 {state}")
    secrets = [state / "identity.json", state / "device-token.json"]
    for key in (config.gateway.token_file, config.gateway.setup_code_file):
        if key:
            secrets.append(Path(key))
    for path in secrets:
        m = _mode(path)
        if m is not None and m & 0o077:
            problems.append(f"{path} has mode {m:o}; secrets must be 0600")
            fixes.append(f"chmod 600 {path}")
    if problems:
        return Check(
            "permissions",
            "state directory and key permissions",
            "fail",
            "; ".join(problems),
            " && ".join(fixes),
        )
    return Check(
        "permissions", "state directory and key permissions", "pass", f"{state} and its key files are private"
    )


def check_identity(config: Config) -> Check:
    from edgeclaw.platform.state import StateDir, StateError

    try:
        identity = StateDir(config.state_dir).load_identity()
    except StateError as exc:
        text = str(exc)
        fix = (
            "run `edgeclaw pair` to create one"
            if "no device identity" in text
            else "see the message: the key is never replaced silently"
        )
        return Check("identity", "device identity", "fail", text, fix)
    return Check("identity", "device identity", "pass", f"device id {identity.device_id}")


# clock and gateway ---------------------------------------------------------------------------------
def check_clock(now: float, gateway_ts_ms: int | None, synchronized: bool | None) -> Check:
    title = "clock"
    if now < MIN_SANE_TIME:
        return Check(
            "clock",
            title,
            "fail",
            f"the clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}",
            "enable time sync (sudo timedatectl set-ntp true) or fit an RTC; TLS certificates fail until the clock is right",
        )
    if gateway_ts_ms is not None:
        skew = now - gateway_ts_ms / 1000
        if abs(skew) > SKEW_FAIL_S:
            return Check(
                "clock",
                title,
                "fail",
                f"this clock is {skew:+.0f} s off the gateway's (it allows ±120 s)",
                "enable time sync on both machines: sudo timedatectl set-ntp true",
            )
        if abs(skew) > SKEW_WARN_S:
            return Check(
                "clock",
                title,
                "warn",
                f"this clock is {skew:+.1f} s off the gateway's",
                "enable time sync: sudo timedatectl set-ntp true",
            )
    if synchronized is False:
        return Check(
            "clock",
            title,
            "warn",
            "the kernel clock is not synchronised (no NTP sync yet)",
            "sudo timedatectl set-ntp true (or check chrony/systemd-timesyncd)",
        )
    detail = "plausible" + (" and within 10 s of the gateway" if gateway_ts_ms is not None else "")
    return Check("clock", title, "pass", detail)


@dataclass
class Probe:
    check: Check
    challenge_ts: int | None = None


def _pin_fix(got: str) -> str:
    pretty = ":".join(got[i : i + 2] for i in range(0, len(got), 2)).upper()
    return (
        f"if this is your gateway's certificate (compare on the gateway: openssl x509 -in <cert> -noout "
        f'-fingerprint -sha256), set gateway.tls_fingerprint: "sha256:{pretty}"'
    )


async def probe_gateway(config: Config) -> Probe:
    """TCP, then TLS (CA or pin), then the gateway's connect.challenge — stopping at the first failure."""
    title = "gateway reachable"
    url = config.gateway.url
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
        writer.close()
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        else:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return Probe(
            Check(
                "gateway",
                title,
                "fail",
                f"cannot reach {host}:{port} over TCP: {reason}",
                f"check that the gateway runs and listens on {host}:{port} (openclaw gateway status), "
                "the address in gateway.url, and any firewall between them",
            )
        )
    ctx: ssl.SSLContext | None = None
    via = "TCP"
    if parts.scheme == "wss":
        pin = (
            normalise_fingerprint(config.gateway.tls_fingerprint) if config.gateway.tls_fingerprint else None
        )
        ctx = ssl.create_default_context()
        if pin:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        got, error = await _tls_leaf(host, port, ctx)
        if error is not None and isinstance(error, ssl.SSLCertVerificationError):
            loose = ssl.create_default_context()
            loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
            got, _ = await _tls_leaf(host, port, loose)
            return Probe(
                Check(
                    "gateway",
                    title,
                    "fail",
                    f"TLS certificate of {host}:{port} is not trusted: {error.verify_message}",
                    _pin_fix(got) if got else "install the gateway's CA certificate",
                )
            )
        if error is not None:
            return Probe(
                Check(
                    "gateway",
                    title,
                    "fail",
                    f"TLS handshake with {host}:{port} failed: {error}",
                    "check that the gateway serves TLS on this port (wss://), or use ws:// on a private network",
                )
            )
        if pin and got != pin:
            return Probe(
                Check(
                    "gateway",
                    title,
                    "fail",
                    f"TLS certificate pin mismatch: expected sha256 {pin}, the server presents {got}",
                    _pin_fix(got or ""),
                )
            )
        via = "TLS with pinned certificate" if pin else "TLS"
    try:
        from websockets.asyncio.client import connect

        async with connect(
            url, ssl=ctx, open_timeout=PROBE_TIMEOUT_S, close_timeout=1, compression=None
        ) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), PROBE_TIMEOUT_S))
    except Exception as exc:
        return Probe(
            Check(
                "gateway",
                title,
                "fail",
                f"{url} does not speak the OpenClaw WebSocket protocol: {exc}",
                "check gateway.url (scheme, host, port and path) against `openclaw gateway status`",
            )
        )
    payload = frame.get("payload") if isinstance(frame, dict) else None
    if not (
        isinstance(frame, dict) and frame.get("event") == "connect.challenge" and isinstance(payload, dict)
    ):
        return Probe(
            Check(
                "gateway",
                title,
                "fail",
                f"{url} answered, but not with an OpenClaw connect.challenge",
                "check gateway.url against `openclaw gateway status`",
            )
        )
    ts = payload.get("ts")
    return Probe(
        Check("gateway", title, "pass", f"{url} answered over {via}"), ts if isinstance(ts, int) else None
    )


async def _tls_leaf(host: str, port: int, ctx: ssl.SSLContext) -> tuple[str | None, Exception | None]:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), PROBE_TIMEOUT_S
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return None, exc
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return (hashlib.sha256(der).hexdigest() if der else None), None


# pairing and the gateway's allowlist ---------------------------------------------------------------
def node_state(config: Config) -> tuple[dict[str, Any], str]:
    """The running daemon's status, else what the state directory remembers."""
    from edgeclaw.node.status import read_live_status
    from edgeclaw.platform.state import StateDir, StateError

    live = read_live_status(config.runtime_dir)
    if live is not None:
        return live, "the running node"
    state = StateDir(config.state_dir)
    pairing = state.load_pairing()
    token = None
    with contextlib.suppress(StateError, OSError):
        token = state.load_token(config.gateway.url, state.load_identity().device_id)
    doc = {
        "pairing": "approved"
        if pairing.device_approved and pairing.surface_approved
        else "surface-pending"
        if pairing.device_approved
        else "device-pending"
        if pairing.device_request_id
        else "unknown",
        "device_request_id": pairing.device_request_id,
        "surface_request_id": pairing.surface_request_id,
        "withheld_commands": pairing.withheld_commands or [],
        "device_token_stored": token is not None,
    }
    return doc, "the state directory (node not running)"


def check_pairing(doc: dict[str, Any], source: str) -> Check:
    title = "paired and commands approved"
    stage = doc.get("pairing")
    if stage == "approved":
        return Check("pairing", title, "pass", f"device and command surface approved (per {source})")
    if stage == "surface-pending":
        rid = doc.get("surface_request_id") or "<request id from `openclaw nodes pending`>"
        return Check(
            "pairing",
            title,
            "fail",
            f"paired, but the node's commands await approval (per {source})",
            f"on the gateway: openclaw nodes approve {rid}",
        )
    if stage == "device-pending":
        rid = doc.get("device_request_id") or "<request id from `openclaw devices list`>"
        return Check(
            "pairing",
            title,
            "fail",
            f"the device waits for pairing approval (per {source})",
            f"on the gateway: openclaw devices approve {rid}",
        )
    if doc.get("device_token_stored") or doc.get("connection") == "connected":
        return Check(
            "pairing",
            title,
            "warn",
            f"paired, command approval not yet known (per {source})",
            "start the node (systemctl start edgeclaw) and run the doctor again",
        )
    return Check(
        "pairing",
        title,
        "fail",
        f"not paired with this gateway (per {source})",
        "run `edgeclaw pair --gateway <url> --setup-code <code>` (mint one with `openclaw qr` or device.pair.setupCode)",
    )


def check_withheld(doc: dict[str, Any], source: str, declared_needing_allowlist: list[str]) -> Check:
    title = "gateway allowlist"
    withheld = sorted(set(doc.get("withheld_commands") or []))
    if withheld:
        allow = json.dumps(sorted(set(withheld)))
        return Check(
            "withheld",
            title,
            "fail",
            f"the gateway withholds {', '.join(withheld)} (not in gateway.nodes.commands.allow; per {source})",
            f"on the gateway: openclaw config set gateway.nodes.commands.allow '{allow}' "
            "(merge with existing entries), restart the node, then openclaw nodes approve <id>",
        )
    if declared_needing_allowlist and doc.get("pairing") != "approved":
        return Check(
            "withheld",
            title,
            "warn",
            f"{', '.join(declared_needing_allowlist)} must be in the gateway's allowlist; not yet confirmed",
            f"on the gateway: openclaw config set gateway.nodes.commands.allow '{json.dumps(declared_needing_allowlist)}'",
        )
    return Check(
        "withheld",
        title,
        "pass",
        "the gateway serves every declared command"
        if declared_needing_allowlist
        else "no declared command needs an allowlist entry",
    )


# host access for each capability -------------------------------------------------------------------
def service_user(host: Host) -> str:
    if host.user:
        return host.user
    out = host.run_systemctl(["show", UNIT, "-p", "User", "-p", "LoadState"])
    props = _props(out)
    if props.get("LoadState") == "loaded":
        return props.get("User") or "root"
    return pwd.getpwuid(os.getuid()).pw_name


def check_capability_access(name: str, manifest: CapabilityManifest, host: Host, user: str) -> list[Check]:
    checks: list[Check] = []
    member_of = host.user_groups(user)
    groups = host.groups()
    for group in manifest.groups:
        cid, title = f"{name}.group.{group}", f"{name}: group {group}"
        if user == "root" or group in member_of:
            checks.append(
                Check(cid, title, "pass", f"{user} is in {group}" if user != "root" else "runs as root")
            )
        elif group not in groups:
            checks.append(
                Check(
                    cid,
                    title,
                    "warn",
                    f"there is no {group!r} group on this system",
                    f"the device nodes' own groups are checked below; on Raspberry Pi OS `{group}` exists by default",
                )
            )
        else:
            checks.append(
                Check(
                    cid,
                    title,
                    "fail",
                    f"the service user {user} is not in the {group!r} group",
                    f"sudo usermod -aG {group} {user} && sudo systemctl restart edgeclaw",
                )
            )
    found_any = False
    missing: list[str] = []
    uid_gid = host.passwd(user)
    for pattern in manifest.devices:
        nodes = host.glob(pattern)
        if not nodes:
            missing.append(pattern)
            continue
        found_any = True
        blocked: dict[str, list[str]] = {}
        for node in nodes:
            try:
                st = node.stat()
            except OSError:
                continue
            if (
                user == "root"
                or st.st_mode & 0o006 == 0o006
                or (uid_gid is not None and uid_gid[0] == st.st_uid)
            ):
                continue
            gname = host.group_name(st.st_gid) or str(st.st_gid)
            if gname in member_of and st.st_mode & 0o060 == 0o060:
                continue
            blocked.setdefault(gname, []).append("/" + str(node.relative_to(host.root)))
        cid, title = f"{name}.device.{pattern}", f"{name}: {pattern}"
        if blocked:
            group, paths = next(iter(blocked.items()))
            checks.append(
                Check(
                    cid,
                    title,
                    "fail",
                    f"{user} cannot open {', '.join(paths)} (group {group})",
                    f"sudo usermod -aG {group} {user} && sudo systemctl restart edgeclaw",
                )
            )
        else:
            checks.append(Check(cid, title, "pass", f"{len(nodes)} found, accessible to {user}"))
    if missing:
        status: Status = "warn" if found_any else "fail"
        checks.append(
            Check(
                f"{name}.devices",
                f"{name}: device nodes",
                status,
                f"none of {', '.join(missing)} exist",
                "connect/enable the hardware (raspi-config → Interface Options, dtoverlay in config.txt, "
                "camera ribbon cable) and reboot"
                if status == "fail"
                else "only needed for some hardware; ignore if unused",
            )
        )
    return checks


def check_backends(enabled: Iterable[str], host: Host) -> list[Check]:
    checks = []
    if "camera" in enabled:
        tools = [t for t in ("rpicam-still", "libcamera-still", "ffmpeg") if host.which(t)]
        if host.has_module("picamera2") or tools:
            found = (["picamera2"] if host.has_module("picamera2") else []) + tools
            checks.append(Check("camera.backend", "camera backend", "pass", "available: " + ", ".join(found)))
        else:
            checks.append(
                Check(
                    "camera.backend",
                    "camera backend",
                    "fail",
                    "no camera backend: neither picamera2, rpicam-apps nor ffmpeg",
                    "sudo apt install rpicam-apps ffmpeg (Raspberry Pi OS: python3-picamera2 too)",
                )
            )
    if "gpio" in enabled:
        from edgeclaw.doctor_board import check_pin_factory

        checks.append(check_pin_factory(host, simulated=False))
    return checks


def check_systemd(host: Host) -> list[Check]:
    out = host.run_systemctl(["show", UNIT, "-p", "LoadState", "-p", "WatchdogUSec", "-p", "FragmentPath"])
    if out is None:
        return []
    props = _props(out)
    if props.get("LoadState") != "loaded":
        user_props = _props(host.run_systemctl(["--user", "show", UNIT, "-p", "LoadState"]))
        if user_props.get("LoadState") == "loaded":
            return [
                Check(
                    "systemd.unit",
                    "systemd unit",
                    "fail",
                    f"{UNIT} is a user unit: it stops when you log out",
                    "install it as a system unit (sudo cp systemd/edgeclaw.service /etc/systemd/system/ && "
                    "sudo systemctl enable --now edgeclaw), or keep it with: loginctl enable-linger $USER",
                )
            ]
        return [
            Check(
                "systemd.unit",
                "systemd unit",
                "warn",
                f"no {UNIT} installed: nothing restarts the node",
                "sudo cp systemd/edgeclaw.service /etc/systemd/system/ && sudo systemctl enable --now edgeclaw",
            )
        ]
    checks = [Check("systemd.unit", "systemd unit", "pass", f"system unit {props.get('FragmentPath', UNIT)}")]
    watchdog = props.get("WatchdogUSec", "0")
    if watchdog in ("0", "infinity", ""):
        checks.append(
            Check(
                "systemd.watchdog",
                "systemd watchdog",
                "warn",
                "WatchdogSec is not set: a hung node is not restarted",
                "sudo systemctl edit edgeclaw → [Service] WatchdogSec=30s",
            )
        )
    else:
        checks.append(Check("systemd.watchdog", "systemd watchdog", "pass", f"WatchdogSec={watchdog}"))
    return checks


def _props(text: str | None) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# board health ----------------------------------------------------------------------------------------
TEMP_WARN_C = 75.0  # the Pi firmware starts soft-throttling at 80 °C (60 °C on some boards' config)
TEMP_FAIL_C = 85.0  # hard throttling


def check_board_health(root: Path) -> Check:
    """CPU temperature, under-voltage/throttling flags and SD/eMMC wear: the same readers as
    device.status (board health lives there and here, never in node.host.stats' closed schema)."""
    from edgeclaw.capabilities.device import health

    problems: list[tuple[Status, str]] = []
    facts: list[str] = []
    temp = health.cpu_temperature(health.temperatures(root))
    if temp is not None:
        facts.append(f"CPU {temp:.1f} °C")
        if temp >= TEMP_FAIL_C:
            problems.append(("fail", f"CPU at {temp:.1f} °C (hard throttling)"))
        elif temp >= TEMP_WARN_C:
            problems.append(("warn", f"CPU at {temp:.1f} °C"))
    throttle = health.throttling(root, None)
    if throttle is not None:
        facts.append(f"throttled {throttle['raw']}")
        if throttle["under_voltage_now"]:
            problems.append(("fail", "under-voltage now"))
        elif throttle["now"]:
            problems.append(("warn", f"now: {', '.join(throttle['now'])}"))
        if throttle["since_boot"]:
            problems.append(("warn", f"since boot: {', '.join(throttle['since_boot'])}"))
    for dev in health.storage(root):
        wear = [dev.get("life_used_a"), dev.get("life_used_b")]
        facts.append(f"{dev['device']} wear {'/'.join(w for w in wear if w) or 'not reported'}")
        if "exceeded" in wear or dev.get("pre_eol") == "urgent":
            problems.append(
                ("fail", f"{dev['device']} is worn out (life {wear}, pre-EOL {dev.get('pre_eol')})")
            )
        elif any(w and w.startswith("90-") for w in wear) or dev.get("pre_eol") == "warning":
            problems.append(("warn", f"{dev['device']} is near the end of its life"))
    fix = "check the power supply (5.1 V, 3 A on a Pi 4/5), cooling, and replace a worn SD card"
    if not facts:
        return Check(
            "board", "board health", "pass", "no temperature, throttling or wear sensors on this board"
        )
    if problems:
        worst: Status = "fail" if any(st == "fail" for st, _ in problems) else "warn"
        return Check("board", "board health", worst, "; ".join(p for _, p in problems), fix)
    return Check("board", "board health", "pass", ", ".join(facts))


# putting it together -------------------------------------------------------------------------------
def run_checks(
    config_path: str, host: Host | None = None, *, now: Callable[[], float] = time.time
) -> list[Check]:
    host = host or Host()
    check, config = check_config(config_path)
    checks = [check]
    if config is None:
        return checks
    checks.append(check_permissions(config))
    checks.append(check_identity(config))
    probe = asyncio.run(probe_gateway(config))
    from edgeclaw.capabilities.device.live import kernel_clock_state

    state = kernel_clock_state()
    checks.append(check_clock(now(), probe.challenge_ts, None if state is None else state != 5))
    checks.append(probe.check)
    doc, source = node_state(config)
    checks.append(check_pairing(doc, source))
    from edgeclaw.capabilities.registry import load_capability_modules

    modules = load_capability_modules()
    enabled = [
        k for k, section in config.capabilities.items() if getattr(section, "enabled", False) and k in modules
    ]
    needing = sorted({c for k in enabled for c in modules[k].MANIFEST.needs_gateway_allowlist})
    checks.append(check_withheld(doc, source, needing))
    shell = config.capabilities.get("shell")
    if shell is not None and getattr(shell, "enabled", False):
        from edgeclaw.capabilities.shell.contained import describe

        detail, ok = describe(shell.isolation, shell.run_socket)
        fix = "systemctl enable --now edgeclaw-run.socket (or shell.isolation: auto)"
        checks.append(Check("shell.isolation", "system.run isolation", "pass" if ok else "fail", detail, fix))
    if config.node.hardware == "simulated":
        checks.append(
            Check("hardware", "hardware access", "pass", "simulated hardware: no devices or groups needed")
        )
        if "gpio" in enabled:
            from edgeclaw.doctor_board import check_pin_factory

            checks.append(check_pin_factory(host, simulated=True))
    else:
        user = service_user(host)
        for key in enabled:
            checks.extend(check_capability_access(key, modules[key].MANIFEST, host, user))
        checks.extend(check_backends(enabled, host))
        if "camera" in enabled:
            from edgeclaw.doctor_board import check_camera_os

            checks.extend(check_camera_os(config.capabilities["camera"], host))
    checks.append(check_board_health(host.root))
    checks.extend(check_systemd(host))
    return checks


def render(checks: list[Check]) -> str:
    label = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"{label[c.status]}  {c.title}: {c.detail}")
        if c.fix and c.status != "pass":
            lines.append(f"      fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("fail", "warn", "pass")}
    lines.append(f"{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed")
    return "\n".join(lines)


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config_path, Host(user=args.user))
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render(checks))
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="check config, pairing, gateway and board access; print exact fixes"
    )
    p.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--user", help="the user the service runs as (default: the unit's User=, else you)")
    p.set_defaults(func=_cmd_doctor)
