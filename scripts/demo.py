"""Bring up a real OpenClaw gateway on loopback and an EdgeClaw node on a simulated board, paired, and
print a short menu of commands that show it off (camera, GPIO, a doorbell trigger, remote diagnostics).

By default both run inside a network namespace `edgeclaw-demo` that has only loopback (the gateway looks
up a public host after start; nothing leaves the machine). `--host-network` runs them on the host instead.

The commands it prints go through small wrappers it writes into the run directory (`run/demo/openclaw`,
`run/demo/invoke`, `run/demo/press`, …), so no line carries environment variables, cache paths or the
gateway token (that stays in the gateway's config file, 0600 under a 0700 run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NETNS = "edgeclaw-demo"
NODE_NAME = "edgeclaw-demo"
MARKER = ".edgeclaw-demo"

# The simulated board: a doorbell button, a door contact, a door-strike relay and a status LED (blinked
# by device.identify), a camera, and a trigger that turns a doorbell press into a photo + the door's state
# sent to the agent.
BOARD: dict[str, Any] = {
    "camera": {"enabled": True, "default_delay_ms": 0, "simulated_width": 1280, "simulated_height": 720},
    "gpio": {
        "enabled": True,
        "pins": {
            "doorbell": {"pin": "GPIO27", "kind": "button", "description": "the doorbell button at the gate"},
            "door": {
                "pin": "GPIO22",
                "kind": "input",
                "pull": "up",
                "active_label": "open",
                "inactive_label": "closed",
                "description": "front door contact",
            },
            "relay": {
                "pin": "GPIO17",
                "kind": "output",
                "safe_state": 0,
                "safe_on_failsafe": True,
                "description": "door strike relay (pulse to open the door)",
            },
            "led": {"pin": "GPIO23", "kind": "output", "safe_state": 0, "description": "status LED"},
        },
    },
    "triggers": {
        "rules": {
            "doorbell": {
                "source": {"gpio": {"pin": "doorbell", "edge": "active"}},
                "actions": [{"snap": {"max_width": 1280, "quality": 80}}, {"read_pins": ["door"]}],
                "message": "{node}: someone rang the doorbell at {time}; the door is {pins[door]}. "
                "Describe who is at the door.",
                "session_key": "doorbell",
                "cooldown_s": 2,
            }
        }
    },
    "diagnostics": {"enabled": True, "identify_pin": "led", "identify_led": ""},
}


def gateway_allowlist() -> list[str]:
    """Exactly the commands this board declares that the gateway withholds from a Linux node unless
    they are allow-listed (its Linux defaults hold system.run/which/notify and desktop commands only:
    node-command-policy in the gateway's dist), from the manifests of the capabilities the board turns
    on. system.run needs no entry; the node's own exec approvals stay deny-by-default."""
    from edgeclaw.capabilities.registry import load_capability_modules

    allow: set[str] = set()
    for key, module in load_capability_modules().items():
        enabled = BOARD.get(key, {}).get("enabled", getattr(module.Config(), "enabled", False))
        if enabled:
            allow.update(module.MANIFEST.needs_gateway_allowlist)
    return sorted(allow)


def ensure_netns() -> None:
    if NETNS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"], check=True)


def prepare_run_dir(run_dir: Path) -> None:
    """A fresh gateway and node each time (a surface approved for an older board would sit pending), in
    a directory only the demo uses: refuse a non-empty directory the demo did not make."""
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / MARKER).exists():
        raise SystemExit(f"{run_dir} is not empty and not a demo run directory; pass another --run-dir")
    for sub in ("gateway", "node"):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    (run_dir / MARKER).write_text("written by scripts/demo.py; removed and rebuilt on each run\n")


def write_script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n# written by EdgeClaw's scripts/demo.py for this demo run\n" + body)
    path.chmod(0o700)


def write_wrappers(run_dir: Path, gateway: Any, node: Any, *, netns: bool) -> list[str]:
    """The demo's short commands, as scripts in the run directory; returns their names."""
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in gateway.env().items())
    enter = f"ip netns exec {NETNS} " if netns else ""
    py = f"env PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)}"
    sim = f"{py} -m edgeclaw.capabilities.gpio.simctl {shlex.quote(str(node.runtime_dir))}"
    write_script(
        run_dir / "openclaw",
        "# the real openclaw CLI, talking to the demo gateway (it reads the token from the gateway's config)\n"
        f'exec {enter}env -i "TERM=${{TERM:-dumb}}" {env} {shlex.quote(str(gateway.openclaw))} "$@"\n',
    )
    write_script(
        run_dir / "invoke",
        "# invoke COMMAND [PARAMS-JSON]: openclaw nodes invoke on the demo node\n"
        '[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 COMMAND [PARAMS-JSON]" >&2; exit 2; }\n'
        'params=${2-}; [ -n "$params" ] || params="{}"\n'
        f'exec "$(dirname "$0")/openclaw" nodes invoke --node {NODE_NAME} --command "$1" --params "$params" --json\n',
    )
    write_script(
        run_dir / "press", f'# press NAME: press and release a simulated input\nexec {sim} press "$@"\n'
    )
    write_script(
        run_dir / "set", f'# set NAME on|off: drive a simulated input and leave it\nexec {sim} set "$@"\n'
    )
    write_script(
        run_dir / "status",
        "# edgeclaw status of the demo node\n"
        f'exec {py} -m edgeclaw --config {shlex.quote(str(node.config_path))} status "$@"\n',
    )
    write_script(
        run_dir / "requests",
        "# what the gateway stored for the doorbell trigger's session: messages and their photos\n"
        f"exec {py} {shlex.quote(str(ROOT / 'scripts' / 'demo.py'))} --requests "
        f'--run-dir {shlex.quote(str(run_dir))} "$@"\n',
    )
    return ["openclaw", "invoke", "press", "set", "status", "requests"]


def shown_path(path: Path) -> str:
    """A path as the demo prints it: relative to where the user is when it is below there."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def anchor(run_dir: Path) -> tuple[Path | None, str]:
    """Where the menu's commands run from (None: here) and how they name the run directory: from the
    repository (run/demo/…) when it is in there, else from here when it is below here, else from its
    parent directory, so each printed command stays short."""
    run, here = run_dir.resolve(), Path.cwd().resolve()
    base = ROOT if run.is_relative_to(ROOT) else here if run.is_relative_to(here) else run.parent
    return (None if base == here else base), str(run.relative_to(base))


def show_requests(run_dir: Path, session: str = "agent:main:doorbell") -> int:
    """The gateway's own record of the trigger's session (chat.history through the real CLI), shortened
    to what a user wants to see: each message, and where the gateway stored each photo."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `run/demo/requests | head` ends quietly
    params = json.dumps({"sessionKey": session, "limit": 20})
    proc = subprocess.run(
        [str(run_dir / "openclaw"), "gateway", "call", "chat.history", "--json", "--params", params],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        print(f"openclaw gateway call chat.history failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    doc = json.loads(proc.stdout[proc.stdout.find("{") :])
    messages = doc.get("messages") or []
    info = doc.get("sessionInfo") or {}
    print(f"{session}: {len(messages)} message(s), agent run {info.get('status') or 'none'}")
    if not messages and info.get("status"):
        print("  the gateway took a request; its turn shows here once the agent run writes it (seconds)")
    elif not messages:
        print(f"  nothing yet: press the doorbell ({shown_path(run_dir / 'press')} doorbell)")
    inbound = run_dir / "gateway" / "state" / "media"
    for msg in messages:
        when = time.strftime("%H:%M:%S", time.localtime(int(msg.get("timestamp") or 0) / 1000))
        texts = [
            c.get("text", "")
            for c in msg.get("content") or []
            if isinstance(c, dict) and c.get("type") == "text"
        ]
        text = " ".join(t.strip() for t in texts if t.strip()) or msg.get("errorMessage") or ""
        print(f"  {when} {msg.get('role')}: {text[:300]}")
        for media in (msg.get("__openclaw") or {}).get("media") or []:
            url = str(media.get("url") or "")
            path = shown_path(inbound / url.removeprefix("media://")) if url.startswith("media://") else url
            print(f"           {media.get('contentType')} {media.get('sizeBytes')} bytes: {path}")
    return 0


def menu(run_dir: Path, *, sudo: bool) -> list[str]:
    cd, rel = anchor(run_dir)
    d = ("sudo " if sudo else "") + rel
    where = "from this directory" if cd is None else "after the cd"
    lines = [
        "",
        f"EdgeClaw node {NODE_NAME!r} is paired and approved on a simulated board: a camera, a doorbell",
        "button, a door contact, a relay, a status LED, and a trigger: doorbell press → photo + door state",
        f"→ agent.request. Try it in another terminal ({where}):",
        "",
        *([f"  cd {shlex.quote(str(cd))}"] if cd is not None else []),
        "  # the node as the gateway sees it (its commands), and a photo from its camera",
        f"  {d}/openclaw nodes describe --node {NODE_NAME}",
        f"  {d}/openclaw nodes camera snap --node {NODE_NAME}",
        "  # GPIO (invoke = openclaw nodes invoke --node ... --command ... --params ...)",
        f'  {d}/invoke gpio.read \'{{"name":"door"}}\'',
        "  # open the door (a contact input), pulse the door strike relay",
        f"  {d}/set door on",
        f'  {d}/invoke gpio.pulse \'{{"name":"relay","ms":500}}\'',
        "  # ring the doorbell: the trigger snaps a photo and wakes the agent",
        f"  {d}/press doorbell",
        f"  {d}/requests",
        "  # remote diagnostics",
        f"  {d}/invoke edgeclaw.logs '{{\"lines\":10}}'",
        f"  {d}/invoke edgeclaw.doctor",
        f"  {d}/invoke device.identify '{{\"seconds\":3}}'",
        f"  {d}/status",
        "",
        "No model is configured: the gateway stores the doorbell's message and photo (see requests above)",
        "and the agent run fails after about 2 minutes of retries. Ctrl-C stops the node and the gateway.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host-network", action="store_true", help="do not isolate in a network namespace")
    parser.add_argument("--run-dir", default=str(ROOT / "run" / "demo"))
    parser.add_argument("--requests", action="store_true", help="show what the demo gateway received")
    args = parser.parse_args()
    if args.requests:
        return show_requests(Path(args.run_dir).absolute())
    if not args.host_network and os.geteuid() != 0:
        print(
            "the loopback-only namespace needs root; re-run with sudo or pass --host-network", file=sys.stderr
        )
        return 1
    if not args.host_network and "EDGECLAW_IN_NETNS" not in os.environ:
        ensure_netns()
        os.environ["EDGECLAW_IN_NETNS"] = "1"
        os.execvp("ip", ["ip", "netns", "exec", NETNS, sys.executable, *sys.argv])

    from tests.support.gateway import Gateway, install_gateway, wait_for
    from tests.support.node import NodeProcess

    run_dir = Path(args.run_dir).absolute()
    prepare_run_dir(run_dir)
    gateway = Gateway(install_gateway(), run_dir / "gateway", allow=gateway_allowlist(), vision_model=True)
    print(f"starting the OpenClaw gateway on {gateway.url} (state in {shown_path(run_dir)}) …", flush=True)
    stop = {"now": False, "serving": False}

    def on_signal(*_: object) -> None:
        """Ctrl-C or SIGTERM: while starting, break out of the wait at once (the finally below stops
        what was started); once serving, end the loop."""
        stop["now"] = True
        if not stop["serving"]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    prom = {"telemetry": {"textfile": str(run_dir / "node" / "edgeclaw.prom")}}
    node = NodeProcess(run_dir / "node", gateway, name=NODE_NAME, extra={**BOARD, **prom})
    try:
        took = gateway.start()
        print(f"gateway ready in {took:.1f} s; pairing the node …", flush=True)
        code = gateway.call(
            "device.pair.setupCode",
            {"bootstrapProfile": "node", "publicUrl": gateway.url, "includeQr": False, "joinUrl": True},
        )["setupCode"]
        code_file = node.base / "setup-code"
        code_file.write_text(code)
        code_file.chmod(0o600)
        node.config["gateway"]["setup_code_file"] = str(code_file)
        node.config["log"]["level"] = "info"
        node.write_config()
        node.start()
        wait_for(
            lambda: node.live_status().get("pairing") == "approved" or node._dead(),
            90,
            what="node paired and approved",
        )
        if node._dead():
            print(f"the node stopped before it was approved; its log: {node.log_path}", file=sys.stderr)
            return 1
        write_wrappers(run_dir, gateway, node, netns=not args.host_network)
        sudo = not args.host_network and bool(os.environ.get("SUDO_USER"))
        print("\n".join(menu(run_dir, sudo=sudo)), flush=True)
        withheld = node.live_status().get("withheld_commands") or []
        if withheld:
            print(f"warning: the gateway withholds {', '.join(withheld)}", file=sys.stderr, flush=True)
        print(f"node log: {shown_path(node.log_path)}", flush=True)
        stop["serving"] = True
        while not stop["now"] and not node._dead():
            time.sleep(0.5)
        if node._dead():
            print(f"the node exited; its log: {node.log_path}", file=sys.stderr)
    except KeyboardInterrupt:
        stop["serving"] = True  # a second Ctrl-C must not break the clean-up
    finally:
        stop["serving"] = True
        print("stopping the node and the gateway …", flush=True)
        node.stop()
        gateway.stop(timeout=10)  # a retrying agent run holds it up; its state is throwaway
    print("demo stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
