#!/bin/sh
# Re-sign every shipped bundle in models/ with the project release key, then verify them against the
# public key shipped in device/models/keys/. Run after retraining/re-converting a bundle:
#     make sign-shipped KEY=/work/keys/smearscope-project.key
set -eu
KEY="${1:?usage: scripts/sign-shipped.sh PRIVATE_KEY [MODELS_DIR]}"
MODELS="${2:-models}"
BIN="${BIN:-.venv/bin}"
bundles=$(find "$MODELS" -mindepth 2 -maxdepth 2 -name manifest.json -exec dirname {} \; | sort)
[ -n "$bundles" ] || { echo "no bundles in $MODELS" >&2; exit 1; }
# shellcheck disable=SC2086  # one argument per bundle folder (names have no spaces)
"$BIN/smearscope" models sign --key "$KEY" $bundles
# shellcheck disable=SC2086
"$BIN/smearscope" models verify --trusted-key project $bundles
