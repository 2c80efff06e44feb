#!/usr/bin/env bash
# Set everything up, then run the main job: every quantizer on real photo patches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
.venv/bin/vqkit demo --out results/demo "$@"
