#!/usr/bin/env bash
# Sets everything up, then runs the main job: `fprune demo` on scikit-learn's bundled digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fprune demo --out "${1:-demo-out}"
