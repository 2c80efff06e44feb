#!/usr/bin/env bash
# Train the default tokenizer shipped in src/vqkit/assets/default/ (what `vqkit encode` uses when
# no --model is given). Reproducible: same data, config and seed give the same weights on CPU.
# Data: Imagenette2 (ImageNet photos of 10 classes; ImageNet terms: non-commercial research).
# Usage: bash scripts/train_default_tokenizer.sh [IMAGENETTE_DIR] [OUT_RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/images/imagenette2}"
out="${2:-runs/default-tokenizer}"
# rfsq_conv (f = 4) around one FSQ of 22 bits/token: at equal bits the best single-stage trade
# measured in this project (README); MSE + L1 since the codec is judged by PSNR.
.venv/bin/vqkit train --data "$data" --out "$out" --arch rfsq_conv --quantizer fsq \
    --quantizer-args '{"levels": [8, 8, 8, 8, 8, 8, 4, 4]}' \
    --image-size 64 --batch-size 16 --steps "${STEPS:-2400}" --lr 8e-4 --warmup 0.01 --schedule linear \
    --weight-decay 5e-5 --grad-clip 1.0 --l1-weight 1.0 --mse-weight 1.0 --seed 0 \
    --eval-every 800 --ckpt-every 200 --log-every 50 --max-val-images 256 --resume
[ -n "${SKIP_PRIOR:-}" ] || .venv/bin/vqkit fit-prior "$out" --data "$data" --max-images 2000
