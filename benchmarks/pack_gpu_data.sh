#!/usr/bin/env bash
# Copy the few data files benchmarks/gpu_check.sh needs into .gpudata/ (ignored by git), so a
# device call can carry them: DMPHN(1-2-4) weights, frames 1 and 3 (1 with the authors' output), GoPro pairs.
# --train: instead, what benchmarks/gpu_train.sh needs, into .traindata/: the sharp photos and
# the GoPro pairs (evaluation only).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${FASTDEBLUR_DATA:-../shared/data}
dst=.gpudata; [ "${1:-}" = --train ] && dst=.traindata
rm -rf "$dst" && mkdir -p "$dst"
if [ "$dst" = .traindata ]; then
  cp -r "$src/sharp_photos" "$dst/"
else
  mkdir -p "$dst/dmphn_official/checkpoints" "$dst/dmphn_official/samples/blur" \
    "$dst/dmphn_official/samples/official_out/DMPHN_1_2_4"
  cp -r "$src/dmphn_official/checkpoints/DMPHN_1_2_4" "$dst/dmphn_official/checkpoints/"
  cp "$src"/dmphn_official/samples/blur/00000[13].png "$dst/dmphn_official/samples/blur/"
  cp "$src/dmphn_official/samples/official_out/DMPHN_1_2_4/000001.png" "$dst/dmphn_official/samples/official_out/DMPHN_1_2_4/"
fi
cp -r "$src/gopro_pairs" "$dst/"
grep -qx "/$dst/" .git/info/exclude 2>/dev/null || echo "/$dst/" >> .git/info/exclude
du -sh "$dst"
