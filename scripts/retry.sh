# Sourced by the install and build scripts: `retry CMD…` runs CMD up to EDGECLAW_RETRIES (default 4) times,
# waiting 5, 10, 20 s between attempts. Why: one transient mirror or DNS failure (seen: debootstrap's
# "unable to resolve host address 'deb.debian.org'") used to fail a whole test tier.
retry() {
  local attempt=1 max=${EDGECLAW_RETRIES:-4} delay=5 rc
  while :; do
    "$@" && return 0
    rc=$?
    [ "$attempt" -ge "$max" ] && { echo "retry: '$1' failed $attempt times (last exit $rc)" >&2; return "$rc"; }
    echo "retry: '$1' failed (exit $rc), attempt $attempt of $max; again in $delay s" >&2
    sleep "$delay"
    attempt=$((attempt + 1)); delay=$((delay * 2))
  done
}
