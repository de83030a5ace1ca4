"""Producers: modules whose weight rows are new channels (Linear, Conv, ConvTranspose, Embedding)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from fprune.analysis.context import Rule, RuleContext
from fprune.analysis.rules.common import in_width, resolve_width, sole_layout
from fprune.analysis.values import Layout, Seg, Value

__all__ = ["RULES"]


def _producer(in_dim: int, out_dim: int, spatial_dims: int, out_size: Callable[[nn.Module], int]) -> Rule:
    """Linear / Conv: reads channels on `in_dim`, emits a new space on `out_dim`."""

    def rule(ctx: RuleContext) -> Value:
        module = ctx.module
        layout, others = ctx.first_tracked()
        in_layout = None
        if layout is not None:
            if others or layout.dim != in_dim:
                across = in_dim == -1 and not spatial_dims and not others
                ctx.unknown(f"reads pruned channels on dim {layout.dim}, expected {in_dim}" + (
                    ": a Linear across another dim (MLP-Mixer's token mixing) maps a removed, zero channel "
                    "to its bias, so removing the channel is not exact" if across else ""))
                layout = None
            else:
                in_layout = resolve_width(ctx, layout, in_width(module))
        name = str(ctx.target)
        space = ctx.producer_space(name, out_size(module))
        ctx.add_role(in_layout, space)  # on a conflict the inputs are blocked; the output is still new
        rank = (spatial_dims + 2) if spatial_dims else (layout.rank if layout else None)
        return Layout(out_dim, (Seg(space, out_size(module)),), rank=rank, spatial=None if spatial_dims else 1)

    return rule


def _linear_or_conv(spatial: int) -> Rule:
    """Linear (`spatial` 0) or an N-d convolution; grouped and depthwise convolutions included."""
    in_dim = -1 if spatial == 0 else -(spatial + 1)
    size: Callable[[Any], int] = (
        (lambda m: int(m.out_features)) if spatial == 0 else (lambda m: int(m.out_channels))
    )
    base = _producer(in_dim, in_dim, spatial, size)

    def rule(ctx: RuleContext) -> Value:
        module = ctx.module
        if spatial and _is_depthwise(module):
            return _depthwise(ctx, -(spatial + 1))
        if len(ctx.args) != 1 or ctx.kwargs:
            ctx.unknown()
            return None
        if spatial and getattr(module, "groups", 1) != 1:
            return _grouped(ctx, base)
        return base(ctx)

    return rule


def _grouped(ctx: RuleContext, base: Rule) -> Value:
    """A grouped convolution prunes whole conv groups: group j reads input block j, writes output block j.

    Both sides are refined into units of one conv group, and the two unit spaces are merged, so
    removing a unit removes its output rows and the producer's channels that feed it (like a
    depthwise conv, of which this is the generalisation).
    """
    module = ctx.module
    g = int(module.groups)
    out = base(ctx)
    role = ctx.role(ctx.module_name)
    if not isinstance(out, Layout) or role is None or role.out_space is None:
        return out
    layout = role.in_layout
    if layout is None:  # removing a conv group removes its input block, which nothing here can prune
        ctx.block(out, "unknown", f"grouped convolution (groups={g}) whose input channels are not "
                  "produced by a prunable module: its conv groups cannot be removed")
        return out
    in_unit = None  # refined first, so that the group is named after the producer upstream
    if len(layout.segs) == 1 and layout.factor == 1:
        in_unit = ctx.refine(layout.segs[0].space, g, int(module.in_channels) // g, 1)
    out_unit = ctx.refine(role.out_space, g, int(module.out_channels) // g, 1)
    if out_unit is None or in_unit is None or not ctx.couple(in_unit, out_unit):
        why = (f"grouped convolution (groups={g}) reads channels that do not split into its groups "
               "(a concatenation, a flatten, or a split made elsewhere)")
        ctx.block(layout, "unknown", why)
        ctx.block(out, "unknown", why)
        return out
    ctx.block(layout, "fold", "a grouped convolution lies between producer and consumer")
    return out


def _conv_transpose(spatial: int) -> Rule:
    """ConvTranspose: reads channels on dim 1, emits out_channels on dim 1 (weight is (in, out, ...))."""
    dim = -(spatial + 1)
    size: Callable[[Any], int] = lambda m: int(m.out_channels)
    base = _producer(dim, dim, spatial, size)

    def rule(ctx: RuleContext) -> Value:
        module = ctx.module
        if len(ctx.args) != 1 or ctx.kwargs or module.groups != 1:
            why = (f"grouped transposed convolution (groups={module.groups}) is not supported"
                   if module.groups != 1 else "transposed convolution called with an output size")
            ctx.unknown(why)
            return None
        return base(ctx)

    return rule


def _embedding(ctx: RuleContext) -> Value:
    """Embedding: a producer whose channels are the columns of its weight (one row per index)."""
    module = ctx.module
    assert isinstance(module, nn.Embedding)
    if len(ctx.args) != 1 or ctx.kwargs:
        ctx.unknown()
        return None
    ctx.unknown("indexes an embedding with pruned channels")  # blocks tracked indices, if any
    name = str(ctx.target)
    space = ctx.producer_space(name, int(module.embedding_dim))
    ctx.add_role(None, space)
    if module.max_norm is not None:
        ctx.block_spaces([space], "inexact", "max_norm renormalises each embedding over its channels, "
                         "so removing channels changes the kept ones; pass approximate=True to prune anyway")
    return Layout(-1, (Seg(space, int(module.embedding_dim)),), rank=None, spatial=1)


def _is_depthwise(module: Any) -> bool:
    groups = getattr(module, "groups", 1)
    return bool(groups > 1 and module.in_channels == groups == module.out_channels)


def _depthwise(ctx: RuleContext, dim: int) -> Value:
    """A depthwise conv maps channel c to channel c: channels pass through, its filters are per-channel."""
    layout = sole_layout(ctx) if len(ctx.args) == 1 and not ctx.kwargs else None
    if layout is None:
        ctx.unknown()
        return None
    if layout.dim != dim:
        ctx.unknown(f"reads pruned channels on dim {layout.dim}, expected {dim}")
        return None
    resolved = resolve_width(ctx, layout, int(ctx.module.in_channels))
    if resolved is None or not ctx.add_role(resolved, None):
        return None
    ctx.block(resolved, "fold", "a depthwise convolution lies between producer and consumer")
    return replace(ctx.with_path(resolved), spatial=None)


def _functional_linear(ctx: RuleContext) -> Value:
    """F.linear on tensors read directly (timm's Linear subclass, traced through): a consumer.

    The input's channels on dim -1 slice the columns of a weight only this node reads; the output
    is not pruned.  A weight read elsewhere too (tied) or a tracked weight is not sliced.
    """
    x, weight, bias = ctx.arg(0, "input", None), ctx.arg(1, "weight", None), ctx.arg(2, "bias", None)
    layout, others = ctx.first_tracked()
    found = ctx.own_tensor(weight) if ctx.is_node(weight) and ctx.value(weight) is None else None
    tensor = ctx.model_tensor(found[0]) if found is not None else None
    if layout is not None and all(o is weight or o is bias for o in others) and ctx.value(x) is layout and \
            layout.dim == -1 and ctx.value(weight) is None and (bias is None or ctx.value(bias) is None) and \
            tensor is not None and tensor.dim() == 2 and found is not None:
        resolved = resolve_width(ctx, layout, int(tensor.shape[1]))
        if resolved is None:
            return None
        ctx.tensor_role(found[0], replace(resolved, rank=2, dim=-1, spatial=None),
                        found[1] if found[1] is not found[0] else None)
        ctx.block(resolved, "fold", "F.linear on a module's own tensors: no module bias to fold into")
        return None
    if any(True for _ in ctx.tracked_inputs()):
        ctx.unknown("F.linear on a weight that is not one nn.Linear's own (a Linear subclass traced through, "
                    "or a weight tied to another module) cannot be sliced")
    return None


RULES = {"linear": _linear_or_conv(0), "embedding": _embedding, "functional_linear": _functional_linear}
RULES.update({f"conv{k}d": _linear_or_conv(k) for k in (1, 2, 3)})
RULES.update({f"conv_transpose{k}d": _conv_transpose(k) for k in (1, 2, 3)})
