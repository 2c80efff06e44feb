#!/usr/bin/env bash
# Set everything up, then run the main job: a quick comparison of the quantizers at 12 bits per
# token on scikit-image's bundled photos (same model, data, steps and seed for each), written to
# results/quick/ as report.md, results.json and PNG plots. Extra options go to `vqkit compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
.venv/bin/vqkit compare quick --out results/quick "$@"
