"""Benchmark: ``fprune.apply_patterns`` against the torch.ao reference structured pruner.

For deep Linear+ReLU (``mlp``) and Conv2d+ReLU (``cnn``) chains of width 64, the same
keep-masks (half of every hidden layer's channels; the last layer's outputs are kept)
are applied three ways, interleaved within each repetition (the order rotates):

* ``fprune``: ``apply_patterns(model, masks)``, tracing included.
* ``reference``: torch.ao ``BaseStructuredSparsifier`` on a fresh deep copy of the model
  (the copy is made outside the timed region): construct the pruner, ``prepare``,
  ``step`` (whose ``update_mask`` writes the fixed masks) and ``prune``.
* ``floor``: ``torch.fx.symbolic_trace(model)`` plus one ``index_select`` per pruned
  dimension of every pruned tensor (weight rows, bias, next weight's columns): the least
  work any fx rewrite producing new tensors must do.

Times are medians over the repetitions of the process CPU time (``--clock wall`` for
``perf_counter``; on an idle machine with one torch thread the two agree, on a shared one
CPU time is steadier); speedup and fprune/floor are medians of the per-repetition ratios.
The garbage collector is disabled inside each timed call (as ``timeit`` does) and run
between calls.  Before timing, each configuration is checked once, untimed: fprune's result
and the reference's have the same parameter names and shapes and compute the same output
(float64, small input).

The CNN convolutions have no bias: with a bias and ``padding=1`` the reference keeps
every conv at full size (``prune_conv2d_padded`` only zeroes), so there would be no
common result to compare against.

Targets (from the issue), checked at depths 128 and 512 and printed as PASS/FAIL:
fprune is >= 8x faster than the reference, fprune / floor <= 2.5, and
fprune(512) / fprune(128) <= 4.5.

Usage::

    .venv/bin/python benchmarks/bench_apply.py            # depths 8, 32, 128, 512 (~2-4 min)
    .venv/bin/python benchmarks/bench_apply.py --quick    # depths 8, 32 (smoke run)

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.pruning._experimental.pruner import BaseStructuredSparsifier

# Import the checkout's fprune, whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fprune import apply_patterns  # noqa: E402

WIDTH = 64
FAMILIES = ("mlp", "cnn")
DEPTHS = (8, 32, 128, 512)
QUICK_DEPTHS = (8, 32)
REPS = {8: 31, 32: 21, 128: 11, 512: 5}  # fewer at 512: the reference takes 1.5-2 s a run there
TARGET_SPEEDUP = 8.0  # fprune at least this much faster than the reference ...
TARGET_FLOOR = 2.5  # ... within this factor of the floor ...
TARGET_SCALING = 4.5  # ... and time(512) / time(128) at most this
TARGET_DEPTHS = (128, 512)


# --------------------------------------------------------------------------------------
# Models and masks


def build(family: str, depth: int) -> nn.Sequential:
    """`depth` producers of width 64, a ReLU between consecutive ones."""
    layers: list[nn.Module] = []
    for i in range(depth):
        if family == "mlp":
            layers.append(nn.Linear(WIDTH, WIDTH))
        else:
            layers.append(nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False))
        if i < depth - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    # Only the output check depends on the values: std 2/sqrt(fan_in) keeps the *pruned* chain's
    # activations (ReLU, half the channels kept) at a steady scale, so the check is not 0 == 0.
    gen = torch.Generator().manual_seed(depth)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else WIDTH
            p.copy_(torch.randn(p.shape, generator=gen) * (2 / fan_in**0.5 if p.dim() > 1 else 0.1))
    return model


def sample_input(family: str) -> Tensor:
    """A small input for the (untimed) output check."""
    gen = torch.Generator().manual_seed(1)
    shape = (2, WIDTH) if family == "mlp" else (1, WIDTH, 4, 4)
    return torch.randn(shape, generator=gen)


def producers(model: nn.Sequential) -> list[str]:
    """Names of the Linear / Conv2d layers, in order."""
    return [name for name, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))]


def half_masks(model: nn.Sequential) -> dict[str, Tensor]:
    """Keep a seeded random half of every hidden layer's channels; the last layer is not masked."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in producers(model)[:-1]:
        keep = torch.zeros(WIDTH, dtype=torch.bool)
        keep[torch.randperm(WIDTH, generator=gen)[: WIDTH // 2]] = True
        out[name] = keep
    return out


# --------------------------------------------------------------------------------------
# The three contenders


class _FixedMaskPruner(BaseStructuredSparsifier):
    """The reference pruner with a given mask per weight instead of a saliency rule."""

    def __init__(self, keep: Mapping[str, Tensor]) -> None:
        super().__init__(defaults={})
        self._keep = keep

    def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
        mask = getattr(module.parametrizations, tensor_name)[0].mask
        mask.data.copy_(self._keep[kwargs["tensor_fqn"]])


def run_fprune(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    return apply_patterns(model, masks)


def run_reference(model_copy: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """prepare + step + prune, as in the torch.ao docs; mutates `model_copy`."""
    keep = {f"{name}.weight": m for name, m in masks.items()}
    pruner = _FixedMaskPruner(keep)
    pruner.prepare(model_copy, [{"tensor_fqn": fqn} for fqn in keep])
    pruner.step()
    return pruner.prune()


def floor_plan(model: nn.Sequential, masks: Mapping[str, Tensor]) -> list[tuple[Tensor, int, Tensor]]:
    """(tensor, dim, keep-mask) for every pruned dimension of every pruned tensor."""
    modules = dict(model.named_children())
    names = producers(model)
    plan: list[tuple[Tensor, int, Tensor]] = []
    for name, nxt in zip(names, names[1:]):
        if name not in masks:
            continue
        keep, layer = masks[name], modules[name]
        plan.append((layer.weight, 0, keep))
        if layer.bias is not None:
            plan.append((layer.bias, 0, keep))
        plan.append((modules[nxt].weight, 1, keep))
    return plan


def run_floor(model: nn.Module, plan: Sequence[tuple[Tensor, int, Tensor]]) -> list[Tensor]:
    """One symbolic_trace, then one index_select per pruned dimension of every pruned tensor."""
    torch.fx.symbolic_trace(model)
    with torch.no_grad():
        return [t.index_select(dim, keep.nonzero().squeeze(1)) for t, dim, keep in plan]


# --------------------------------------------------------------------------------------
# Checking and timing


def check(family: str, model: nn.Module, masks: Mapping[str, Tensor]) -> str:
    """fprune and the reference agree on every parameter's name and shape, and on the output."""
    ours = run_fprune(model, masks)
    ref = run_reference(copy.deepcopy(model), masks)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    if ours_shapes != ref_shapes:
        diff = sorted(k for k in ours_shapes.keys() | ref_shapes.keys() if ours_shapes.get(k) != ref_shapes.get(k))
        raise AssertionError(f"{family}: fprune and the reference differ on {diff[:6]}")
    first = producers(model)[0]
    pruned_width = ours.get_submodule(first).weight.shape[0]
    if pruned_width != WIDTH // 2:
        raise AssertionError(f"{family}: layer {first!r} has {pruned_width} outputs, expected {WIDTH // 2}")
    x = sample_input(family).double()
    with torch.no_grad():  # in float64: a 512-layer product must neither underflow nor overflow
        y_ours, y_ref = copy.deepcopy(ours).double()(x), copy.deepcopy(ref).double()(x)
    err = (y_ours - y_ref).abs().max().item()
    scale = y_ref.abs().max().item()
    if not torch.allclose(y_ours, y_ref, rtol=1e-4, atol=1e-6 + 1e-4 * scale):
        raise AssertionError(f"{family}: outputs differ by {err:.3g} (output scale {scale:.3g})")
    return f"{len(ours_shapes)} tensors with equal shapes, max |output diff| {err:.2g} (scale {scale:.2g})"


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    """Seconds for one call, with the garbage collector off during it (collected just before)."""
    gc.collect()
    gc.disable()
    try:
        start = clock()
        fn()
        return clock() - start
    finally:
        gc.enable()


@dataclass(frozen=True)
class Row:
    family: str
    depth: int
    reps: int
    fprune: float  # median seconds
    reference: float
    floor: float
    speedup: float  # median over repetitions of reference / fprune (paired: same repetition)
    over_floor: float  # median over repetitions of fprune / floor


def measure(family: str, depth: int, reps: int, clock: Callable[[], float]) -> tuple[Row, str]:
    model = build(family, depth)
    masks = half_masks(model)
    checked = check(family, model, masks)  # also warms every path up
    plan = floor_plan(model, masks)
    times: dict[str, list[float]] = {"fprune": [], "reference": [], "floor": []}
    order = ["fprune", "reference", "floor"]
    gc.collect()
    gc.freeze()  # torch's ~10^5 long-lived objects: keeps each gc.collect() between calls cheap
    try:
        for rep in range(reps):
            for name in order[rep % 3:] + order[: rep % 3]:
                if name == "fprune":
                    times[name].append(timed(lambda: run_fprune(model, masks), clock))
                elif name == "reference":
                    fresh = copy.deepcopy(model)  # not timed
                    times[name].append(timed(lambda: run_reference(fresh, masks), clock))
                    del fresh
                else:
                    times[name].append(timed(lambda: run_floor(model, plan), clock))
    finally:
        gc.unfreeze()
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = statistics.median(r / f for r, f in zip(times["reference"], times["fprune"]))
    over_floor = statistics.median(f / c for f, c in zip(times["fprune"], times["floor"]))
    return Row(family, depth, reps, med["fprune"], med["reference"], med["floor"], speedup, over_floor), checked


# --------------------------------------------------------------------------------------
# Report


def table(rows: Sequence[Row]) -> str:
    by = {(r.family, r.depth): r for r in rows}
    lines = [
        "| family | depth | reps | fprune ms | reference ms | floor ms | speedup vs reference | fprune / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.family} | {r.depth} | {r.reps} | {r.fprune * 1e3:.1f} | {r.reference * 1e3:.1f} | "
            f"{r.floor * 1e3:.1f} | {r.speedup:.1f}x | {r.over_floor:.2f} |"
        )
    scaling = []
    for family in dict.fromkeys(r.family for r in rows):
        a, b = by.get((family, 128)), by.get((family, 512))
        if a and b:
            scaling.append(
                f"| {family} | {b.fprune / a.fprune:.2f} | {b.reference / a.reference:.2f} | {b.floor / a.floor:.2f} |"
            )
    lines += ["", "Times are medians; the two ratios are medians of the per-repetition ratios "
              "(the three runs of a repetition are back to back)."]
    if scaling:
        lines += ["", "Scaling, median time at depth 512 / median time at depth 128 (4.0 = linear):", "",
                  "| family | fprune | reference | floor |", "|---|---:|---:|---:|", *scaling]
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> tuple[list[str], bool]:
    by = {(r.family, r.depth): r for r in rows}
    lines: list[str] = []
    ok = True

    def say(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        lines.append(f"- {'PASS' if passed else 'FAIL'}: {text}")

    for family in dict.fromkeys(r.family for r in rows):
        for depth in TARGET_DEPTHS:
            r = by.get((family, depth))
            if r is None:
                lines.append(f"- n/a: {family} depth {depth} not measured (run without --quick)")
                continue
            say(r.speedup >= TARGET_SPEEDUP,
                f"{family} depth {depth}: {r.speedup:.1f}x faster than the reference (target >= {TARGET_SPEEDUP:g}x)")
            say(r.over_floor <= TARGET_FLOOR,
                f"{family} depth {depth}: {r.over_floor:.2f}x the floor (target <= {TARGET_FLOOR:g}x)")
        a, b = by.get((family, 128)), by.get((family, 512))
        if a and b:
            say(b.fprune / a.fprune <= TARGET_SCALING,
                f"{family}: time(512) / time(128) = {b.fprune / a.fprune:.2f} (target <= {TARGET_SCALING:g})")
    return lines, ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 8 and 32 only (smoke run)")
    parser.add_argument("--depths", type=int, nargs="+", help="depths to run (default 8 32 128 512)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: process CPU time (default; steady on a shared machine), wall: perf_counter")
    args = parser.parse_args(argv)
    depths = args.depths or (QUICK_DEPTHS if args.quick else DEPTHS)

    torch.set_num_threads(1)
    print(f"# torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, width {WIDTH}, clock {args.clock}")
    rows = []
    for family in args.families:
        for depth in depths:
            reps = REPS.get(depth, 5)
            start = time.perf_counter()
            row, checked = measure(family, depth, reps, CLOCKS[args.clock])
            rows.append(row)
            print(f"# {family} depth {depth}: {reps} reps in {time.perf_counter() - start:.1f} s; check: {checked}",
                  flush=True)
    print()
    print(table(rows))
    print()
    lines, ok = verdicts(rows)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
