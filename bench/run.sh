#!/usr/bin/env bash
# Run a benchmark inside a loopback-only network namespace with the project's venv:
#   bench/run.sh node_core [--idle 60]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
name=$1; shift
VENV=$("$ROOT/scripts/install-test-deps.sh" | tail -n 1)
"$ROOT/scripts/install-gateway.sh" >/dev/null
export PYTHONPATH="$ROOT"
exec unshare --net --mount --propagation private sh -c \
  'ip link set lo up && exec "$@"' sh "$VENV/bin/python" "$ROOT/bench/$name.py" "$@"
