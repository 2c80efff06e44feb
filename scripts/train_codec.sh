#!/usr/bin/env bash
# Train the codec family shipped in src/vqkit/assets/ (`vqkit encode --quality Q`, vqkit.models.pretrained.QUALITY):
#   codec    — RFSQ 6 stages × 16 bits, fsq_conv f = 8 (the low rates), the codec-cpu preset;
#   codec-hi — RFSQ 2 stages × 22 bits, rfsq_conv f = 4 (the high rates), the codec-hi-cpu preset, weights stored
#              as float16; HI_RATE_WEIGHT=W adds a rate–distortion fine-tune over every stage cut (the shipped
#              model has none: the model card measures W = 0.03 beside it);
# (the ladder's middle point is the shipped `default`: scripts/train_default_tokenizer.sh), fit their static,
# context and learned priors, measure the family on Kodak24-500 beside JPEG/WebP/AVIF and copy it into the package.
# Resumable: run it again after a kill. Data: Imagenette2 (ImageNet photos of 10 classes; ImageNet terms:
# non-commercial research). Usage: bash scripts/train_codec.sh [IMAGENETTE_DIR] [RUNS_DIR] [KODAK_DIR]
# (about 50 min + 70 min + 35 min of one core at full speed).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/images/imagenette2}"
runs="${2:-runs}"
kodak="${3:-../shared/data/images/kodak24}"
rate="${HI_RATE_WEIGHT:-0}"
vqkit=.venv/bin/vqkit
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# codec: the codec-cpu preset (vqkit.train.presets); its prior is fitted below, after training
$vqkit train --preset codec-cpu --data "$data" --out "$runs/codec" --seed 0 --prior-items 0 --resume
$vqkit fit-prior "$runs/codec" --data "$data" --max-images 2000 --learned 2>/dev/null
# codec-hi: the codec-hi-cpu preset, then (rate > 0) the fine-tune with the rate term over both stage cuts
$vqkit train --preset codec-hi-cpu --data "$data" --out "$runs/codec-hi" --seed 0 --prior-items 0 --resume
hi="$runs/codec-hi"
if [ "$rate" != "0" ]; then
    $vqkit train --preset codec-hi-cpu --data "$data" --init "$runs/codec-hi" --rate-weight "$rate" --stage-cuts \
        --lr 1e-4 --warmup 0.02 --steps 2000 --eval-every 1000 --out "$runs/codec-hi-rd" --seed 1 --prior-items 0 \
        --no-learned-prior --resume
    hi="$runs/codec-hi-rd"
fi
# float16 weights (2.1 MB instead of 4.3: the package's assets stay near 24 MB), then the priors on its tokens
.venv/bin/python - "$hi" "$runs/codec-hi-half" <<'PY'
import sys
from vqkit.models import Tokenizer, pretrained
model = Tokenizer.from_pretrained(sys.argv[1])
state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
pretrained.save(sys.argv[2], model.config, state)
PY
$vqkit fit-prior "$runs/codec-hi-half" --data "$data" --max-images 2000 --learned 2>/dev/null
for name in codec codec-hi-half; do
    mkdir -p "src/vqkit/assets/${name%-half}"
    src="$runs/$name"; [ -d "$src/final" ] && src="$src/final"
    cp "$src"/config.json "$src"/model.safetensors "$src"/prior.safetensors "src/vqkit/assets/${name%-half}/"
done
$vqkit rd --model family --model codec --model codec-hi --data "$kodak" --out "$runs/rd-family"
echo "copied into src/vqkit/assets/{codec,codec-hi}/ (update their MODEL_CARD.md with $runs/rd-family/report.md)"
