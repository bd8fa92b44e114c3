#!/usr/bin/env bash
# Create .venv and install coopnets with its test tools. torch is pinned (constraints.txt) so
# pip never resolves a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
.venv/bin/python -c "import torch, coopnets; print(f'coopnets {coopnets.__version__}, torch {torch.__version__}')"
