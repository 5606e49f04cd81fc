#!/usr/bin/env bash
# Build a folder of wheels for installing a station without internet (the clinic is offline; a
# laptop with internet prepares it): smearscope itself plus every dependency, for the target's
# CPU and Python. Then on the station:  sudo scripts/install.sh --wheelhouse /media/usb/wheels
#
#   scripts/wheelhouse.sh [--target pi|jetson|x86_64] [--python 3.11|3.13] [--role device|hub]
#                         [--glibc 2.36] OUT_DIR
# --glibc: the target OS's glibc (Pi OS Bookworm 2.36, Trixie 2.41, JetPack 6 2.35); default 2.36,
# 2.41 with --python 3.13. Wheels for that glibc or older are taken.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=pi
PYVER=3.11
ROLE=device
GLIBC=""
PIP="${PIP:-python3 -m pip}"
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET="$2"; shift 2 ;;
    --python) PYVER="$2"; shift 2 ;;
    --role) ROLE="$2"; shift 2 ;;
    --glibc) GLIBC="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "wheelhouse.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "wheelhouse.sh: give the output folder" >&2; exit 2; }
case "$PYVER" in
  3.11|3.12|3.13) ;;
  *) echo "wheelhouse.sh: smearscope needs Python 3.11-3.13 (JetPack 6's 3.10: see docs/admin-guide.md)" >&2
     exit 2 ;;
esac
case "$TARGET" in
  pi|jetson) ARCH=aarch64 ;;
  x86_64) ARCH=x86_64 ;;
  *) echo "wheelhouse.sh: --target must be pi, jetson or x86_64" >&2; exit 2 ;;
esac
if [ -z "$GLIBC" ]; then GLIBC=2.36; [ "$PYVER" = 3.13 ] && GLIBC=2.41; fi
[[ "$GLIBC" =~ ^2\.([0-9]+)$ ]] || { echo "wheelhouse.sh: --glibc must look like 2.36" >&2; exit 2; }
# pip takes exactly the tags it is given: list every glibc from the target's down to manylinux2014.
PLATFORMS=()
for ((m = BASH_REMATCH[1]; m >= 17; m--)); do PLATFORMS+=("manylinux_2_${m}_${ARCH}"); done
PLATFORMS+=("manylinux2014_${ARCH}")
EXTRA=device
[ "$ROLE" = hub ] && EXTRA=hub
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

echo "==> smearscope wheel"
# shellcheck disable=SC2086  # PIP may be "python3 -m pip"
$PIP wheel --no-deps --wheel-dir "$OUT" "$SRC"
WHEEL="$(find "$OUT" -maxdepth 1 -name 'smearscope-*.whl' -newer "$SRC/pyproject.toml" | sort | tail -n1)"
[ -n "$WHEEL" ] || WHEEL="$(find "$OUT" -maxdepth 1 -name 'smearscope-*.whl' | sort | tail -n1)"

echo "==> dependencies for $TARGET ($ARCH, glibc $GLIBC), Python $PYVER"
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done
EXTRA_REQS=()
[ "$TARGET" = pi ] && [ "$ROLE" = device ] && EXTRA_REQS+=(simplejpeg)   # see install.sh (picamera2 + numpy 2)
# JetPack's OpenCV (used instead of pip's, for GStreamer) needs numpy 1.x; pip then takes OpenCV 4.11
[ "$TARGET" = jetson ] && [ "$ROLE" = device ] && EXTRA_REQS+=("numpy<2")
# shellcheck disable=SC2086
$PIP download --only-binary=:all: "${PLAT_ARGS[@]}" --python-version "$PYVER" --implementation cp \
  --abi "cp${PYVER/./}" \
  --dest "$OUT" "${WHEEL}[$EXTRA]" "${EXTRA_REQS[@]}"
echo "==> $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1))"
