"""Bring up a real OpenClaw gateway on loopback and an EdgeClaw node on a simulated board, paired.

By default both run inside a network namespace `edgeclaw-demo` that has only loopback (the gateway looks
up a public host after start; nothing leaves the machine). `--host-network` runs them on the host instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETNS = "edgeclaw-demo"


def ensure_netns() -> None:
    if NETNS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host-network", action="store_true", help="do not isolate in a network namespace")
    parser.add_argument("--run-dir", default=str(ROOT / "run" / "demo"))
    args = parser.parse_args()
    if not args.host_network and os.geteuid() != 0:
        print("the loopback-only namespace needs root; re-run with sudo or pass --host-network", file=sys.stderr)
        return 1
    if not args.host_network and "EDGECLAW_IN_NETNS" not in os.environ:
        ensure_netns()
        os.environ["EDGECLAW_IN_NETNS"] = "1"
        os.execvp("ip", ["ip", "netns", "exec", NETNS, sys.executable, *sys.argv])

    from tests.support.gateway import Gateway, install_gateway, wait_for
    from tests.support.node import NodeProcess

    run_dir = Path(args.run_dir)
    gateway = Gateway(install_gateway(), run_dir / "gateway")
    print(f"starting the OpenClaw gateway on {gateway.url} (state in {run_dir}) …", flush=True)
    took = gateway.start()
    print(f"gateway ready in {took:.1f} s", flush=True)
    node = NodeProcess(run_dir / "node", gateway, name="edgeclaw-demo")
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
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        wait_for(lambda: node.live_status().get("pairing") == "approved", 60, what="node paired and approved")
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in gateway.env().items() if k.startswith(("OPENCLAW_", "PATH", "HOME")))
        prefix = "" if args.host_network else f"sudo ip netns exec {NETNS} "
        print("\nEdgeClaw node is paired and approved. Try it (in another terminal):\n", flush=True)
        print(f"  {prefix}env {env} {gateway.openclaw} nodes invoke --node edgeclaw-demo "
              "--command system.which --params '{\"bins\":[\"sh\",\"python3\"]}' --json\n", flush=True)
        print(f"node log: {node.log_path}   status: PYTHONPATH={ROOT} python -m edgeclaw --config {node.config_path} status",
              flush=True)
        print("Ctrl-C stops the node and the gateway.", flush=True)
        while not stop["now"] and node.proc is not None and node.proc.poll() is None:
            time.sleep(0.5)
    finally:
        node.stop()
        gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
