#!/usr/bin/env bash
# Train candidate priors on the lent GPU machine, in parallel, time-boxed.
# Run from the repo root there, with the training images carried in .device/train:
#   bash benchmarks/gpu_train.sh MINUTES NAME=CONFIG.json [NAME=CONFIG.json ...]
# If .device/init/NAME.safetensors exists, training starts from those weights (--init).
# TRAIN_ARGS adds train-prior options, e.g. TRAIN_ARGS="--high-t 600 --weight-cap 1000 --lr 1e-4".
# Writes OUT/NAME.safetensors (EMA weights), OUT/NAME.train_log.json and OUT/NAME.log.
set -euo pipefail
minutes=$1; shift
export PYTHONUNBUFFERED=1
repo=$PWD
python3 -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target "${SITE:-/tmp/site}" . && export PYTHONPATH="${SITE:-/tmp/site}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
pids=()
for spec in "$@"; do
  name=${spec%%=*}; cfg=${spec#*=}
  (cd /tmp && python3 -m dig2dig.export.train_prior \
    --data "$repo/.device/train" -o "/tmp/runs/$name" --config "$repo/$cfg" --steps 1000000 --batch 48 --crop 128 \
    --device cuda --minutes "$minutes" --save-every 2000 ${TRAIN_ARGS:-} $(test -f "$repo/.device/init/$name.safetensors" && echo --init "$repo/.device/init/$name.safetensors")) \
    > "$OUT/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for spec in "$@"; do
  name=${spec%%=*}
  cp "/tmp/runs/$name/weights.safetensors" "$OUT/$name.safetensors"
  cp "/tmp/runs/$name/train_log.json" "$OUT/$name.train_log.json"
  tail -c 400 "$OUT/$name.log"; echo; cat "$OUT/$name.train_log.json"
done
