#!/usr/bin/env bash
# Builds .venv-bench/: the benchmark-only environment for benchmarks/bench_architectures.py
# (fprune vs Torch-Pruning on timm models).  Never used by the library or the default test run.
#
# PyPI's torchvision is CUDA-linked, and installing timm or torch-pruning with their dependencies
# pulls a CUDA torch.  So torch is installed first, pinned (pip takes the local CPU build), and
# everything else with --no-deps; bench_architectures.py stubs the two torchvision modules that
# need the CUDA-linked extension (torchvision._meta_registrations, _autograd_registrations)
# before importing timm.
#
# Idempotent: re-running only installs what is missing.  Usage, from anywhere:
#     bash benchmarks/setup_bench_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check)

# 1. torch, pinned: never let pip resolve an open-ended torch (it would pick a CUDA build).
"${PIP[@]}" torch==2.13.0

# 2. timm, Torch-Pruning and torchvision without their dependencies.
"${PIP[@]}" --no-deps timm==1.0.31 torch-pruning==1.6.1 torchvision==0.28.0

# 3. The small pure-python (or CPU-only) packages they import, each --no-deps.
#    timm: huggingface_hub, safetensors, pyyaml; torchvision / torch-pruning: numpy, pillow;
#    huggingface_hub 2.x at import: packaging, tqdm, click, httpx2 -> httpcore2, truststore, h11, idna.
"${PIP[@]}" --no-deps \
    numpy==2.4.6 pillow==13.0.0 pyyaml==6.0.3 safetensors==0.8.0 huggingface_hub==2.4.0 \
    packaging==26.3 tqdm==4.70.1 click==8.5.1 httpx2==2.16.2 httpcore2==2.16.2 \
    truststore==0.10.5 h11==0.16.0 idna==3.20

# 4. fprune itself (editable) and its two runtime dependencies.
"${PIP[@]}" --no-deps -e "$ROOT" toolz typing-extensions

# 5. Check: everything imports, with no CUDA torch and no network.
"$VENV/bin/python" - <<'EOF'
import sys, types
for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(name, types.ModuleType(name))
import importlib.metadata
import torch, timm, torch_pruning, fprune
assert torch.version.cuda is None, f"expected a CPU torch, got CUDA {torch.version.cuda}"
tp_version = importlib.metadata.version("torch-pruning")  # its __version__ string still says 1.6.0
print(f"ok: torch {torch.__version__}, timm {timm.__version__}, torch-pruning {tp_version}, fprune {fprune.__version__}")
EOF
