#!/usr/bin/env bash
# One prepared training call for a session with the device tool: continue fastdeblur-default from
# the committed weights on synthetic blur for MINUTES of wall clock (the schedule fitted to it),
# evaluate on the GoPro pairs, and bring back the export and its log (docs/TRAINING.md).
# Needs the sharp photos and the GoPro pairs: FASTDEBLUR_DATA, or the .traindata folder that
# `bash benchmarks/pack_gpu_data.sh --train` makes (59 MB; a device call carries 64 MiB at most,
# so not together with .gpudata). Set FASTDEBLUR_COMMIT to the commit that runs.
# Usage: bash benchmarks/gpu_train.sh [OUT_DIR] [MINUTES]   (default 6; runs on the CPU too)
# Extra recipe options go in GPU_TRAIN_ARGS, e.g. GPU_TRAIN_ARGS="--set object_prob=0.3".
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_train}}
minutes=${2:-6}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
[ -d .traindata ] && export FASTDEBLUR_DATA=${FASTDEBLUR_DATA:-$PWD/.traindata}
data=${FASTDEBLUR_DATA:-../shared/data}
if [ ! -d "$data/sharp_photos" ] || [ ! -d "$data/gopro_pairs" ]; then
  echo "no training data in $data (sharp_photos/, gopro_pairs/): run benchmarks/pack_gpu_data.sh --train and carry .traindata" >&2
  exit 2
fi
echo "commit ${FASTDEBLUR_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# the plain-PyTorch install is all training needs (no extension build: ~45 s saved)
python3 -c "import fastdeblur" 2>/dev/null \
  || FASTDEBLUR_SKIP_EXT=1 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . 2>&1 | tail -3

run=$(mktemp -d)  # last.pt (87 MB) stays here: too big to bring back
# the command of the 2026-11-27 GPU row in docs/TRAINING.md, continuing the shipped weights
# shellcheck disable=SC2086
python3 -m fastdeblur.train.recipe --minutes "$minutes" --steps auto --crop 256 --batch 16 --lr 3e-4 \
  --warmup 300 --data "$data" --out "$run" ${GPU_TRAIN_ARGS:-} 2>&1 | tee "$out/train.log" | tail -c 3000
cp "$run"/fastdeblur-default.safetensors "$run"/log.csv "$out"/ 2>/dev/null || true
ls -la "$out"
