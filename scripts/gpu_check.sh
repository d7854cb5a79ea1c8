#!/usr/bin/env bash
# The planner against CUDA measurements (issue 21): every row of scripts/gpu_check.py, each in its own process,
# on one GPU in well under 8 minutes. Writes gpu_check.json and gpu_check.md under the folder given as $1
# (default ./gpu_results); further arguments go to gpu_check.py (e.g. --dry-run, --only g2,r4).
#   bash scripts/gpu_check.sh [OUT_DIR] [--dry-run] [--only ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-./gpu_results}"
shift || true
if [ -n "${PYTHON:-}" ]; then
  :
elif [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
else
  PYTHON=python3
fi
exec timeout 470 "$PYTHON" scripts/gpu_check.py --out "$OUT" "$@"
