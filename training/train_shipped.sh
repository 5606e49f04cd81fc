#!/bin/sh
# Re-train the two shipped models exactly as they were trained (CPU is fine; ~1.5 h on 2 shared cores).
# Usage: training/train_shipped.sh [SHARED_DIR]   (default ../shared). Writes runs/*; see runs/README.md.
set -eu
SHARED=${1:-../shared}
DATA=$SHARED/datasets/all-4class
P=$SHARED/pretrained
S=.venv/bin/smearscope
mkdir -p runs
# The first run splits the data (seed 42, 70/10/20); every later run reuses that split.json, so the
# ensemble is measured on the same test images.
SPLIT=runs/mobilenetv2-all4-stage1/split.json

# MobileNetV2: head on cached features (30 epochs), fine-tune top 60 layers for 15 epochs ...
$S train --data "$DATA" --out runs/mobilenetv2-all4-stage1 \
  --backbone mobilenetv2 --weights "$P/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" \
  --size 224 --alpha 1.0 --epochs-head 30 --epochs-finetune 15 --finetune-layers 60 --batch 32 --seed 42 \
  --lr-finetune 3e-5 --warmup-epochs 1 --patience 5
# ... then continued: top 100 layers for 12 more epochs ...
$S train --data "$DATA" --split $SPLIT --out runs/mobilenetv2-all4-stage2 \
  --backbone mobilenetv2 --init-model runs/mobilenetv2-all4-stage1/model.keras \
  --size 224 --epochs-finetune 12 --finetune-layers 100 --batch 32 --seed 43 \
  --lr-finetune 3e-5 --warmup-epochs 0.5 --patience 6 --no-baselines
# ... and finally every layer but BatchNorm, light colour jitter, label smoothing 0.05, 8 epochs.
$S train --data "$DATA" --split $SPLIT --out runs/mobilenetv2-all4 \
  --backbone mobilenetv2 --init-model runs/mobilenetv2-all4-stage2/model.keras \
  --size 224 --epochs-finetune 8 --finetune-layers 160 --batch 32 --seed 44 \
  --lr-finetune 2e-5 --warmup-epochs 0.5 --patience 4 --colour-strength 0.3 --label-smoothing 0.05 --no-baselines
cp runs/mobilenetv2-all4-stage1/baselines.json runs/mobilenetv2-all4/baselines.json

# EfficientNet-Lite0: head 30 epochs, fine-tune top 80 layers for 16 epochs.
$S train --data "$DATA" --split $SPLIT --out runs/efficientnet-lite0-all4-stage1 \
  --backbone efficientnet-lite0 --weights "$P/efficientnet_lite0_imagenet_notop.keras" \
  --size 224 --epochs-head 30 --epochs-finetune 16 --finetune-layers 80 --batch 32 --seed 42 \
  --lr-finetune 5e-5 --warmup-epochs 1 --patience 6

# Convert (int8 + CAM output) into the default ensemble.
$S convert runs/mobilenetv2-all4 --out models/mobilenetv2-all4-int8 --set-default
$S convert runs/efficientnet-lite0-all4-stage1 --out models/efficientnet-lite0-all4-int8 --set-default
