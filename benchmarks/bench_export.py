"""The torch.export path: analysis + score + mask, and apply_patterns, against the export call itself.

Ratios are measured in one run on one machine (median of --reps, torch threads 1), so machine noise
cancels.  Models: a Llama-shaped ``LlamaForCausalLM`` from a small config (needs transformers; else
skipped) and the hand-written ViT of ``tests/models.py``.  Every pruned program is checked against
the original with the removed slices zeroed (float64).

    .venv/bin/python benchmarks/bench_export.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fprune import apply_patterns, export, score_l1, topk_mask  # noqa: E402


def _median(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _cases() -> list[tuple[str, torch.nn.Module, tuple[Any, ...], dict[str, Any]]]:
    from models import ViTBlockNet, seeded

    vit = seeded(ViTBlockNet(), 0).eval()
    cases = [("ViTBlockNet (tests/models.py)", vit, (torch.randn(2, 3, 8, 8, dtype=torch.float64),), {})]
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        print("# transformers not installed: Llama case skipped")
        return cases
    cfg = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=1000)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(cfg).double().eval()
    ids = torch.randint(0, 1000, (1, 32))
    cases.append(("LlamaForCausalLM (h256, 4 layers, 8/4 heads)", llama, (), {"input_ids": ids, "use_cache": False}))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    reps = parser.parse_args().reps
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"# torch {torch.__version__}, threads 1, median of {reps}")
    print("| model | export s | analysis+score+mask s | ratio | apply s | ratio | params kept | max err |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, model, args, kwargs in _cases():
        t_export, ep = _median(lambda: export(model, args, kwargs), reps)
        t_plan, plan = _median(lambda: topk_mask(0.3)(score_l1(ep)), reps)
        t_apply, small = _median(lambda: apply_patterns(plan), reps)
        before = sum(t.numel() for t in ep.state_dict.values())
        after = sum(t.numel() for t in small.state_dict.values())
        from model_strategies import zero_slices

        ref = zero_slices(model, plan.params())
        out, want = small.module()(*args, **kwargs), ref(*args, **kwargs)
        if hasattr(out, "logits"):
            out, want = out.logits, want.logits
        err = float((out - want).abs().max())
        print(f"| {name} | {t_export:.3f} | {t_plan:.3f} | {t_plan / t_export:.2f}x | {t_apply:.3f} | "
              f"{t_apply / t_export:.2f}x | {after / before:.1%} | {err:.1e} |")


if __name__ == "__main__":
    main()
