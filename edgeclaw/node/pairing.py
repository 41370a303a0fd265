"""`edgeclaw pair`: create the identity, write the config, connect, and walk the user through both
approvals (device, then command surface), printing the exact operator commands.

It pairs and exits: the node's commands are declared (that is what the operator approves) but none is
served (see paironly), because `pair` usually runs as root."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from edgeclaw.config import Config, load_config
from edgeclaw.node.daemon import Daemon
from edgeclaw.node.setupcode import parse_setup_code
from edgeclaw.platform import events
from edgeclaw.platform.atomicfile import write_atomic
from edgeclaw.platform.state import StateDir


def write_pair_config(
    config_path: str,
    *,
    gateway: str | None,
    display_name: str | None,
    token_file: str | None,
    setup_code: str | None,
    state_dir: str | None,
    runtime_dir: str | None,
    hardware: str | None,
) -> None:
    """Merge the pairing answers into config.yaml (other sections are kept as they are)."""
    path = Path(config_path)
    doc: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            doc = loaded
    gw = doc.setdefault("gateway", {}) or {}
    node = doc.setdefault("node", {}) or {}
    doc["gateway"], doc["node"] = gw, node
    if setup_code:
        code = parse_setup_code(setup_code)
        gw["url"] = gateway or code.url
        if code.tls_fingerprint:
            gw["tls_fingerprint"] = code.tls_fingerprint
        sd = Path(state_dir or node.get("state_dir") or "/var/lib/edgeclaw")
        code_file = sd / "setup-code"
        write_atomic(code_file, setup_code.strip() + "\n", mode=0o600)
        gw["setup_code_file"] = str(code_file.resolve())
    elif gateway:
        gw["url"] = gateway
    if token_file:
        gw["token_file"] = str(Path(token_file).resolve())
    if display_name:
        node["display_name"] = display_name
    if state_dir:
        node["state_dir"] = str(Path(state_dir).resolve())
    if runtime_dir:
        node["runtime_dir"] = str(Path(runtime_dir).resolve())
    if hardware:
        node["hardware"] = hardware
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False), mode=0o644)


ARGV_CODE_WARNING = (
    "edgeclaw pair: warning: --setup-code puts the single-use code on the command line, where every "
    "local user can read it (/proc/<pid>/cmdline) and shell history keeps it; prefer "
    "--setup-code-file FILE (read, then removed once the gateway has taken it)"
)


def read_setup_code_file(path: str) -> str:
    """The code from `--setup-code-file`, checked; ValueError/OSError name the option and the file."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--setup-code-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text:
        raise ValueError(f"--setup-code-file {path}: the file is empty")
    try:
        parse_setup_code(text)
    except ValueError as exc:
        raise ValueError(f"--setup-code-file {path}: {exc}") from None
    return text


async def _pair(config: Config, config_path: str, wait: float, out: Any) -> tuple[int, bool]:
    """Pair; returns the exit status and whether the gateway took the setup code."""
    config.core.gateway = dataclasses.replace(
        config.gateway, pairing_retry_s=min(config.gateway.pairing_retry_s, 3.0)
    )
    daemon = Daemon(config, config_path, serve=False)
    said: set[str] = set()

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name != events.PAIRING:
            return
        stage, rid = fields.get("stage"), fields.get("request_id")
        key = f"{stage}:{rid}"
        if key in said:
            return
        said.add(key)
        if stage == "device-pending":
            print(
                f"1/2 device pairing pending (request {rid}). On the gateway run:\n"
                f"      openclaw devices approve {rid}",
                file=out,
                flush=True,
            )
        elif stage == "surface-pending":
            print(
                f"2/2 connected; the node's commands await approval. On the gateway run:\n"
                f"      openclaw nodes approve {rid}",
                file=out,
                flush=True,
            )
        elif stage == "approved":
            print("paired and approved.", file=out, flush=True)

    daemon.bus.subscribe(on_event)
    main = asyncio.get_running_loop().create_task(daemon.main())
    while daemon.runner is None and not main.done():
        await asyncio.sleep(0.01)
    runner = daemon.runner
    if runner is None:
        return int(main.result()), False
    print(
        f"device id:  {runner.node_id}\npublic key: {runner.identity.public_key_b64url}\n"
        f"connecting to {config.gateway.url} as {runner.display_name!r} …",
        file=out,
        flush=True,
    )
    approved = asyncio.ensure_future(runner.approved_event.wait())
    done, _ = await asyncio.wait({main, approved}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if main in done:
        code = int(main.result())
    elif approved in done:
        print(
            f"done: {runner.display_name} is paired with {config.gateway.url}; start it with "
            "`systemctl enable --now edgeclaw` or `edgeclaw run`.",
            file=out,
            flush=True,
        )
    else:
        print(
            f"not approved within {wait:.0f} s; state: {runner.status.line()}\n"
            "the node keeps its identity: run `edgeclaw pair` again or start the service, "
            "which keeps retrying.",
            file=out,
            flush=True,
        )
        code = 75  # EX_TEMPFAIL
    approved.cancel()
    if not main.done():
        await daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(main, 10)
    return code, runner.setup_code_used


def run_pair(args: Any) -> int:
    from edgeclaw.platform.logsetup import setup_logging
    from edgeclaw.typedconfig import ConfigError

    setup_logging("warning")
    code_file: str | None = getattr(args, "setup_code_file", None)
    if args.setup_code:
        print(ARGV_CODE_WARNING, file=sys.stderr, flush=True)
    try:
        setup_code = read_setup_code_file(code_file) if code_file else args.setup_code
        write_pair_config(
            args.config_path,
            gateway=args.gateway,
            display_name=args.display_name,
            token_file=args.token_file,
            setup_code=setup_code,
            state_dir=args.state_dir,
            runtime_dir=args.runtime_dir,
            hardware=args.hardware,
        )
        config = load_config(args.config_path)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"edgeclaw pair: {exc}", file=sys.stderr)
        return 78
    state = StateDir(config.state_dir)
    if args.reset_identity:
        identity = state.reset_identity()
        print(f"created a new identity {identity.device_id} (the old key was kept beside it)")
    print(f"config written to {args.config_path}")
    code, used = asyncio.run(_pair(config, args.config_path, args.wait, sys.stdout))
    if code_file and used:
        try:
            Path(code_file).unlink(missing_ok=True)  # missing: it was the state-dir copy itself
            print(f"setup code used; removed {code_file}")
        except OSError as exc:
            print(f"setup code used; could not remove {code_file}: {exc.strerror}", file=sys.stderr)
    return code
