"""Exact transformer widths on timm (issue #14): parameters and FLOPs kept, exactness, time vs Torch-Pruning.

Runs only under the benchmark environment ``.venv-bench`` (``benchmarks/setup_bench_env.sh``:
timm and torch-pruning beside a CPU torch).  Nothing is downloaded (``pretrained=False``, random
weights, eval mode; input ``randn(1, 3, H, W)`` at the model's default resolution).

For every model, at ``topk_mask(0.3)`` with L1 scores and default (exact) options:

* **params / FLOPs kept**: of the pruned model against the original (``torch.utils.flop_counter``,
  one float32 forward);
* **exact**: ``max |pruned(x) - zeroed(x)|`` in float64, ``zeroed`` the original with every slice
  of ``plan.params()`` set to zero (``tests/model_strategies.zero_slices``);
* **approximate**: the same pipeline under ``score_with(score_l1, approximate=True)``: parameters
  kept and whether the result holds any fprune module (it must not);
* **time**: the whole pipeline ``pipe(model, score_l1, topk_mask(0.3), apply_patterns)`` (trace or
  export included), median of ``--reps``, one torch thread;
* **Torch-Pruning** (1.6.1): ``MetaPruner`` with ``MagnitudeImportance(p=1)``, ``pruning_ratio=0.3``,
  the classifier ignored, ViT attention per TP's own timm recipe (``bench_architectures.tp_run``);
  parameters kept, and the time of building the pruner plus ``step()`` (deepcopy outside the timer),
  median of ``--reps``; a failure or a run past ``--tp-timeout`` seconds is recorded.

Every model is pruned through both front-ends where it can be: ``torch.fx`` (``fprune.trace``) and
``torch.export`` (``fprune.export``, the export call inside the timed pipeline); the five models of
issue #7 only through the second (torch.fx cannot read them).  Torch-Pruning runs once per model.

    .venv-bench/bin/python benchmarks/bench_widths.py [--reps 3] [--models a,b] [--markdown OUT.md]
"""

from __future__ import annotations

import sys
import types

for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import argparse  # noqa: E402
import copy  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from toolz import pipe  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.export import ExportedProgram  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timm  # noqa: E402

import bench_architectures as arch  # noqa: E402
from bench_export import _median  # noqa: E402
from bench_export_timm import _zero_slices as zero_slices  # noqa: E402  # works without hypothesis
from fprune import apply_patterns, export, score_l1, score_with, topk_mask  # noqa: E402

SPARSITY = 0.3
FX_MODELS = ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto",
             "ghostnet_100", "mobilenetv3_small_100", "edgenext_xx_small", "mixer_s16_224", "levit_128s",
             "resnet18", "efficientnet_b0"]
EXPORT_MODELS = ["crossvit_tiny_240", "twins_svt_small", "mobilevit_xxs", "mobilevitv2_050", "tiny_vit_5m_224"]
VIT = {"vit_tiny_patch16_224", "deit_tiny_patch16_224"}


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def make_input(model: nn.Module, dtype: torch.dtype) -> Tensor:
    shape = (1, *model.default_cfg["input_size"])
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def module_of(result: Any) -> nn.Module:
    return result.module() if isinstance(result, ExportedProgram) else result


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def has_fprune_module(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("fprune") for m in model.modules())


def pipeline(front: str, model: nn.Module, x: Tensor, scorer: Any = score_l1) -> tuple[Any, Any]:
    """(plan, pruned) through `front` ("fx" or "export")."""
    source = export(model, (x,)) if front == "export" else model
    plan = pipe(source, scorer, topk_mask(SPARSITY))
    return plan, apply_patterns(plan)


def run_tp(name: str, reps: int, timeout: int) -> dict[str, Any]:
    """Torch-Pruning's parameters kept and time, or the failure."""
    spec = arch.timm_spec(name, reps, vit=name in VIT)
    arch.SPARSITY = SPARSITY
    original = build(name)
    x = make_input(original, torch.float32)
    times, kept = [], None
    signal.signal(signal.SIGALRM, _alarm)
    try:
        for _ in range(reps):
            model = copy.deepcopy(original)
            signal.alarm(timeout)
            start = time.perf_counter()
            arch.tp_run(spec, model, x, [])
            times.append(time.perf_counter() - start)
            signal.alarm(0)
            kept = count(model) / count(original)
            model(x)  # the pruned model must run
    except _Timeout:
        return {"tp_error": f"no result after {timeout} s"}
    except Exception as e:  # noqa: BLE001 - a failure of the peer is a result
        signal.alarm(0)
        return {"tp_error": f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"}
    return {"tp_params": kept, "tp_time": statistics.median(times)}


def bench(name: str, front: str, reps: int, tp_timeout: int, with_tp: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "front": front}
    model = build(name)
    x = make_input(model, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            plan, pruned = pipeline(front, model, x)
            small = module_of(pruned)
            row["params"] = count(small) / count(model)
            row["flops"] = flops(small, x) / flops(model, x)
            row["time"] = _median(lambda: pipeline(front, model, x), reps)[0]
            model64, x64 = copy.deepcopy(model).double(), x.double()
            plan64, pruned64 = pipeline(front, model64, x64)
            with torch.no_grad():
                got = module_of(pruned64)(x64)
                want = zero_slices(model64, plan64.params())(x64)
            row["exact"] = float((got - want).abs().max())
            _, approx = pipeline(front, model, x, score_with(score_l1, approximate=True))
            row["approx_params"] = count(module_of(approx)) / count(model)
            row["approx_fprune_module"] = has_fprune_module(module_of(approx))
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    if with_tp:
        row.update(run_tp(name, reps, tp_timeout))
    return row


def _pct(v: Any) -> str:
    return "" if v is None else f"{v:.1%}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | front-end | params kept | FLOPs kept | max abs err (f64) | approximate: params / fprune module | "
        "time (s) | TP params kept | TP time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['front']} | error: {r['error']} | | | | | "
                         f"{_pct(r.get('tp_params')) or r.get('tp_error', '')} | |")
            continue
        tp = _pct(r.get("tp_params")) if "tp_params" in r else r.get("tp_error", "(above)")
        tp_time = f"{r['tp_time']:.2f}" if "tp_time" in r else ""
        lines.append(
            f"| {r['name']} | {r['front']} | {_pct(r['params'])} | {_pct(r['flops'])} | {r['exact']:.1e} | "
            f"{_pct(r['approx_params'])} / {'yes' if r['approx_fprune_module'] else 'no'} | {r['time']:.2f} | "
            f"{tp} | {tp_time} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default=",".join(FX_MODELS + EXPORT_MODELS))
    parser.add_argument("--tp-timeout", type=int, default=300)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models.split(","):
        fronts = ["export"] if name in EXPORT_MODELS else ["fx", "export"]
        for front in fronts:
            rows.append(bench(name, front, args.reps, args.tp_timeout, with_tp=front == fronts[0]))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = (f"# torch {torch.__version__}, timm {timm.__version__}, torch threads 1, topk_mask({SPARSITY}), "
            f"median of {args.reps}\n\n{table(rows)}\n")
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
