#!/usr/bin/env bash
# One command: a local real OpenClaw gateway on loopback + this node on a simulated board (camera, GPIO,
# a doorbell trigger, remote diagnostics), paired and approved, then prints short commands to try
# (wrappers it writes into run/demo/). Ctrl-C stops both.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV=$("$ROOT/scripts/install-test-deps.sh" | tail -n 1)
"$ROOT/scripts/install-gateway.sh" >/dev/null
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" "$ROOT/scripts/demo.py" "$@"
