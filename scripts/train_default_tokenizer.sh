#!/usr/bin/env bash
# Train the default tokenizer shipped in src/vqkit/assets/default/ (what `vqkit encode` uses without
# --model), fit its entropy-coding tables, evaluate it and copy it into the package. Reproducible:
# the same data, config and seed give the same weights on the same CPU build of torch.
# Data: Imagenette2 (ImageNet photos of 10 classes; ImageNet terms: non-commercial research).
# Usage: bash scripts/train_default_tokenizer.sh [IMAGENETTE_DIR] [RUN_DIR]   (~30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/images/imagenette2}"
out="${2:-runs/default-tokenizer}"
vqkit=.venv/bin/vqkit
# rfsq_conv (f = 4) around one FSQ of 22 bits/token: at equal bits the best single-stage trade this
# project measured (README); L1 + MSE since a codec is judged by PSNR. The prior is fitted below.
$vqkit train --data "$data" --out "$out" --arch rfsq_conv --quantizer fsq \
    --quantizer-args '{"levels": [8, 8, 8, 8, 8, 8, 4, 4]}' \
    --image-size 64 --batch-size 16 --steps "${STEPS:-2400}" --lr 8e-4 --warmup 0.01 --schedule linear \
    --weight-decay 5e-5 --grad-clip 1.0 --l1-weight 1.0 --mse-weight 1.0 --seed 0 --prior-images 0 \
    --eval-every 800 --ckpt-every 200 --log-every 50 --max-val-images 256 --resume
[ -n "${SKIP_PRIOR:-}" ] && exit 0
$vqkit fit-prior "$out" --data "$data" --max-images 2000 2>/dev/null
$vqkit eval "$out" --data "$data" --split val --max-images 512
mkdir -p src/vqkit/assets/default
cp "$out"/final/config.json "$out"/final/model.safetensors "$out"/final/prior.safetensors src/vqkit/assets/default/
echo "copied into src/vqkit/assets/default/ (update MODEL_CARD.md there with $out/eval-val/metrics.json)"
