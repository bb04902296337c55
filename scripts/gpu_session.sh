#!/usr/bin/env bash
# Everything a session with a lent GPU should do, in one device call (device time is short), in
# order of value, each step bounded so that one slow or failing step cannot take the rest with it:
#   1. why `none` pays more sampler time than the bare loop on the GPU (+12.5% and +23.2% on
#      2026-11-26, interleaved; cfg -0.8%): a trace of one sampling run beside its bare loop (kernel
#      launches, host-device syncs, device busy time);
#   2. near-limit figures (issue 6), side by side on one card: the GLIDE-base-sized UNet with CFG at
#      batch 64 under CUDA graphs, with the weights stored in bf16 (the default since 2026-11-26:
#      autocast no longer re-casts 366M weights per forward) and in fp32 (what gave 44.2% of peak
#      twice), side by side in one process (--compare-half-weights), then the perf table (zoo models,
#      eager), then inductor's freezing (weights as constants) on top. max-autotune is not tried again: on 2026-11-26 it had not finished
#      compiling after 410 s (two calls), and cuDNN won every convolution it benchmarked but the stem;
#   3. with TRAIN=1, continue training the committed UNet for what the deadline leaves (a new UNet
#      means new cards, a new gate baseline and a new protocol run: see README).
# Logs come back in $OUT/logs.tar; the continued UNet comes back as $OUT/unet.safetensors.part-* (the device tool
# returns files of at most 16 MiB): `cat unet.safetensors.part-* > unet.safetensors` to rebuild.
# Usage: OUT=/path DEADLINE_S=560 bash scripts/gpu_session.sh
#   MEASURE=0 TRAIN=1 runs step 3 alone (a call that only trains).
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

# a step's limit: at most WANT seconds and never past the deadline (callers check left > 60 first, so the
# value stays positive: `timeout 0` would mean no limit at all)
bounded() { local want=$1; echo $(( $(left) - 20 < want ? $(left) - 20 : want )); }
if [ "${MEASURE:-1}" != 0 ]; then
  [ "$(left)" -gt 60 ] && step perf_trace "$(bounded 90)" python3 -m bench.tools.perf --device cuda --batch 64 --steps 10 \
    --guidance none,cfg --profile
  # FLOPs are counted before compiling and each compiled run prints dynamo's counters, so a flag that
  # silently ran eager shows
  limit=(python3 -m bench.tools.limit --device cuda --batches 64 --steps 100 --guidance cfg --cuda-graphs)
  # half-precision against fp32 weight storage, the same networks timed in interleaved rounds of one process
  [ "$(left)" -gt 60 ] && step limit_weights "$(bounded 200)" "${limit[@]}" --compare-half-weights --repeats 2
  [ "$(left)" -gt 60 ] && step perf "$(bounded 100)" python3 -m bench.tools.perf --device cuda --batch 64 --steps 50 \
    --repeats 3 --guidance none,cfg,none
  [ "$(left)" -gt 60 ] && TORCHINDUCTOR_FREEZING=1 step limit_freezing "$(bounded 120)" "${limit[@]}"
fi

budget=$(( $(left) - 60 ))
if [ "${TRAIN:-0}" != 0 ] && [ "$budget" -gt 30 ]; then
  step train $((budget + 50)) python3 -m guidance.zoo.train --models unet --data "${DATA:-.devdata/emoji32.npz}" \
    --batch "${BATCH:-512}" --budget "$budget" --init-from guidance/zoo/weights --out "$OUT/weights" --run-dir /tmp/runs
  if [ -f "$OUT/weights/unet.safetensors" ]; then
    split -b 15M -d "$OUT/weights/unet.safetensors" "$OUT/unet.safetensors.part-" && rm -r "$OUT/weights"
  fi
fi
ls -la "$OUT"
