#!/usr/bin/env bash
# Build (or reuse from the cache) the base arm64 root filesystem: Debian + kernel + Pi firmware +
# networking + Python, initramfs made once. Prints the tarball's path on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=$(base_tarball)
if [ -s "$OUT" ] && [ -z "${REFRESH:-}" ]; then
  log "base rootfs cached: $OUT"
  echo "$OUT"; exit 0
fi
ensure_host_tools
ensure_binfmt
mkdir -p "$CACHE"
mapfile -t PKGS < <(grep -v -e '^#' -e '^[[:space:]]*$' "$IMAGE_DIR/packages.txt")
[ -n "${EXTRA_PACKAGES:-}" ] && PKGS+=(${EXTRA_PACKAGES//,/ })
INCLUDE=$(IFS=,; echo "${PKGS[*]}")
EXTRA_ARGS=()
if [ -n "$SNAPSHOT" ]; then
  # Reproducible: one archive state, timestamps clamped to it.
  export SOURCE_DATE_EPOCH=$(date -u -d "$(echo "$SNAPSHOT" | sed -E 's/^(....)(..)(..)T(..)(..)(..)Z$/\1-\2-\3 \4:\5:\6/')" +%s)
  EXTRA_ARGS+=(--aptopt='Acquire::Check-Valid-Until "false"')
fi
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
t0=$(date +%s)
log "building base rootfs ($SUITE/$ARCH, ${#PKGS[@]} packages) -> $OUT"
mmdebstrap --mode=root --variant=apt --arch="$ARCH" --components="$COMPONENTS" \
  --include="$INCLUDE" \
  --dpkgopt=force-confold --dpkgopt=force-confdef \
  --setup-hook="$IMAGE_DIR/hooks/setup.sh \"\$1\"" \
  --essential-hook="$IMAGE_DIR/hooks/essential.sh \"\$1\"" \
  --customize-hook="$IMAGE_DIR/hooks/customize.sh \"\$1\"" \
  "${EXTRA_ARGS[@]}" \
  "$SUITE" "$TMP.tar" \
  "deb $MIRROR $SUITE $COMPONENTS" \
  "deb $MIRROR $SUITE-updates $COMPONENTS" \
  "deb $SECURITY_MIRROR $SUITE-security $COMPONENTS"
t1=$(date +%s)
zstd -q -T2 -3 --rm "$TMP.tar" -o "$TMP"
mv "$TMP" "$OUT"
trap - EXIT
log "base rootfs: mmdebstrap $(( t1 - t0 )) s, compress $(( $(date +%s) - t1 )) s, $(du -h "$OUT" | cut -f1)"
echo "$OUT"
