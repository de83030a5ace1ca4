#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (unit, property and doctests) and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
.venv/bin/python -m pytest -q "$@"
.venv/bin/python -m mypy
