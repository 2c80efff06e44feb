#!/usr/bin/env bash
# Set everything up, then lint (ruff), type-check (mypy) and run the whole test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -c "import vqkit, torch; print('vqkit', vqkit.__version__, '| torch', torch.__version__)"
echo "== ruff"; .venv/bin/ruff check src tests benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
