#!/usr/bin/env bash
# Create .venv and install mega2bart with the CPU build of torch (pinned first, so pip does not
# pull a multi-GB CUDA build), the test tools (the browser test's Playwright among them), the demo page's Gradio
# and the offline material (BPE files, ACLSum).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,offline,demo]"
.venv/bin/python -c "import torch, transformers, mega2bart; print(f'torch {torch.__version__}, transformers {transformers.__version__}, mega2bart {mega2bart.__version__}')"
