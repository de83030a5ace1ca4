#!/usr/bin/env bash
# Creates .venv (if missing) and installs fprune with its extras.
# torch is installed first, pinned, so pip never resolves an open-ended torch
# requirement (which would download several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
# -c pins torch for the whole resolution: transformers must not pull a CUDA torch.
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[test,demo,hf]"
