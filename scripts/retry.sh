# Sourced by the install and build scripts: `retry CMD…` runs CMD up to EDGECLAW_RETRIES (default 6) times,
# waiting 5, 10, 20, 40, 60 s between attempts (2 min 15 s in all: a CI run saw deb.debian.org refuse
# debootstrap's Release file for longer than the old 35 s and lose a whole tier). Why: one transient mirror or DNS failure (seen: debootstrap's
# "unable to resolve host address 'deb.debian.org'") used to fail a whole test tier.
retry() {
  local attempt=1 max=${EDGECLAW_RETRIES:-6} delay=5 rc
  while :; do
    "$@" && return 0
    rc=$?
    [ "$attempt" -ge "$max" ] && { echo "retry: '$1' failed $attempt times (last exit $rc)" >&2; return "$rc"; }
    echo "retry: '$1' failed (exit $rc), attempt $attempt of $max; again in $delay s" >&2
    sleep "$delay"
    attempt=$((attempt + 1)); delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}
