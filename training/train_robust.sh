#!/bin/sh
# Issue 11's retrain of both models with the robust augmentation (NOT yet the shipped models: on the
# shared 2-core machine of 2026-11-30 only one Lite0 epoch fitted, test accuracy 92.2%, so models/ still
# holds the bundles of training/train_shipped.sh; see runs/README.md). Usage:
#   training/train_robust.sh [SHARED_DIR]   (default ../shared). Writes runs/*.
# Budget: fine-tuning ~1 h on 2 otherwise idle cores (the old recipe: ~50 min); a busy machine gets fewer
# epochs (--finetune-minutes), which can fall short of the targets: check the run reports.
# Issue 11 recipe ("models that travel"): the robust on-the-fly augmentation of training/augment.py
# (scale ±25%+, any rotation, stain jitter in optical density, white balance/gamma with the background
# re-normalised, vignetting, defocus, sensor noise, JPEG) and the background white reference.
# The machine is a shared 2-core CPU: each fine-tuning phase gets a wall-clock budget
# (--finetune-minutes): the cosine schedule is shortened to the epochs that fit and the run ends on
# time (training/budget.py). Both runs go side by side.
set -eu
SHARED=${1:-../shared}
DATA=$SHARED/datasets/all-4class
P=$SHARED/pretrained
S=.venv/bin/smearscope
BUDGET=${FINETUNE_MINUTES:-50}
mkdir -p runs
# Every run reuses the committed split (seed 42, 70/10/20, per image), so the ensemble is measured on the
# same test images. Without it, `--data DIR --seed 42` makes the same split again.
SPLIT=runs/split-all4-seed42.json

# Both models see the 224 px images upsampled to 288 px (see runs/README.md).
# Phase 1: head on cached frozen features (15 epochs); phase 2: fine-tune every layer but BatchNorm,
# half an epoch of warm-up then cosine decay from 1e-4 over the epochs that fit, best val-loss epoch kept.
$S train --data "$DATA" --split $SPLIT --out runs/mobilenetv2-all4-288r \
  --backbone mobilenetv2 --weights "$P/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" \
  --size 288 --epochs-head 15 --epochs-finetune 14 --finetune-layers 160 --batch 32 --seed 42 \
  --lr-finetune 1e-4 --warmup-epochs 0.5 --patience 14 --augment robust \
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

# Convert (int8 + CAM output + content-check output), then the robustness report the cards cite. Only
# replace models/* when the run reports meet issue 11's targets.
$S convert runs/mobilenetv2-all4-288r --out models/mobilenetv2-all4-int8 --set-default
$S convert runs/efficientnet-lite0-all4-288r --out models/efficientnet-lite0-all4-int8 --set-default
.venv/bin/python benchmarks/robustness.py --model models/mobilenetv2-all4-int8 \
  --model models/efficientnet-lite0-all4-int8 --split $SPLIT --out runs/robustness --card
