"""fprune.hf against Torch-Pruning on tiny random transformers (issue #15, target: time <= TP's).

Each family is built offline from a small config (random weights, float32), then pruned by

* **fprune**: ``hf.trace`` + ``score_l1`` + ``hf.widths(...)`` + ``hf.apply`` (the same class
  back, config updated, checked against the pruned program);
* **Torch-Pruning** 1.6: ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)`` (its LLM example's GroupNormImportance), ``pruning_ratio`` and
  ``head_pruning_ratio`` as below, ``num_heads`` for q/k/v, ``prune_head_dims=False``,
  ``ignored_layers=[lm_head]`` (the recipe of TP's LLM example, written here), and an
  ``output_transform`` picking the logits (TP cannot trace transformers 5's ModelOutput without
  it), then the config fields that example updates by hand.

Each TP run is a subprocess with a time limit (``--timeout``, default 120 s): TP has been seen to
hang on grouped-query attention.  Reported: seconds (median of ``--reps``), parameters kept, whether
the result runs, and whether ``save_pretrained`` -> ``from_pretrained`` gives back the same logits.
Run in the benchmark environment, with transformers installed into it (torch pinned)::

    .venv-bench/bin/pip install -c <(echo torch==2.13.0) "transformers>=5" safetensors
    PYTHONPATH=. .venv-bench/bin/python benchmarks/bench_hf_tp.py [--reps 3] [--timeout 120]
"""

from __future__ import annotations

import sys
import types

# torchvision in the benchmark environment is CUDA-linked (see setup_bench_env.sh), and
# transformers imports it when present: stub the two modules that need its C extension.
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import warnings
from typing import Any

import torch

CASES: dict[str, dict[str, Any]] = {
    "llama (8 heads, 8 KV)": dict(family="llama", heads=8, kv=8, fprune=dict(heads=0.25, mlp=0.25, hidden=0.25)),
    "llama GQA (8 heads, 4 KV)": dict(family="llama", heads=8, kv=4, fprune=dict(kv_heads=0.25, mlp=0.25, hidden=0.25)),
    "qwen2 GQA (8 heads, 4 KV)": dict(family="qwen2", heads=8, kv=4, fprune=dict(kv_heads=0.25, mlp=0.25, hidden=0.25)),
    "bert (8 heads)": dict(family="bert", heads=8, kv=8, fprune=dict(mlp=0.25)),
}
RATIO = 0.25


def _build(case: dict[str, Any]) -> torch.nn.Module:
    import transformers

    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=case["heads"],
                  vocab_size=256, max_position_embeddings=64)
    if case["family"] == "bert":
        model = transformers.BertModel(transformers.BertConfig(**common))
    else:
        config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[case["family"]]
        model = model_cls(config_cls(**common, num_key_value_heads=case["kv"], tie_word_embeddings=False))
    return model.eval()


def _ids() -> torch.Tensor:
    return torch.randint(1, 256, (1, 16), generator=torch.Generator().manual_seed(0))


def _out(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _main_tensor(out: Any) -> torch.Tensor:
    """TP traces one tensor: transformers 5 returns a ModelOutput (TP raises on it otherwise)."""
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _reloads(model: torch.nn.Module, ids: torch.Tensor) -> str:
    try:
        expected = _out(model, ids)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            back = type(model).from_pretrained(tmp).eval()
        return "yes" if torch.allclose(_out(back, ids), expected, atol=1e-5) else "no (other logits)"
    except Exception as exc:  # noqa: BLE001 - a benchmark reports what happened
        return f"no ({type(exc).__name__})"


def _fprune(name: str) -> dict[str, Any]:
    from fprune import hf, score_l1

    case = CASES[name]
    torch.manual_seed(0)
    model = _build(case)
    start = time.perf_counter()
    small = hf.apply(hf.widths(**case["fprune"])(score_l1(hf.trace(model))))
    seconds = time.perf_counter() - start
    kept = sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "kept": kept, "runs": "yes", "reloads": _reloads(small, _ids())}


def _tp(name: str) -> dict[str, Any]:
    import torch_pruning as tp

    case = CASES[name]
    torch.manual_seed(0)
    model = _build(case)
    before = sum(p.numel() for p in model.parameters())
    num_heads: dict[Any, int] = {}
    for module_name, m in model.named_modules():
        if module_name.endswith("self_attn"):
            num_heads |= {m.q_proj: case["heads"], m.k_proj: case["kv"], m.v_proj: case["kv"]}
        elif module_name.endswith("attention.self"):
            num_heads |= {m.query: case["heads"], m.key: case["heads"], m.value: case["heads"]}
    ignored = [model.lm_head] if hasattr(model, "lm_head") else []
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, example_inputs=_ids(), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  global_pruning=False, pruning_ratio=RATIO, ignored_layers=ignored,
                                  num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
                                  head_pruning_ratio=RATIO, output_transform=_main_tensor)
    pruner.step()
    seconds = time.perf_counter() - start
    config = model.config
    first = next(m for n, m in model.named_modules() if n.endswith(("self_attn", "attention.self")))
    q = first.q_proj if hasattr(first, "q_proj") else first.query
    head_dim = getattr(first, "head_dim", None) or getattr(first, "attention_head_size")
    config.hidden_size = model.get_input_embeddings().embedding_dim
    config.num_attention_heads = q.out_features // head_dim
    if case["family"] != "bert" and case["kv"] == case["heads"]:
        config.num_key_value_heads = config.num_attention_heads
    kept = sum(p.numel() for p in model.parameters()) / before
    try:
        _out(model, _ids())
        runs = "yes"
    except Exception as exc:  # noqa: BLE001
        runs = f"no ({type(exc).__name__})"
    return {"seconds": seconds, "kept": kept, "runs": runs, "reloads": _reloads(model, _ids()) if runs == "yes" else "-"}


def _child(tool: str, name: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print(json.dumps((_fprune if tool == "fprune" else _tp)(name)))


def _run(tool: str, name: str, timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, __file__, "--child", tool, name], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout:.0f} s (killed)"}
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:100]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    import torch_pruning
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, torch-pruning "
          f"{torch_pruning.__version__}; hidden 128, 2 layers, one torch thread, median of {args.reps}\n")
    print("| model | fprune widths | fprune s | kept | reloads | TP s | TP kept | TP runs | TP reloads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, case in CASES.items():
        runs = {tool: [_run(tool, name, args.timeout) for _ in range(args.reps)] for tool in ("fprune", "tp")}
        cells = []
        for tool in ("fprune", "tp"):
            ok = [r for r in runs[tool] if "error" not in r]
            if not ok:
                cells.append([runs[tool][0]["error"], "", "", ""][: 3 if tool == "fprune" else 4])
                continue
            seconds = statistics.median(r["seconds"] for r in ok)
            row = [f"{seconds:.3f}", f"{ok[0]['kept']:.1%}"] + ([ok[0]["runs"]] if tool == "tp" else []) + \
                [ok[0]["reloads"]]
            cells.append(row)
        widths = ", ".join(f"{k}={v}" for k, v in case["fprune"].items())
        print(f"| {name} | {widths} | " + " | ".join(cells[0]) + " | " + " | ".join(cells[1]) + " |")


if __name__ == "__main__":
    main()
