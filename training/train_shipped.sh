#!/bin/sh
# Re-train and convert the two shipped models (issue 11, "models that travel"), exactly as shipped
# (Lite0 since 2026-11-30, MobileNetV2 since 2026-12-01). Usage: training/train_shipped.sh [SHARED_DIR] [SIGNING_KEY]   (default ../shared; no key =
# unsigned bundles, which stations refuse until `make sign-shipped KEY=...`). Writes runs/* and models/*.
#
# Recipe: the robust on-the-fly augmentation of convert/augment.py (scale x0.75-1.33, any rotation,
# stain jitter in optical density, white balance/gamma with the background re-normalised, vignetting,
# defocus, sensor noise, JPEG) and the background white reference (input.white_reference "background").
# Phase 1: head on cached frozen features (15 epochs); phase 2: every layer but BatchNorm, half an epoch
# of warm-up then cosine decay from 1e-4, the best validation-loss epoch kept.
# MobileNetV2 also gets outlier exposure (training/outlier_exposure.py): 15% of every fine-tuning batch
# re-coloured far past any real stain (a quarter of them per optical-density channel) with the uniform
# label, and the robust gamma range up to 1.45. Its conversion fits the content check also on one copy of
# each training image through another camera's white balance (`--camera-copies 1`, convert/cameras.py;
# README, "Outlier exposure").
# The MobileNetV2 run shipped on 2026-12-01 (runs/mobilenetv2-all4-288oe5) was trained alone on the
# machine in 15 min (888 s: head on cached features, then 14 fine-tuning epochs of under a minute each on
# that day's machine); the Lite0 below is the 2026-11-30 one.
# Time: both runs side by side on 2 idle CPU cores, ~8.5 min per fine-tuning epoch each; the 65-minute
# budget (--finetune-minutes) fitted 7 epochs (of 14 planned); Lite0 then continues for 5 more (below).
# The whole script takes ~2 h 30 min.
# On a faster machine more epochs fit and the figures will differ a little: check the run reports.
# The raw-colour models shipped before issue 11 are reproduced by training/train_shipped_v1.sh.
set -eu
SHARED=${1:-../shared}
KEY=${2:-}
DATA=$SHARED/datasets/all-4class
P=$SHARED/pretrained
S=.venv/bin/smearscope
BUDGET=${FINETUNE_MINUTES:-65}
mkdir -p runs
# Every run reuses the committed split (seed 42, 70/10/20, per image), so the ensemble is measured on the
# same test images. Without it, `--data DIR --seed 42` makes the same split again.
SPLIT=runs/split-all4-seed42.json
# The bundles declare the µm/px measured for the first shipped models (docs/optics.md); the retrain's own
# red-cell measurement (0.3823 µm/px over 313 of 400 training images) is 2.6% from it, inside the
# estimator's spread, and keeping one value keeps the virtual microscope and the profiles consistent.
UM=0.37255

# Both models see the 224 px images upsampled to 288 px (see runs/README.md).
$S train --data "$DATA" --split $SPLIT --out runs/mobilenetv2-all4-288oe5 \
  --backbone mobilenetv2 --weights "$P/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" \
  --size 288 --epochs-head 15 --epochs-finetune 14 --finetune-layers 160 --batch 32 --seed 42 \
  --lr-finetune 1e-4 --warmup-epochs 0.5 --patience 14 --augment robust \
  --outlier-exposure 0.15 --outlier-channel-share 0.25 --gamma-max 1.45 \
  --finetune-minutes "$BUDGET" --quiet &
MNV2=$!
$S train --data "$DATA" --split $SPLIT --out runs/efficientnet-lite0-all4-288r \
  --backbone efficientnet-lite0 --weights "$P/efficientnet_lite0_imagenet_notop.keras" \
  --size 288 --epochs-head 15 --epochs-finetune 14 --finetune-layers 400 --batch 32 --seed 42 \
  --lr-finetune 1e-4 --warmup-epochs 0.5 --patience 14 --augment robust \
  --finetune-minutes "$BUDGET" --quiet &
LITE0=$!
wait $MNV2
wait $LITE0
# Lite0 had 7 of its 14 fine-tuning epochs (validation 98.84%): 5 more, alone on the machine, from its
# best model at a lower rate (cosine from 3e-5; ~8 min per epoch with other work running). Kept because
# it is better on VALIDATION (99.61%, loss 0.017 vs 0.029); the best validation-loss epoch is kept.
$S train --data "$DATA" --split $SPLIT --out runs/efficientnet-lite0-all4-288r2 \
  --backbone efficientnet-lite0 --size 288 --epochs-finetune 6 --finetune-layers 400 --batch 32 --seed 43 \
  --lr-finetune 3e-5 --warmup-epochs 0.3 --patience 6 --augment robust --finetune-minutes 45 \
  --init-model runs/efficientnet-lite0-all4-288r/model.keras --quiet

# Convert (int8 + CAM output + content-check output, calibrated on the validation split), then the
# ensemble figures and the robustness report the cards cite.
# MobileNetV2 also gets the stain-outlier step (convert/outliers.py). Lite0 does not: its int8 features
# are too noisy for it (the step fired on 51% of the familiar validation images; convert refuses that).
$S convert runs/mobilenetv2-all4-288oe5 --out models/mobilenetv2-all4-int8 --um-per-px $UM --content-strides 8,16 \
  --stain-outliers --camera-copies 1
$S convert runs/efficientnet-lite0-all4-288r2 --out models/efficientnet-lite0-all4-int8 --um-per-px $UM --content-strides 16
TEST=$(mktemp -d)
while read -r f; do
  mkdir -p "$TEST/$(dirname "$f")"
  cp "$DATA/$f" "$TEST/$f"
done < models/mobilenetv2-all4-int8/report/test_split.txt
.venv/bin/python -m convert.ensemble_report models/mobilenetv2-all4-int8 models/efficientnet-lite0-all4-int8 \
  --data "$TEST"
rm -rf "$TEST"
.venv/bin/python benchmarks/robustness.py --model models/mobilenetv2-all4-int8 \
  --model models/efficientnet-lite0-all4-int8 --split $SPLIT --out runs/robustness --card
if [ -n "$KEY" ]; then
  BIN=.venv/bin sh scripts/sign-shipped.sh "$KEY" models
fi
