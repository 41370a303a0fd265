#!/usr/bin/env bash
# The whole test suite, tier by tier, with each tier's time. Installs what it needs (cached).
#   scripts/test.sh            all tiers
#   scripts/test.sh unit gateway   only those tiers
# Tiers: lint, unit, gateway (real OpenClaw gateway in a loopback-only netns), systemd (real systemd in
# systemd-nspawn), ansible, image. Every test has a bound (pytest-timeout style per-tier `timeout`).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TIERS=("$@")
[ "${#TIERS[@]}" -eq 0 ] && TIERS=(lint unit gateway systemd ansible image)

t0=$(date +%s)
VENV=$("$ROOT/scripts/install-test-deps.sh" | tail -n 1) || { echo "dependency install failed"; exit 1; }
GW=$("$ROOT/scripts/install-gateway.sh" | tail -n 1) || { echo "gateway install failed"; exit 1; }
echo "== setup: $(( $(date +%s) - t0 )) s (venv $VENV, gateway $GW)"
export PATH="$VENV/bin:$PATH" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
RESULTS_DIR=$(mktemp -d)
declare -A TIER_TIME TIER_RC

run_pytest() {  # tier, wall-clock bound in seconds, isolation (none|netns), test paths...
  local tier=$1 bound=$2 iso=$3; shift 3
  local paths=()
  for p in "$@"; do [ -e "$p" ] && paths+=("$p"); done
  if [ "${#paths[@]}" -eq 0 ]; then echo "(no tests for tier $tier yet)"; return 0; fi
  local cmd=(python -m pytest -q -p no:cacheprovider --junitxml="$RESULTS_DIR/$tier.xml" "${paths[@]}")
  if [ "$iso" = netns ]; then
    # Only loopback exists in here (the gateway looks up a public host after start). The openclaw CLI
    # writes camera files to a fixed /tmp/openclaw: give it a private directory there, and leave the
    # host's /tmp as we found it.
    local priv made_oc=0 made_locks=0 rc
    priv=$(mktemp -d)
    [ -e /tmp/openclaw ] || { mkdir -p /tmp/openclaw; made_oc=1; }
    [ -e "/tmp/openclaw-state-locks-$(id -u)" ] || made_locks=1
    timeout --foreground -k 10 "$bound" unshare --net --mount --propagation private \
      sh -c 'ip link set lo up && mount --bind "$0" /tmp/openclaw && exec "$@"' "$priv" "${cmd[@]}"
    rc=$?
    rm -rf "$priv"
    [ $made_oc = 1 ] && rmdir /tmp/openclaw 2>/dev/null
    [ $made_locks = 1 ] && rm -rf "/tmp/openclaw-state-locks-$(id -u)"
    return $rc
  else
    timeout --foreground -k 10 "$bound" "${cmd[@]}"
  fi
}

for tier in "${TIERS[@]}"; do
  s=$(date +%s)
  echo "== tier $tier"
  case $tier in
    lint)    ruff check edgeclaw tests bench && ruff format --check --quiet edgeclaw tests bench; rc=$?
             [ $rc -eq 0 ] && { mypy edgeclaw; rc=$?; } ;;
    unit)    run_pytest unit 900 none tests/unit; rc=$? ;;
    gateway) run_pytest gateway 1800 netns tests/gateway tests/chaos; rc=$? ;;
    systemd) run_pytest systemd 900 none tests/systemd; rc=$? ;;
    ansible) run_pytest ansible 900 none tests/ansible; rc=$? ;;
    image)   run_pytest image 3600 none tests/image; rc=$? ;;
    *) echo "unknown tier $tier"; rc=2 ;;
  esac
  TIER_TIME[$tier]=$(( $(date +%s) - s )); TIER_RC[$tier]=$rc
  echo "== tier $tier: ${TIER_TIME[$tier]} s, exit $rc"
done

echo "== summary (total $(( $(date +%s) - t0 )) s)"
failed=0
for tier in "${TIERS[@]}"; do
  printf '  %-8s %5s s  %s\n' "$tier" "${TIER_TIME[$tier]}" "$([ "${TIER_RC[$tier]}" = 0 ] && echo ok || echo FAILED)"
  [ "${TIER_RC[$tier]}" = 0 ] || failed=1
done
python - "$RESULTS_DIR" <<'PY'
import sys, glob, xml.etree.ElementTree as ET
p = f = s = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        t = int(suite.get("tests", 0)); e = int(suite.get("errors", 0)); x = int(suite.get("failures", 0)); k = int(suite.get("skipped", 0))
        p += t - e - x - k; f += e + x; s += k
print(f"{p} passed, {f} failed" + (f", {s} skipped" if s else ""))
PY
rm -rf "$RESULTS_DIR"
exit $failed
