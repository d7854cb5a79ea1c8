#!/usr/bin/env bash
# Create (once) the reference environment: torch 2.13.0 + transformers 4.57.1, the last release with the
# MEGA port that scripts/make_fixtures.py, scripts/check_roundtrip_457.py and benchmarks/bench_encoder.py
# compare against. Prints the environment's python on stdout (progress goes to stderr), so
#     "$(bash scripts/reference_env.sh)" scripts/make_fixtures.py
# works from the repository root. Location: $MEGA2BART_REFERENCE_VENV, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/mega2bart/venv-transformers-4.57.1 (the scripts look there by default).
set -euo pipefail
VENV="${MEGA2BART_REFERENCE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mega2bart/venv-transformers-4.57.1}"
PYTHON="${PYTHON:-python3}"
check='import torch, transformers; assert transformers.__version__ == "4.57.1", transformers.__version__'
if ! "$VENV/bin/python" -c "$check" 2>/dev/null; then
  echo "creating the reference environment in $VENV (torch 2.13.0, transformers 4.57.1)" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q torch==2.13.0 >&2
  "$VENV/bin/python" -m pip install -q transformers==4.57.1 >&2
  "$VENV/bin/python" -c "$check"
fi
echo "$VENV/bin/python"
