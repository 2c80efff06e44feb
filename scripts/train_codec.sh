#!/usr/bin/env bash
# Train the codec family shipped in src/vqkit/assets/codec/ (`vqkit encode --quality Q`): an RFSQ of 6 stages
# whose first Q stages are the operating points, fit its static, context and learned priors, measure it on
# Kodak24-500 beside JPEG/WebP/AVIF and copy it into the package. Resumable: run it again after a kill.
# Data: Imagenette2 (ImageNet photos of 10 classes; ImageNet terms: non-commercial research).
# Usage: bash scripts/train_codec.sh [IMAGENETTE_DIR] [RUN_DIR] [KODAK_DIR]   (~2 h 15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/images/imagenette2}"
out="${2:-runs/codec}"
kodak="${3:-../shared/data/images/kodak24}"
vqkit=.venv/bin/vqkit
# the codec-cpu preset (vqkit.train.presets); the prior is fitted below, after training
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" $vqkit train --preset codec-cpu --data "$data" --out "$out" --seed 0 \
    --prior-items 0 --resume
$vqkit fit-prior "$out" --data "$data" --max-images 2000 --learned 2>/dev/null
$vqkit rd --model "$out" --data "$kodak" --out "$out/rd-kodak24"
mkdir -p src/vqkit/assets/codec
cp "$out"/final/config.json "$out"/final/model.safetensors "$out"/final/prior.safetensors src/vqkit/assets/codec/
echo "copied into src/vqkit/assets/codec/ (update MODEL_CARD.md there with $out/rd-kodak24/report.md)"
