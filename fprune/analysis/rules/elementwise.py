"""Elementwise ops: activations keep the channels; add/sub/mul/div couple every tracked operand."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import own_operand, resolve_width
from fprune.analysis.values import Layout, Value

__all__ = ["RULES"]

def _elementwise(ctx: RuleContext) -> Value:
    """f(x) applied to every element: channels pass through unchanged."""
    layout, others = ctx.first_tracked()
    if layout is None:
        return binary(ctx)
    if others:
        # A tensor operand we cannot see (a buffer, a model input) might be per-channel.
        ctx.unknown("combines pruned channels with an untracked tensor operand; "
                      "leave the producing module out of the masks")
        return None
    return ctx.with_path(layout)


def binary(ctx: RuleContext) -> Value:
    """add/sub/mul/div...: couples the channels of every tracked operand."""
    args = ctx.inputs()
    operands: list[Value] = [ctx.value(a) for a in args]
    tracked = [v for v in operands if isinstance(v, Layout)]
    untracked = [a for a, v in zip(args, operands) if v is None]
    if tracked and len(tracked) + len(untracked) == len(operands) and untracked:
        # a model tensor (a position embedding, a per-channel scale) is sliced with the channels
        kinds = [own_operand(ctx, a, tracked[0]) for a in untracked]
        if all(kinds):
            if "role" in kinds:
                ctx.block(tracked[0], "fold", "a model tensor is combined with the channels")
            operands = list[Value](tracked)
    if any(v is None for v in operands) or len(tracked) != len(operands) or not tracked:
        ctx.unknown("combines pruned channels with an untracked tensor operand; "
                      "leave the producing module out of the masks")
        return None
    first = tracked[0]
    for other in tracked[1:]:
        if (
            other.dim != first.dim
            or other.factor != first.factor
            or [s.size for s in other.segs] != [s.size for s in first.segs]
        ):
            ctx.unknown("combines tensors whose channel layouts differ")
            return None
    for other in tracked[1:]:
        for a, b in zip(first.segs, other.segs):
            if not ctx.couple(a.space, b.space):
                ctx.unknown("combines channels split into heads differently")
                return None
    if len(tracked) > 1:
        # the constant a removed channel emits is now a sum of several producers' constants
        ctx.block(first, "fold", "couples several producers; their biases are not folded")
    return ctx.with_path(first) if len(tracked) == 1 else replace(first, segs=tuple(replace(s, path=()) for s in first.segs))


def _prelu(ctx: RuleContext) -> Value:
    module = ctx.module
    assert isinstance(module, nn.PReLU)
    if module.num_parameters == 1:
        return _elementwise(ctx)
    layout, others = ctx.first_tracked()
    if layout is not None and not others and layout.rank is not None and layout.dim == 1 - layout.rank:
        resolved = resolve_width(ctx, layout, module.num_parameters)
        if resolved is not None and ctx.add_role(resolved, None):
            ctx.block(resolved, "fold", "a per-channel PReLU lies between producer and consumer")
            return ctx.with_path(resolved)
        return None
    ctx.unknown("per-channel PReLU on a tensor whose channel dim is not known to be dim 1")
    return None


def _functional_prelu(ctx: RuleContext) -> Value:
    """F.prelu(x, weight): a single slope acts elementwise; a per-channel weight cannot be sliced."""
    source, weight = ctx.arg(0, "input", None), ctx.arg(1, "weight", None)
    layout = ctx.value(source) if ctx.is_node(source) else None
    slope = ctx.model_tensor(weight)
    if isinstance(layout, Layout) and isinstance(slope, torch.Tensor) and slope.numel() == 1:
        return ctx.with_path(layout)
    ctx.unknown("F.prelu with a weight that is not a single slope read from the model cannot be "
                  "sliced; use nn.PReLU(num_parameters) or leave the producing module out of the masks")
    return None


RULES = {"activation": _elementwise, "binary": binary, "prelu": _prelu, "functional_prelu": _functional_prelu}
