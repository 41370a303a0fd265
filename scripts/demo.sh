#!/usr/bin/env bash
# One command: a local real OpenClaw gateway on loopback + this node on a simulated board, paired and
# approved, then prints a ready-to-paste `openclaw nodes invoke` line. Ctrl-C stops both.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV=$("$ROOT/scripts/install-test-deps.sh" | tail -n 1)
"$ROOT/scripts/install-gateway.sh" >/dev/null
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" "$ROOT/scripts/demo.py" "$@"
