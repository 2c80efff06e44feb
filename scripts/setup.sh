#!/usr/bin/env bash
# Create ./.venv (once) and install vqkit with the given extras into it.
# torch is installed first and pinned: an open range would pull a multi-GB CUDA build.
# Override with VQKIT_TORCH, e.g. VQKIT_TORCH="torch==2.13.0" (default) or a local wheel path.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip's -q still prints one warning per unused local index; drop those, keep pip's exit code.
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "installing ${VQKIT_TORCH:-torch==2.13.0} (CPU build where available)"
  pip install "${VQKIT_TORCH:-torch==2.13.0}"
fi
if [ -n "$extras" ]; then
  pip install -e ".[$extras]"
else
  pip install -e .
fi
