"""Benchmark: ``fprune.compat`` against the torch.ao reference structured pruner it replaces.

Model: an MLP of ``depth`` blocks ``Linear(64, 64) -> ReLU`` and a ``Linear(64, 10)`` head.
Each contender runs the reference's documented workflow on its own fresh deep copy of the
model (copies made outside the timed region), interleaved within each repetition (the order
rotates):

* ``compat``: ``fprune.compat.SaliencyPruner({"sparsity_level": 0.5})``, ``prepare(model,
  None)``, ``step()``, ``prune()``.
* ``reference``: the same with ``torch.ao.pruning._experimental.pruner.SaliencyPruner``.
* ``floor``: what the API itself imposes on any implementation: register a
  ``FakeStructuredSparsity`` parametrization on every weight and move every bias to ``_bias``
  with a ``BiasHook`` (``prepare``), trace the prepared model with ``symbolic_trace`` (``prune``
  returns that GraphModule), remove every parametrization with ``leave_parametrized=True``
  (``prune`` leaves a plain model).  No scoring, no analysis, no slicing.

A second table times ``prepare(model, None)`` alone for both pruners, to show how it scales:
the reference looks every discovered module's name up from the root (quadratic).  There every
depth and both pruners run once per repetition (order rotating), so a slow spell of the machine
hits all of them alike and the scaling ratio time(512) / time(128) compares like with like.

Times are medians over the repetitions of process CPU time (``--clock wall`` for
``perf_counter``); ratios are medians of the per-repetition ratios.  The garbage collector is
disabled inside each timed call (as ``timeit`` does) and run between calls; one torch thread.
Before timing, each depth is checked once, untimed: both pruners give the same masks, the same
parameter names and shapes and the same output (float64).

Targets (issue "compat"), checked at depths 128 and 512 and printed as PASS/FAIL:
prepare+step+prune at least 4x faster than the reference, and prepare() linear in the model
size: time(512) / time(128) <= 4.5 (4.0 is linear), or within 10% of the same ratio for the
floor of prepare() (registering the parametrizations, bias hooks and ``_bias`` alone), whose
per-layer cost grows a little with the model on this machine too (caches).

Usage::

    .venv/bin/python benchmarks/bench_compat.py            # depths 8, 32, 128, 512 (~2-3 min)
    .venv/bin/python benchmarks/bench_compat.py --quick    # depths 8, 32 (smoke run)

Never run by the default test command (pytest collects ``tests`` and ``fprune`` only).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.pruning._experimental import pruner as reference
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fprune import compat  # noqa: E402

WIDTH = 64
HEAD = 10
DEPTHS = (8, 32, 128, 512)
QUICK_DEPTHS = (8, 32)
REPS = {8: 31, 32: 21, 128: 11, 512: 7}
PREPARE_REPS = 15  # prepare() alone: every depth and both pruners interleaved in each repetition
TARGET_SPEEDUP = 4.0
TARGET_SCALING = 4.5
TARGET_DEPTHS = (128, 512)
SPARSITY = 0.5
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def build(depth: int) -> nn.Sequential:
    """`depth` blocks Linear(64, 64) -> ReLU, then Linear(64, 10); seeded."""
    torch.manual_seed(depth)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    layers.append(nn.Linear(WIDTH, HEAD))
    return nn.Sequential(*layers)


def run_pruner(module: Any, model: nn.Module) -> nn.Module:
    pruner = module.SaliencyPruner({"sparsity_level": SPARSITY})
    pruner.prepare(model, None)
    pruner.step()
    return pruner.prune()  # type: ignore[no-any-return]


def run_compat(model: nn.Module) -> nn.Module:
    return run_pruner(compat, model)


def run_reference(model: nn.Module) -> nn.Module:
    return run_pruner(reference, model)


def run_floor(model: nn.Module) -> nn.Module:
    """Register the masks and bias hooks, trace, remove the parametrizations: the API's own cost."""
    linears = register_floor(model)
    traced = torch.fx.symbolic_trace(model)
    for lin in linears:
        parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)
    return traced


def run_prepare(module: Any, model: nn.Module) -> None:
    module.SaliencyPruner({"sparsity_level": SPARSITY}).prepare(model, None)


def register_floor(model: nn.Module) -> list[nn.Linear]:
    """prepare()'s share of the floor: a mask parametrization, _bias and a BiasHook per Linear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for lin in linears:
        p = compat.FakeStructuredSparsity(torch.ones(lin.weight.shape[0], dtype=torch.bool))
        parametrize.register_parametrization(lin, "weight", p, unsafe=True)
        lin.register_parameter("_bias", nn.Parameter(lin.bias.detach()))
        lin.bias = None
        lin.register_forward_hook(compat.BiasHook(p, True))
    return linears


def check(depth: int) -> str:
    """Both pruners give the same masks, parameter shapes and outputs."""
    model = build(depth)
    results = []
    for module in (compat, reference):
        copy_ = copy.deepcopy(model)
        pruner = module.SaliencyPruner({"sparsity_level": SPARSITY})
        pruner.prepare(copy_, None)
        pruner.step()
        masks = {k: v["mask"].clone() for k, v in pruner.state.items()}
        results.append((masks, pruner.prune(), copy_))
    (ours_masks, ours, ours_model), (ref_masks, ref, ref_model) = results
    if ours_masks.keys() != ref_masks.keys() or any(not torch.equal(ours_masks[k], ref_masks[k]) for k in ref_masks):
        raise AssertionError(f"depth {depth}: the masks differ")
    for a, b in ((ours, ref), (ours_model, ref_model)):
        sa = {k: tuple(v.shape) for k, v in a.state_dict().items()}
        sb = {k: tuple(v.shape) for k, v in b.state_dict().items()}
        if sa != sb:
            raise AssertionError(f"depth {depth}: parameter shapes differ: {sorted(set(sa.items()) ^ set(sb.items()))[:4]}")
    x = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y_ours, y_ref = copy.deepcopy(ours).double()(x), copy.deepcopy(ref).double()(x)
    err = (y_ours - y_ref).abs().max().item()
    if not torch.allclose(y_ours, y_ref, rtol=1e-6, atol=1e-9):
        raise AssertionError(f"depth {depth}: outputs differ by {err:.3g}")
    kept = int(ours_model[0].weight.shape[0])
    return f"{len(ours_masks)} masks equal, {len(ours.state_dict())} tensors with equal shapes, max |output diff| {err:.2g}, layer 0 keeps {kept}/{WIDTH}"


def timed(fn: Callable[[nn.Module], Any], model: nn.Module, clock: Callable[[], float]) -> float:
    fresh = copy.deepcopy(model)
    gc.collect()
    gc.disable()
    try:
        start = clock()
        fn(fresh)
        return clock() - start
    finally:
        gc.enable()


def bench(depth: int, reps: int, contenders: dict[str, Callable[[nn.Module], Any]], clock: Callable[[], float]) -> dict[str, list[float]]:
    model = build(depth)
    for fn in contenders.values():  # warm-up
        timed(fn, model, clock)
    names = list(contenders)
    out: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            out[name].append(timed(contenders[name], model, clock))
    return out


def bench_prepare(depths: Sequence[int], reps: int, clock: Callable[[], float]) -> dict[int, dict[str, list[float]]]:
    """prepare(model, None) alone, and its floor; every (depth, contender) pair once per repetition."""
    models = {d: build(d) for d in depths}
    contenders: dict[str, Callable[[nn.Module], Any]] = {
        "compat": lambda m: run_prepare(compat, m),
        "reference": lambda m: run_prepare(reference, m),
        "floor": register_floor,
    }
    pairs = [(d, name) for d in depths for name in contenders]
    out: dict[int, dict[str, list[float]]] = {d: {name: [] for name in contenders} for d in depths}
    for d, name in pairs:  # warm-up
        timed(contenders[name], models[d], clock)
    for rep in range(reps):
        for d, name in pairs[rep % len(pairs):] + pairs[: rep % len(pairs)]:
            out[d][name].append(timed(contenders[name], models[d], clock))
    return out


def ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def ratio(num: Sequence[float], den: Sequence[float]) -> float:
    return statistics.median(n / d for n, d in zip(num, den))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 8 and 32 only")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--depths", type=int, nargs="+", help="depths to run (default 8 32 128 512)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = CLOCKS[args.clock]
    depths = tuple(args.depths) if args.depths else QUICK_DEPTHS if args.quick else DEPTHS
    print(f"# machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}, "
          f"1 torch thread, clock={args.clock}")
    full: dict[int, dict[str, list[float]]] = {}
    for depth in depths:
        start = time.perf_counter()
        note = check(depth)
        full[depth] = bench(depth, REPS.get(depth, 5), {"compat": run_compat, "reference": run_reference, "floor": run_floor}, clock)
        print(f"# depth {depth}: {len(full[depth]['compat'])} reps in {time.perf_counter() - start:.1f} s; check: {note}")
    start = time.perf_counter()
    prep = bench_prepare(depths, PREPARE_REPS, clock)
    print(f"# prepare alone: {PREPARE_REPS} reps of every depth and pruner in {time.perf_counter() - start:.1f} s")
    print()
    print("prepare + step + prune (SaliencyPruner, config None, sparsity 0.5, prune_bias default):")
    print()
    print("| depth | reps | compat ms | reference ms | floor ms | speedup vs reference | compat / floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for depth, r in full.items():
        print(f"| {depth} | {len(r['compat'])} | {ms(r['compat']):.1f} | {ms(r['reference']):.1f} | {ms(r['floor']):.1f} "
              f"| {ratio(r['reference'], r['compat']):.2f}x | {ratio(r['compat'], r['floor']):.2f} |")
    print()
    print("prepare(model, None) alone:")
    print()
    print("| depth | reps | compat ms | reference ms | floor ms | compat us / layer | reference us / layer | floor us / layer | speedup |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for depth, r in prep.items():
        per = {k: ms(v) * 1000 / (depth + 1) for k, v in r.items()}
        print(f"| {depth} | {len(r['compat'])} | {ms(r['compat']):.2f} | {ms(r['reference']):.2f} | {ms(r['floor']):.2f} "
              f"| {per['compat']:.0f} | {per['reference']:.0f} | {per['floor']:.0f} | {ratio(r['reference'], r['compat']):.2f}x |")
    print()
    verdicts = []
    for depth in TARGET_DEPTHS:
        if depth in full:
            s = ratio(full[depth]["reference"], full[depth]["compat"])
            verdicts.append(f"{'PASS' if s >= TARGET_SPEEDUP else 'FAIL'}: depth {depth}: compat is {s:.2f}x faster than the reference (target >= {TARGET_SPEEDUP:g}x)")
    if all(d in prep for d in TARGET_DEPTHS):
        lo, hi = TARGET_DEPTHS
        scale = {name: ms(prep[hi][name]) / ms(prep[lo][name]) for name in ("compat", "reference", "floor")}
        linear = scale["compat"] <= TARGET_SCALING or scale["compat"] <= 1.1 * scale["floor"]
        verdicts.append(
            f"{'PASS' if linear else 'FAIL'}: prepare() time({hi}) / time({lo}) = {scale['compat']:.2f} for compat, "
            f"{scale['floor']:.2f} for the floor (registering the parametrizations alone), {scale['reference']:.2f} "
            f"for the reference; 4.0 = linear (target: <= {TARGET_SCALING:g}, or within 10% of the floor's ratio)")
    print("Verdicts:")
    for v in verdicts:
        print(f"- {v}")


if __name__ == "__main__":
    main()
