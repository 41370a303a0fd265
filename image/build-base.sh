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
# leftovers of interrupted builds (<tarball>.tmp.<pid>[.tar]) whose builder is gone
for f in "$CACHE"/image-base-*.tmp.*; do
  [ -e "$f" ] || continue
  pid=${f##*.tmp.}; pid=${pid%.tar}; pid=${pid%.times}
  if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "removing a stale partial base build: $f"; rm -f "$f"
  fi
done
mapfile -t PKGS < <(grep -v -e '^#' -e '^[[:space:]]*$' "$IMAGE_DIR/packages.txt")
[ -n "${EXTRA_PACKAGES:-}" ] && PKGS+=(${EXTRA_PACKAGES//,/ })
INCLUDE=$(IFS=,; echo "${PKGS[*]}")
EXTRA_ARGS=()
if [ -n "$SNAPSHOT" ]; then
  # Reproducible: one archive state, timestamps clamped to it.
  export SOURCE_DATE_EPOCH=$(date -u -d "$(echo "$SNAPSHOT" | sed -E 's/^(....)(..)(..)T(..)(..)(..)Z$/\1-\2-\3 \4:\5:\6/')" +%s)
  EXTRA_ARGS+=(--aptopt='Acquire::Check-Valid-Until "false"')
fi
# dpkg without fsync (libeatmydata, preloaded into the chroot's dpkg for the build only)
EATMYDATA=/usr/share/mmdebstrap/hooks/eatmydata
[ -d "$EATMYDATA" ] && [ -z "${NO_EATMYDATA:-}" ] && EXTRA_ARGS+=(--hook-dir="$EATMYDATA")
# No manuals, info pages, translations or docs on an appliance's SD card (copyright files stay).
# These go to /etc/dpkg/dpkg.cfg.d/99mmdebstrap, so packages installed later on the card skip them too.
for p in 'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
         'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias' \
         'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
         'path-exclude=/usr/share/lintian/*' 'path-exclude=/usr/share/linda/*'; do
  EXTRA_ARGS+=(--dpkgopt="$p")
done
# Downloaded .debs are kept between base builds (a package-list change re-downloads only what is new).
DEBS="$CACHE/image-debs-$SUITE-$ARCH"
mkdir -p "$DEBS"
TMP="$OUT.tmp.$$"
export EDGECLAW_BASE_TIMES="$TMP.times"
trap 'rm -f "$TMP" "$TMP.tar" "$TMP.times"' EXIT
t0=$(date +%s)
echo "start $t0" > "$EDGECLAW_BASE_TIMES"
log "building base rootfs ($SUITE/$ARCH, ${#PKGS[@]} packages) -> $OUT"
base_mmdebstrap() {  # a failed attempt leaves no partial tarball behind
  rm -f "$TMP.tar"
  mmdebstrap --mode=root --variant=apt --arch="$ARCH" --components="$COMPONENTS" \
  --include="$INCLUDE" \
  --dpkgopt=force-confold --dpkgopt=force-confdef \
  --skip=essential/unlink \
  --setup-hook="$IMAGE_DIR/hooks/setup.sh \"\$1\"" \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $DEBS /var/cache/apt/archives/" \
  --essential-hook="$IMAGE_DIR/hooks/essential.sh \"\$1\"" \
  --customize-hook="sync-out /var/cache/apt/archives $DEBS" \
  --customize-hook="$IMAGE_DIR/hooks/customize.sh \"\$1\"" \
  "${EXTRA_ARGS[@]}" \
  "$SUITE" "$TMP.tar" \
  "deb $MIRROR $SUITE $COMPONENTS" \
  "deb $MIRROR $SUITE-updates $COMPONENTS" \
  "deb $SECURITY_MIRROR $SUITE-security $COMPONENTS"
}
retry base_mmdebstrap
t1=$(date +%s)
zstd -q -T2 -3 --rm "$TMP.tar" -o "$TMP"
mv "$TMP" "$OUT"
t2=$(date +%s)
# the breakdown: hooks wrote "<phase> <epoch>" lines as mmdebstrap reached them
declare -A at=()
while read -r k v; do at[$k]=$v; done < "$EDGECLAW_BASE_TIMES"
span() { [ -n "${at[$1]:-}" ] && [ -n "${at[$2]:-}" ] && echo "$(( at[$2] - at[$1] )) s" || echo "?"; }
at[end]=$t1
log "base rootfs: mmdebstrap $(( t1 - t0 )) s [setup $(span start setup)," \
  "essential set (apt update, download, install) $(span setup essential), other packages $(span essential customize)," \
  "initramfs $(span customize initramfs), cleanup+tar $(span initramfs end)], compress $(( t2 - t1 )) s," \
  "$(du -h "$OUT" | cut -f1)"
rm -f "$EDGECLAW_BASE_TIMES"
trap - EXIT
echo "$OUT"
