"""Latency of timm ResNet-18 pruned at 50% by fprune and by Torch-Pruning, alone and interleaved.

A focused check of bench_architectures.py's speedup / MAC-reduction column, where the two pruned
models have the same shapes (same MACs) and the verdict rests on a few percent.  Runs under the
benchmark environment only (``benchmarks/setup_bench_env.sh``)::

    .venv-bench/bin/python benchmarks/latency_probe.py [--rounds 12] [--batch 8]
"""

from __future__ import annotations

import sys
import types

for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))  # torchvision from PyPI is CUDA-linked

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from toolz import pipe  # noqa: E402

from fprune import apply_patterns, score_l1, topk_mask  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    example = torch.randn(1, 3, 224, 224)
    ours = pipe(model, score_l1, topk_mask(0.5), apply_patterns).eval()
    theirs = copy.deepcopy(model)
    tp.pruner.MetaPruner(theirs, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=[theirs.fc]).step()
    same = {n: p.shape for n, p in ours.named_parameters()} == {n: p.shape for n, p in theirs.named_parameters()}
    x = torch.randn(args.batch, 3, 224, 224)
    times: dict[str, list[float]] = {"fprune": [], "torch-pruning": []}
    with torch.no_grad():
        ours(x), theirs(x)
        for r in range(args.rounds):  # interleaved, the order alternating
            pair = [("fprune", ours), ("torch-pruning", theirs)]
            for name, module in pair if r % 2 else pair[::-1]:
                start = time.process_time()
                module(x)
                times[name].append(time.process_time() - start)
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"same parameter shapes: {same}; batch {args.batch}, {args.rounds} rounds, one thread, process time")
    for name, ms in medians.items():
        print(f"{name}: {ms:.1f} ms")
    print(f"fprune / torch-pruning: {medians['fprune'] / medians['torch-pruning']:.3f}")


if __name__ == "__main__":
    main()
