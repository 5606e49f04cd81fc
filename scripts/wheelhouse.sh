#!/usr/bin/env bash
# Build a folder of wheels for installing a station without internet (the clinic is offline; a
# laptop with internet prepares it): smearscope itself plus every dependency, for the target's
# CPU and Python. Then on the station:  sudo scripts/install.sh --wheelhouse /media/usb/wheels
#
#   scripts/wheelhouse.sh [--target pi|jetson|x86_64] [--python 3.11] [--role device|hub] OUT_DIR
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=pi
PYVER=3.11
ROLE=device
PIP="${PIP:-python3 -m pip}"
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET="$2"; shift 2 ;;
    --python) PYVER="$2"; shift 2 ;;
    --role) ROLE="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    -*) echo "wheelhouse.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "wheelhouse.sh: give the output folder" >&2; exit 2; }
case "$TARGET" in
  pi|jetson) PLATFORMS=(manylinux_2_27_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64) ;;
  x86_64) PLATFORMS=(manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64) ;;
  *) echo "wheelhouse.sh: --target must be pi, jetson or x86_64" >&2; exit 2 ;;
esac
EXTRA=device
[ "$ROLE" = hub ] && EXTRA=hub
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

echo "==> smearscope wheel"
# shellcheck disable=SC2086  # PIP may be "python3 -m pip"
$PIP wheel --no-deps --wheel-dir "$OUT" "$SRC"
WHEEL="$(find "$OUT" -maxdepth 1 -name 'smearscope-*.whl' -newer "$SRC/pyproject.toml" | sort | tail -n1)"
[ -n "$WHEEL" ] || WHEEL="$(find "$OUT" -maxdepth 1 -name 'smearscope-*.whl' | sort | tail -n1)"

echo "==> dependencies for $TARGET, Python $PYVER"
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done
EXTRA_REQS=()
[ "$TARGET" = pi ] && [ "$ROLE" = device ] && EXTRA_REQS+=(simplejpeg)   # see install.sh (picamera2 + numpy 2)
[ "$TARGET" = jetson ] && [ "$ROLE" = device ] && EXTRA_REQS+=("numpy<2")  # JetPack's OpenCV needs numpy 1.x
# shellcheck disable=SC2086
$PIP download --only-binary=:all: "${PLAT_ARGS[@]}" --python-version "$PYVER" --implementation cp \
  --dest "$OUT" "${WHEEL}[$EXTRA]" "${EXTRA_REQS[@]}"
echo "==> $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1))"
