#!/usr/bin/env bash
# Everything a session with a lent GPU should do, in one device call (device time is short), in
# order of value, each step bounded so that one slow or failing step cannot take the rest with it:
#   1. near-limit figures (issue 6): GLIDE-base-sized UNet with CFG at batch 64 and 1, eager, then
#      torch.compile and CUDA graphs (compiling takes a minute or two each), the operator table of a
#      CFG step at batch 64 (where the time goes), and eager without cudnn.benchmark;
#   2. the time-split table of the zoo models on the GPU (overhead vs a bare loop);
#   3. continue training the committed UNet (issue 3) for what the deadline leaves.
# Logs come back in $OUT/logs.tar; the continued UNet comes back as $OUT/unet.safetensors.part-* (the device tool
# returns files of at most 16 MiB): `cat unet.safetensors.part-* > unet.safetensors` to rebuild.
# Usage: OUT=/path DEADLINE_S=560 bash scripts/gpu_session.sh
#   MEASURE=0 skips steps 1-2 (a call that only trains); GRAPH_BATCHES=64,1 picks the CUDA-graph batches.
# The device tool moves at most 64 MiB: the committed weights are 59 MiB, so the dataset travels as an
# xz'd uncompressed npz (3.4 MiB) with the open_clip/ftfy/wcwidth wheels in one carried folder, and
# weak_unet.safetensors (unused here) is taken out of the index for the call (`git rm --cached` + an
# exclude line; `git reset -- <file>` after).
set -uo pipefail
OUT=${OUT:?set OUT to an output directory}
DEADLINE_S=${DEADLINE_S:-560}   # the whole script, in seconds
T0=$(date +%s)
left() { echo $((DEADLINE_S - ($(date +%s) - T0))); }
LOGS=/tmp/gpu_session_logs  # bundled into $OUT/logs.tar after each step: the tool returns at most 8 files
step() {  # step NAME SECONDS COMMAND...: run bounded, log to $LOGS/NAME.txt, never abort the script
  local name=$1 limit=$2; shift 2
  echo "== $name (at most ${limit}s, $(left)s left)"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.txt" 2>&1
  echo "== $name exit $? after $(( $(date +%s) - T0 ))s"; tail -n 25 "$LOGS/$name.txt"
  tar -cf "$OUT/logs.tar" -C "$LOGS" .
}
rm -rf "$LOGS"; mkdir -p "$OUT" "$LOGS"  # a warm machine keeps /tmp: no earlier call's logs
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)"

if [ "${MEASURE:-1}" != 0 ]; then
  # side by side on one card: eager, compiled, CUDA graphs (the FLOPs are counted before compiling and
  # each compiled run prints dynamo's counters, so a flag that silently ran eager shows)
  step limit_eager 150 python3 -m bench.limit --device cuda --batches 64,1 --steps 100 --guidance cfg
  step profile 60 python3 -m bench.limit --device cuda --guidance cfg --batches 64 --profile
  step limit_compile 170 python3 -m bench.limit --device cuda --batches 64 --steps 100 --guidance cfg --compile
  [ "$(left)" -gt 35 ] && TORCH_LOGS=perf_hints step limit_cuda_graphs $(( $(left) > 200 ? 200 : $(left) - 5 )) python3 -m bench.limit \
    --device cuda --batches "${GRAPH_BATCHES:-64,1}" --steps 100 --guidance cfg --cuda-graphs
  [ "$(left)" -gt 60 ] && step limit_no_cudnn_benchmark 50 python3 -m bench.limit --device cuda --batches 64 \
    --steps 100 --guidance cfg --no-cudnn-benchmark
  [ "$(left)" -gt 100 ] && step perf 90 python3 -m bench.perf --device cuda --batch 64 --steps 50 --repeats 3 \
    --guidance cfg,none,none,classifier,clip  # 2026-11-26: none (measured first) paid +16.8%, cfg +2.8%: order?
fi

budget=$(( $(left) - 60 ))
if [ "$budget" -gt 30 ]; then
  step train $((budget + 50)) python3 -m guidance.zoo.train --models unet --data "${DATA:-.devdata/emoji32.npz}" \
    --batch "${BATCH:-512}" --budget "$budget" --init-from guidance/zoo/weights --out "$OUT/weights" --run-dir /tmp/runs
  if [ -f "$OUT/weights/unet.safetensors" ]; then
    split -b 15M -d "$OUT/weights/unet.safetensors" "$OUT/unet.safetensors.part-" && rm -r "$OUT/weights"
  fi
fi
ls -la "$OUT"
