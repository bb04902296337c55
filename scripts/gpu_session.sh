#!/usr/bin/env bash
# Everything a session with a lent GPU should do, in one device call (device time is short):
#   1. near-limit figures (issue 6): GLIDE-base-sized UNet, CFG / classifier / CLIP, batch 1, 16, 64,
#      eager, then CFG at batch 64 with CUDA graphs;
#   2. the time-split table of the zoo models on the GPU (overhead vs a bare loop);
#   3. the rest of the budget: continue training the committed UNet (issue 3).
# Results go to $OUT (the device tool's output folder); weights to $OUT/weights.
# Usage: OUT=/path TRAIN_BUDGET=300 bash scripts/gpu_session.sh
set -euo pipefail
OUT=${OUT:?set OUT to an output directory}
TRAIN_BUDGET=${TRAIN_BUDGET:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true
python3 -m bench.limit --device cuda --batches 1,16,64 --steps 100 --guidance cfg,classifier,clip 2>&1 | tee "$OUT/limit_eager.txt"
python3 -m bench.limit --device cuda --batches 64 --steps 100 --guidance cfg --cuda-graphs 2>&1 | tee "$OUT/limit_cuda_graphs.txt"
python3 -m bench.perf --device cuda --batch 64 --steps 50 --repeats 3 2>&1 | tee "$OUT/perf.txt"
if [ "$TRAIN_BUDGET" -gt 0 ]; then
  OUT="$OUT/train" UNET_ONLY=1 INIT_FROM=guidance/zoo/weights UNET_BUDGET="$TRAIN_BUDGET" bash scripts/train_zoo_gpu.sh
fi
