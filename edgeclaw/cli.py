"""The `edgeclaw` command line: run, pair, status, identity (+ commands contributed by other modules)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from edgeclaw import __version__
from edgeclaw.config import resolve_config_path
from edgeclaw.platform.deferimport import UNUSED_BY_THE_NODE, defer

# Modules that add subcommands: each has `register(subparsers)` and sets `func` on its parsers.
EXTRA_COMMAND_MODULES = ("edgeclaw.doctor", "edgeclaw.capabilities.gpio.cli", "edgeclaw.firstboot")


def _cmd_run(args: argparse.Namespace) -> int:
    from edgeclaw.node.daemon import run_daemon

    return run_daemon(args.config_path)


def _cmd_pair(args: argparse.Namespace) -> int:
    from edgeclaw.node.pairing import run_pair

    return run_pair(args)


def _state_and_runtime(config_path: str) -> tuple[Any, Path, Path, str | None]:
    from edgeclaw.config import load_config
    from edgeclaw.typedconfig import ConfigError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return None, Path("/var/lib/edgeclaw"), Path("/run/edgeclaw"), str(exc)
    return config, config.state_dir, config.runtime_dir, None


def _cmd_status(args: argparse.Namespace) -> int:
    from edgeclaw.node.status import read_live_status
    from edgeclaw.platform.state import StateDir, StateError

    config, state_dir, runtime_dir, config_error = _state_and_runtime(args.config_path)
    live = read_live_status(runtime_dir)
    if live is not None:
        doc = {"source": "daemon", **live}
    else:
        state = StateDir(state_dir)
        pairing = state.load_pairing()
        doc = {"source": "state-dir", "connection": "not running", "state_dir": str(state_dir)}
        try:
            identity = state.load_identity()
            doc["device_id"] = identity.device_id
            if config is not None:
                token = state.load_token(config.gateway.url, identity.device_id)
                doc["device_token_stored"] = token is not None
        except StateError as exc:
            doc["identity_error"] = str(exc)
        if config is not None:
            doc["gateway_url"] = config.gateway.url
            doc["display_name"] = config.node.display_name
        doc["pairing"] = (
            "approved"
            if pairing.device_approved and pairing.surface_approved
            else "surface-pending"
            if pairing.device_approved
            else "device-pending"
            if pairing.device_request_id
            else "unknown"
        )
        doc["device_request_id"] = pairing.device_request_id
        doc["surface_request_id"] = pairing.surface_request_id
        doc["withheld_commands"] = pairing.withheld_commands or []
    if config_error:
        doc["config_error"] = config_error
    shell = config.capabilities.get("shell") if config is not None else None
    if shell is not None and getattr(shell, "enabled", False):
        from edgeclaw.capabilities.shell.contained import describe

        doc["shell_isolation"] = describe(shell.isolation, shell.run_socket)[0]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_status(doc)
    return 0 if live is not None else 3  # LSB: 3 = not running


def _ticks(doc: dict[str, Any]) -> str | None:
    if not doc.get("ticks"):
        return None
    last = doc.get("last_tick_at")
    return (
        f"{doc['ticks']} (last {time.strftime('%H:%M:%S', time.localtime(last))})"
        if last
        else str(doc["ticks"])
    )


def _lag(lag: dict[str, float]) -> str | None:
    """The loop's responsiveness: a hung or starved node shows here before its watchdog fires."""
    if not lag:
        return None
    # the keys LoopLag.summary() writes into status.json
    shown = [f"{key} {lag[f'{key}_ms']:.1f} ms" for key in ("p50", "p99", "max") if f"{key}_ms" in lag]
    return " / ".join(shown) or None


def _restarts(doc: dict[str, Any]) -> str | None:
    """Supervised tasks that restarted or are down: a part of the node that crashes shows here."""
    tasks = doc.get("tasks") or {}
    hurt = [
        f"{name} {child.get('state')} ×{child.get('restarts', 0)}"
        + (f" ({child['last_error']})" if child.get("last_error") else "")
        for name, child in sorted(tasks.items())
        if isinstance(child, dict) and (child.get("restarts") or child.get("state") != "running")
    ]
    if not doc.get("task_restarts") and not hurt:
        return None
    return f"{doc.get('task_restarts', 0)}" + (f": {'; '.join(hurt)}" if hurt else "")


def _triggers(doc: dict[str, Any]) -> str | None:
    """Each trigger's fires, suppressions, last and next fire, and the spool's depth."""
    report = (doc.get("capabilities") or {}).get("triggers")
    if not isinstance(report, dict):
        return None
    parts = []
    for name, row in sorted((report.get("triggers") or {}).items()):
        text = f"{name}: fired {row.get('fired', 0)}, suppressed {row.get('suppressed', 0)}"
        if row.get("last_fire"):
            text += f", last {row['last_fire'][11:19]}"
        if row.get("next_fire"):
            text += f", next {row['next_fire'][11:19]}"
        parts.append(text)
    spool = report.get("spool") or {}
    if spool:
        parts.append(f"spool {spool.get('pending', 0)} pending, {spool.get('sent', 0)} sent")
    return "; ".join(parts) or None


def _print_status(doc: dict[str, Any]) -> None:
    since = doc.get("since")
    rows = [
        ("device id", doc.get("device_id")),
        ("display name", doc.get("display_name")),
        ("gateway", doc.get("gateway_url")),
        ("connection", doc.get("connection")),
        ("since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else None),
        ("pairing", doc.get("pairing")),
        (
            "approve device",
            f"openclaw devices approve {doc['device_request_id']}" if doc.get("device_request_id") else None,
        ),
        (
            "approve commands",
            f"openclaw nodes approve {doc['surface_request_id']}" if doc.get("surface_request_id") else None,
        ),
        ("withheld by gateway", ", ".join(doc.get("withheld_commands") or []) or None),
        ("reconnects", doc.get("reconnects")),
        ("invokes", doc.get("invokes")),
        ("system.run isolation", doc.get("shell_isolation")),
        ("gateway ticks", _ticks(doc)),
        ("event-loop lag", _lag(doc.get("loop_lag_ms") or {})),
        ("task restarts", _restarts(doc)),
        ("triggers", _triggers(doc)),
        ("last error", doc.get("last_error")),
        ("safe mode", doc.get("safe_mode")),
        ("waiting for", doc.get("waiting_for")),
        ("reload error", doc.get("reload_error")),
        ("config error", doc.get("config_error")),
        ("identity error", doc.get("identity_error")),
        ("state error", doc.get("state_error")),
    ]
    if doc.get("status_line"):
        print(doc["status_line"])
    for key, value in rows:
        if value is not None:
            print(f"  {key:<20} {value}")


def _cmd_identity(args: argparse.Namespace) -> int:
    from edgeclaw.platform.state import StateDir, StateError

    _config, state_dir, _, _config_error = _state_and_runtime(args.config_path)
    if args.state_dir:
        state_dir = Path(args.state_dir)
    try:
        identity = StateDir(state_dir).load_identity()
    except StateError as exc:
        print(f"edgeclaw identity: {exc}", file=sys.stderr)
        return 65
    doc = {"deviceId": identity.device_id, "publicKey": identity.public_key_b64url}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"device id:  {doc['deviceId']}\npublic key: {doc['publicKey']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeclaw", description="OpenClaw node for small Linux boards")
    parser.add_argument("--version", action="version", version=f"edgeclaw {__version__}")
    parser.add_argument(
        "--config",
        dest="config_opt",
        help="config file (default $EDGECLAW_CONFIG or /etc/edgeclaw/config.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_text: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, aliases=list(aliases))
        p.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    add("run", _cmd_run, "run the node in the foreground (for systemd)", ("node-start",))
    p = add(
        "pair", _cmd_pair, "create the identity, write the config and pair with a gateway", ("node-register",)
    )
    p.add_argument("--gateway", help="gateway URL, e.g. ws://gw.lan:18789")
    p.add_argument("--display-name")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token-file", help="file holding the gateway's shared token")
    auth.add_argument(
        "--setup-code-file",
        help="file holding an oc-pair:// setup code (kept out of argv; removed once used)",
    )
    auth.add_argument("--setup-code", help="an oc-pair:// setup code (visible to all users: prefer the file)")
    p.add_argument("--state-dir")
    p.add_argument("--runtime-dir")
    p.add_argument("--hardware", choices=["auto", "simulated"])
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for both approvals")
    p.add_argument(
        "--reset-identity", action="store_true", help="replace the device key (needs a new approval)"
    )
    p = add("status", _cmd_status, "show connection and pairing state")
    p.add_argument("--json", action="store_true")
    p = add("identity", _cmd_identity, "show the device id and public key")
    p.add_argument("--json", action="store_true")
    p.add_argument("--state-dir")
    for module_name in EXTRA_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    defer(*UNUSED_BY_THE_NODE)  # before argparse: it imports shutil, which imports bz2 and lzma
    args = build_parser().parse_args(argv)  # not held: `run` would keep the parser for months
    args.config_path = resolve_config_path(getattr(args, "config_sub", None) or args.config_opt)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
