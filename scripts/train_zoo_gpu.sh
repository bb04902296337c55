#!/usr/bin/env bash
# Train the whole embedded zoo on one GPU inside a fixed wall-clock budget (what ran on the lent H100).
# The four small guiding/evaluation models train in two background processes beside the UNet.
# Usage: OUT=dir DATA=emoji32.npz UNET_BUDGET=420 AUX_BUDGET=110 bash scripts/train_zoo_gpu.sh
# Continue the committed UNet instead of starting over (a later GPU session adds to its steps):
#   UNET_ONLY=1 INIT_FROM=guidance/zoo/weights UNET_BUDGET=500 bash scripts/train_zoo_gpu.sh
set -euo pipefail
OUT=${OUT:-runs/zoo_gpu}
DATA=${DATA:-.devdata/emoji32.npz}
UNET_BUDGET=${UNET_BUDGET:-420}
AUX_BUDGET=${AUX_BUDGET:-110}
BATCH=${BATCH:-512}
INIT=${INIT_FROM:+--init-from $INIT_FROM}
W="$OUT/weights"
mkdir -p "$W" "$OUT/logs"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
nvidia-smi --query-gpu=name,memory.total --format=csv || true
train() { python3 -m guidance.zoo.train --data "$DATA" --batch "$BATCH" --out "$W" --run-dir runs/train $INIT "$@"; }
if [ -z "${UNET_ONLY:-}" ]; then
  train --models classifier,eval_classifier --budget "$AUX_BUDGET" > "$OUT/logs/classifiers.txt" 2>&1 &
  train --models noised_clip,eval_clip --budget "$AUX_BUDGET" > "$OUT/logs/clips.txt" 2>&1 &
  train --models weak_unet --budget "$AUX_BUDGET" > "$OUT/logs/weak_unet.txt" 2>&1 &  # autoguidance's weak model
fi
train --models unet --budget "$UNET_BUDGET" 2>&1 | tee "$OUT/logs/unet.txt"
wait
grep -h "exported" "$OUT"/logs/*.txt || true
