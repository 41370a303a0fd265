#!/usr/bin/env bash
# Installs Ansible (the PyPI `ansible` package, which carries community.general — Galaxy is not needed)
# and ansible-lint into a venv cached under $EDGECLAW_CACHE, keyed by the versions and the Python.
# Prints the venv's directory on its last line; a second run is a no-op.
set -euo pipefail
. "$(dirname "$0")/retry.sh"
ANSIBLE_VERSION="${ANSIBLE_VERSION:-12.3.0}"          # ansible-core 2.19: the newest line for Python 3.11
ANSIBLE_LINT_VERSION="${ANSIBLE_LINT_VERSION:-26.10.1}"
PYTHON="${PYTHON:-python3}"
CACHE_ROOT="${EDGECLAW_CACHE:-$HOME/.cache/edgeclaw}"
mkdir -p "$CACHE_ROOT"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV="$CACHE_ROOT/ansible-${ANSIBLE_VERSION}-lint-${ANSIBLE_LINT_VERSION}-py${pyver}"
if [ ! -f "$VENV/.complete" ]; then
  echo "installing ansible $ANSIBLE_VERSION and ansible-lint $ANSIBLE_LINT_VERSION into $VENV" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip >&2 2>/dev/null || true
  retry "$VENV/bin/pip" install -q "ansible==$ANSIBLE_VERSION" "ansible-lint==$ANSIBLE_LINT_VERSION" >&2
  "$VENV/bin/ansible-galaxy" collection list community.general >/dev/null 2>&1 \
    || { echo "community.general missing from the ansible package" >&2; exit 1; }
  touch "$VENV/.complete"
fi
echo "$VENV"
