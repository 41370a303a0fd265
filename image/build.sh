#!/usr/bin/env bash
# Build the flashable EdgeClaw arm64 SD-card image (Raspberry Pi 3/3+/4/400/Zero 2 W, CM3/CM4).
#   image/build.sh [--out DIR] [--no-compress]
# Env: EDGECLAW_CACHE (cache dir), SNAPSHOT=YYYYMMDDTHHMMSSZ (pin the Debian archive), EXTRA_PACKAGES
# (comma list, e.g. ffmpeg for USB cameras), ROOT_HEADROOM_MB (free space in the root fs, default 768).
# Steps: cached base rootfs (image/build-base.sh) -> aarch64 wheelhouse (image/wheels.py) -> app layer (cached venv
# dependency layer + EdgeClaw's wheel installed from the host, units, first-boot files) -> FAT + ext4 partitions made from directories (no loop mounts) -> sfdisk -> zstd.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=$REPO_DIR/build/image
COMPRESS=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --no-compress) COMPRESS=; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
BOOT_MB=256
ROOT_HEADROOM_MB=${ROOT_HEADROOM_MB:-768}
T0=$(date +%s)
declare -a TIMINGS=()
step() { local now; now=$(date +%s); TIMINGS+=("$(printf '%-22s %4d s' "$1" $(( now - STEP_T )))"); STEP_T=$now; }
STEP_T=$T0

ensure_host_tools
ensure_binfmt
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)

# 1. base root filesystem (cached by its package list)
BASE=$("$IMAGE_DIR/build-base.sh" | tail -n 1)
step "base rootfs"

# 2. EdgeClaw's wheel (every build) + the aarch64 wheelhouse of its dependencies (cached by their list)
REL_JSON=$(python3 "$IMAGE_DIR/wheels.py" --source "$REPO_DIR" --cache "$CACHE" --out "$OUT/wheel")
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$REL_JSON" "$1"; }
WHEEL=$(field wheel); HOUSE=$(field wheelhouse); VERSION=$(field version)
REQS=$OUT/wheel/requirements.txt
python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["requirements"]))' "$REL_JSON" > "$REQS"
step "wheels"
# dependencies PyPI has no aarch64 wheel of for the card's Python (lgpio): compiled in an arm64 copy of
# the base, cached by sdist and base
for sdist in "$HOUSE"/native/*.tar.gz; do
  if [ -e "$sdist" ]; then "$IMAGE_DIR/native-wheel.sh" "$BASE" "$sdist" "$HOUSE"; fi
done
step "native wheels"
# the venv's dependency layer: cached by the base it is built on, the wheelhouse and the requirements
VENV_KEY=$( { basename "$BASE"; basename "$HOUSE"; ls "$HOUSE"; cat "$REQS"; echo venv-layer-1; } | sha256sum | cut -c1-16)
VENV_LAYER=$CACHE/image-venv-$VENV_KEY.tar.zst

# 3. stage the root filesystem
WORK=$OUT/work
ROOTFS=$WORK/rootfs
# the previous build's tree (1.5 GB of small files) is deleted in the background, not waited for
if [ -e "$WORK" ]; then mv "$WORK" "$OUT/.work-old.$$"; fi
for old in "$OUT"/.work-old.*; do
  if [ -e "$old" ]; then rm -rf "$old" </dev/null >/dev/null 2>&1 & fi
done
mkdir -p "$ROOTFS"
tar -C "$ROOTFS" --zstd -xpf "$BASE" --numeric-owner --xattrs --xattrs-include='*'
step "extract base"

# The card's MBR disk identifier, which names both partitions (PARTUUID=<id>-01/-02): the root spec
# in cmdline.txt, fstab and raspi-firmware's ROOTPART. Random per build, so a Raspberry Pi OS disk on
# the same board (its root is labelled "rootfs" too) is never taken for this card's root; derived
# from the image name under SNAPSHOT= (a reproducible build stays byte-for-byte reproducible).
if [ -n "$SNAPSHOT" ]; then
  DISK_ID=$(printf '%s' "edgeclaw-$VERSION-$SUITE-$ARCH" | sha256sum | cut -c1-8)
else
  DISK_ID=00000000
  while [ "$DISK_ID" = 00000000 ]; do DISK_ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n'); done
fi
ROOT_SPEC=PARTUUID=$DISK_ID-02
export EDGECLAW_DISK_ID=$DISK_ID

# 4. the app layer
[ -s "$VENV_LAYER" ] && step_name="app layer" || step_name="app layer (+venv deps)"
"$IMAGE_DIR/hooks/app-layer.sh" "$ROOTFS" "$WHEEL" "$HOUSE" "$REQS" "$VENV_LAYER"
step "$step_name"

# 5. manifest: package versions, EdgeClaw version, build time
NAME=edgeclaw-$VERSION-$SUITE-$ARCH
python3 "$IMAGE_DIR/manifest.py" "$ROOTFS" --edgeclaw "$VERSION" --base "$(basename "$BASE")" \
  --suite "$SUITE" --snapshot "${SNAPSHOT:-}" > "$OUT/$NAME.manifest.json"

# 6. partitions from directories, then the disk image (nothing is mounted)
FAT=$WORK/firmware
mkdir -p "$FAT"
cp -a "$ROOTFS/boot/firmware/." "$FAT/"
find "$ROOTFS/boot/firmware" -mindepth 1 -delete
install -m 0644 "$IMAGE_DIR/edgeclaw.yaml.example" "$FAT/edgeclaw.yaml.example"
grep -q "root=$ROOT_SPEC .*rootwait" "$FAT/cmdline.txt" || die "cmdline.txt does not boot $ROOT_SPEC: $(cat "$FAT/cmdline.txt")"
rm -f "$WORK/boot.img"
mkfs.vfat -C -F 32 -n RASPIFIRM "$WORK/boot.img" $(( BOOT_MB * 1024 )) >/dev/null
mcopy -s -p -m -i "$WORK/boot.img" "$FAT"/* ::
used_mb=$(( $(du -s --block-size=1M "$ROOTFS" | cut -f1) ))
ROOT_MB=$(( (used_mb * 115 / 100 + ROOT_HEADROOM_MB + 3) / 4 * 4 ))
E2_OPTS=(-q -t ext4 -L rootfs -m 1 -d "$ROOTFS")
if [ -n "$SNAPSHOT" ]; then
  E2_OPTS+=(-U "$(python3 -c 'import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))' "$NAME")" -E hash_seed=00000000-0000-0000-0000-000000000000)
fi
rm -f "$WORK/root.img"
mke2fs "${E2_OPTS[@]}" "$WORK/root.img" "${ROOT_MB}M"
IMG=$OUT/$NAME.img
rm -f "$IMG"
truncate -s $(( (4 + BOOT_MB + ROOT_MB) * 1024 * 1024 )) "$IMG"
sfdisk -q "$IMG" <<EOF
label: dos
label-id: 0x$DISK_ID
unit: sectors
start=$(( 4 * 2048 )), size=$(( BOOT_MB * 2048 )), type=c, bootable
start=$(( (4 + BOOT_MB) * 2048 )), size=$(( ROOT_MB * 2048 )), type=83
EOF
dd if="$WORK/boot.img" of="$IMG" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$IMG" bs=1M seek=$(( 4 + BOOT_MB )) conv=notrunc,sparse status=none
rm -f "$WORK/boot.img" "$WORK/root.img"
# the nspawn test boots this same tree; put the firmware files back where the FAT partition mounts
cp -a "$FAT/." "$ROOTFS/boot/firmware/"
step "assemble"

# 7. compress and checksum
if [ -n "$COMPRESS" ]; then
  rm -f "$IMG.zst"
  zstd -q -T2 -6 -k "$IMG" -o "$IMG.zst"
  (cd "$OUT" && sha256sum "$NAME.img.zst" > "$NAME.img.zst.sha256")
  step "compress"
fi
(cd "$OUT" && sha256sum "$NAME.img" > "$NAME.img.sha256")
ln -sfn "$NAME.img" "$OUT/edgeclaw.img"
ln -sfn "$NAME.manifest.json" "$OUT/edgeclaw.manifest.json"

echo "== image build timings"
for t in "${TIMINGS[@]}"; do echo "  $t"; done
echo "  total                  $(( $(date +%s) - T0 )) s"
ls -l --block-size=M "$OUT"/"$NAME".* | awk '{print "  " $5 "  " $9}'
echo "$IMG"
