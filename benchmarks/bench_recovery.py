"""Accuracy right after pruning, without fine-tuning: scorers x recovery on the digits CNN (issue #16).

The residual CNN of ``fprune demo`` (``DigitsNet``, width 32) is trained on scikit-learn's bundled
digits (the demo's split and recipe); then, for every sparsity, scorer and recovery:

    pipe(model, scorer, topk_mask(sparsity), [reconstruct(calib, method)], apply_patterns)

with ``calib`` = ``--calib`` training images in batches of 64 (the scorers and reconstruct see
the same ones).  Test accuracy is measured right after, no fine-tuning.  Scorers: l1 (weights
only), activation (mean |X|), wanda, flap.  Recovery: none, bias (FLAP's compensation: the
CNN's convs have no bias, so only the Linear head gets one), lstsq (``damp=0.01``).  Also
reported: the seconds of ``reconstruct`` against one forward pass over the calibration batches.

    .venv/bin/python benchmarks/bench_recovery.py [--epochs 12] [--calib 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import torch
from toolz import pipe

from fprune import apply_patterns, reconstruct, score_activation, score_flap, score_l1, score_wanda, topk_mask
from fprune.demo import DigitsNet, _accuracy, _train, load_digits_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits_split(args.seed)
    model = DigitsNet(width=32)
    _train(model, x_train, y_train, epochs=args.epochs, lr=3e-3, batch_size=64, seed=args.seed)
    model.eval()
    dense = _accuracy(model, x_test, y_test)
    calib = [x_train[i:i + 64] for i in range(0, min(args.calib, len(x_train)), 64)]
    forwards = []
    with torch.no_grad():
        for _ in range(6):  # the first is a warm-up
            start = time.perf_counter()
            for b in calib:
                model(b)
            forwards.append(time.perf_counter() - start)
    forward = sorted(forwards[1:])[2]
    scorers: dict[str, Any] = {"l1": score_l1, "activation": score_activation(calib), "wanda": score_wanda(calib),
                               "flap": score_flap(calib)}
    print(f"torch {torch.__version__}; DigitsNet(32) trained {args.epochs} epochs, dense test accuracy "
          f"{dense:.1%}; {len(calib)} calibration batches of 64 ({sum(len(b) for b in calib)} images)\n")
    print("| sparsity | scorer | none | bias | lstsq |")
    print("|---|---|---:|---:|---:|")
    solve_times: dict[str, list[float]] = {"bias": [], "lstsq": []}
    for sparsity in (0.3, 0.5, 0.7):
        for name, scorer in scorers.items():
            plan = pipe(model, scorer, topk_mask(sparsity))
            cells = [f"{_accuracy(apply_patterns(plan), x_test, y_test):.1%}"]
            for method in ("bias", "lstsq"):
                t0 = time.perf_counter()
                solved = reconstruct(calib, method)(plan)
                solve_times[method].append(time.perf_counter() - t0)
                cells.append(f"{_accuracy(apply_patterns(solved), x_test, y_test):.1%}")
            print(f"| {sparsity} | {name} | " + " | ".join(cells) + " |")
    cost = ", ".join(f"{method} median {statistics.median(t):.3f} s = {statistics.median(t) / forward:.1f}x"
                     for method, t in solve_times.items())
    print(f"\nreconstruct: {cost} one forward pass over the calibration batches (median of 5 after a warm-up: "
          f"{forward:.4f} s)")


if __name__ == "__main__":
    main()
