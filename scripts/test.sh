#!/usr/bin/env bash
# Set everything up, then lint (ruff), type-check (mypy), check the layering (import-linter) and run the whole
# test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -c "import vqkit, torch; print('vqkit', vqkit.__version__, '| torch', torch.__version__)"
echo "== ruff"; .venv/bin/ruff check src tests benchmarks scripts
echo "== mypy"; .venv/bin/mypy
echo "== import-linter (layers)"; .venv/bin/lint-imports --no-cache
echo "== pytest"; .venv/bin/python -m pytest "$@"
