"""fprune.hf timings: a 7B-shaped Llama on the meta device, and tiny random families with real weights.

Meta: ``LlamaConfig`` with Llama-2-7B's shapes (hidden 4096, 32 layers, 32 heads, 32 KV heads,
intermediate 11008, vocab 32000) built on the meta device (no memory, no values), then

* the export call alone (``fprune.export`` on the same dummy ids ``fprune.hf.trace`` builds);
* the whole prune: ``fprune.hf.trace`` + ``score_random(0)`` + ``widths(heads=0.25, mlp=0.25, hidden=0.25)``
  + ``fprune.hf.apply``, each stage timed;

the issue's target is whole prune <= 2x the export call.  Tiny (hidden 64, 2 layers): the same
stages with real weights and ``score_l1``.  One torch thread; the median of ``--reps`` runs.

    .venv/bin/python benchmarks/bench_hf.py [--reps 3] [--layers 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import transformers

import fprune
from fprune import hf


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _stages(model: torch.nn.Module, scorer: Any, stage: Any) -> dict[str, float]:
    t_trace, program = _timed(lambda: hf.trace(model))
    t_score, scored = _timed(lambda: scorer(program))
    t_mask, plan = _timed(lambda: stage(scored))
    t_apply, small = _timed(lambda: hf.apply(plan))
    kept = sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in model.parameters())
    return {"trace": t_trace, "score": t_score, "mask": t_mask, "apply": t_apply,
            "total": t_trace + t_score + t_mask + t_apply, "kept": kept}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
                                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                      max_position_embeddings=4096)
    with torch.device("meta"):
        big = transformers.LlamaForCausalLM(config)
    ids = torch.zeros((1, 8), dtype=torch.long, device="meta")
    export_times, runs = [], []
    for _ in range(args.reps):
        export_times.append(_timed(lambda: fprune.export(big, kwargs={"input_ids": ids, "use_cache": False}))[0])
        runs.append(_stages(big, fprune.score_random(0), hf.widths(heads=0.25, mlp=0.25, hidden=0.25)))
    m, e = _median(runs), statistics.median(export_times)
    print(f"llama-7B shapes on meta, {args.layers} layers: export alone {e:.2f} s; trace {m['trace']:.2f} + score "
          f"{m['score']:.2f} + mask {m['mask']:.2f} + apply {m['apply']:.2f} = {m['total']:.2f} s "
          f"({m['total'] / e:.2f}x the export); params kept {m['kept']:.1%}")
    tiny = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                vocab_size=256, max_position_embeddings=64)
    cases = {
        "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny, num_key_value_heads=2)),
                  hf.widths(kv_heads=0.5, mlp=0.3, hidden=0.3)),
        "qwen2": (lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**tiny, num_key_value_heads=2)),
                  hf.widths(kv_heads=0.5, mlp=0.3, hidden=0.3)),
        "bert": (lambda: transformers.BertModel(transformers.BertConfig(**tiny)), hf.widths(mlp=0.3)),
    }
    for name, (build, stage) in cases.items():
        torch.manual_seed(0)
        model = build().eval()
        m = _median([_stages(model, fprune.score_l1, stage) for _ in range(args.reps)])
        print(f"{name} (tiny, real weights): trace {m['trace']:.3f} + score {m['score']:.3f} + mask {m['mask']:.3f} "
              f"+ apply {m['apply']:.3f} = {m['total']:.3f} s; params kept {m['kept']:.1%}")


if __name__ == "__main__":
    main()
