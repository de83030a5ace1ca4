"""Elementwise ops: activations keep the channels; add/sub/mul/div couple every tracked operand."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import own_operand, resolve_width
from fprune.analysis.values import Layout, Value

__all__ = ["RULES"]


_CASTS = ("to", "float", "double", "half", "type")


def _elementwise(ctx: RuleContext) -> Value:
    """f(x) applied to every element: channels pass through unchanged."""
    if ctx.form == "method" and ctx.target in _CASTS and isinstance(ctx.value(ctx.args[0]), Layout) and not any(
            isinstance(ctx.value(a), Layout) for a in (*ctx.args[1:], *ctx.kwargs.values())):
        return ctx.with_path(ctx.value(ctx.args[0]))  # type: ignore[arg-type]  # x.to(dtype or device), dtype read at run time
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
    first = finest = tracked[0]
    for other in tracked[1:]:
        if other.dim != first.dim or other.factor != first.factor:
            ctx.unknown("combines tensors whose channel layouts differ")
            return None
        if [s.size for s in other.segs] != [s.size for s in first.segs]:
            coarse, fine = (first, other) if len(first.segs) < len(other.segs) else (other, first)
            if not _tile(ctx, coarse, fine):
                ctx.unknown("combines tensors whose channel layouts differ (supported besides equal "
                            "layouts: one producer's channels added to n copies of another's, GhostNet)")
                return None
            finest = fine
            continue
        for a, b in zip(first.segs, other.segs):
            if not ctx.couple(a.space, b.space):
                ctx.unknown("combines channels split into heads differently")
                return None
    if len(tracked) > 1:
        # the constant a removed channel emits is now a sum of several producers' constants
        ctx.block(first, "fold", "couples several producers; their biases are not folded")
    return ctx.with_path(first) if len(tracked) == 1 else replace(finest, segs=tuple(replace(s, path=()) for s in finest.segs))


def _tile(ctx: RuleContext, coarse: Layout, fine: Layout) -> bool:
    """Couples one space with n copies of another laid side by side (GhostNet: a conv shortcut added to
    ``cat([a, cheap(a)])``, the depthwise ``cheap`` keeping a's channels): channel ``o*k + u`` of the
    coarse space becomes unit ``u``, the same channel of the fine space in every copy."""
    if len(coarse.segs) != 1 or len(fine.segs) < 2 or coarse.factor != 1:
        return False
    k, n = fine.segs[0].size, len(fine.segs)
    if any(s.size != k or not ctx.same_space(s.space, fine.segs[0].space) for s in fine.segs) or \
            coarse.segs[0].size != n * k:
        return False
    unit = ctx.refine(coarse.segs[0].space, k, 1, n)
    return unit is not None and ctx.couple(unit, fine.segs[0].space)


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
    layout = ctx.value(source)
    slope = ctx.model_tensor(weight)
    if isinstance(layout, Layout) and isinstance(slope, torch.Tensor) and slope.numel() == 1:
        return ctx.with_path(layout)
    ctx.unknown("F.prelu with a weight that is not a single slope read from the model cannot be "
                "sliced; use nn.PReLU(num_parameters) or leave the producing module out of the masks")
    return None


def _cast_as(ctx: RuleContext) -> Value:
    """x.type_as(y): x's channels, in y's dtype; y is read for its dtype only."""
    value = ctx.value(ctx.arg(0, "self", None))
    return ctx.with_path(value) if isinstance(value, Layout) else None


def _where(ctx: RuleContext) -> Value:
    """torch.where(cond, x, y): elementwise choice, coupling tracked x and y like an add.

    The condition must not vary over the channels: its recorded shape has size 1 there (a mask over
    positions); a condition computed from the channels, or of unknown shape, keeps them whole.
    """
    cond, x, y = ctx.arg(0, "condition", None), ctx.arg(1, "input", None), ctx.arg(2, "other", None)
    values = [ctx.value(v) for v in (x, y)]
    layouts = [v for v in values if isinstance(v, Layout)]
    if not layouts:
        if ctx.value(cond) is not None or any(v is not None for v in values):
            ctx.unknown("torch.where on pruned channels it cannot follow")
        return None
    first = layouts[0]
    untracked = [v for v, value in zip((x, y), values) if value is None and ctx.is_node(v)]
    if ctx.value(cond) is not None or any(own_operand(ctx, t, first) != "broadcast" for t in (cond, *untracked)):
        ctx.unknown("torch.where whose condition or other operand may vary over the pruned channels")
        return None
    if len(layouts) == 2:
        a, b = layouts
        if a.dim != b.dim or [s.size for s in a.segs] != [s.size for s in b.segs] or not all(
                ctx.couple(s.space, t.space) for s, t in zip(a.segs, b.segs)):
            ctx.unknown("torch.where over tensors whose channel layouts differ")
            return None
        ctx.block(first, "fold", "torch.where chooses between producers; their biases are not folded")
    return ctx.with_path(first) if len(layouts) == 1 else replace(first, segs=tuple(replace(s, path=()) for s in first.segs))


RULES = {"activation": _elementwise, "binary": binary, "prelu": _prelu, "functional_prelu": _functional_prelu,
         "cast_as": _cast_as, "where": _where}
