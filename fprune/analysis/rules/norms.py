"""Normalisation: BatchNorm/InstanceNorm (per channel), LayerNorm (inexact over the channels), GroupNorm."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from fprune.analysis.context import Rule, RuleContext
from fprune.analysis.rules.common import resolve_width, sole_layout
from fprune.analysis.values import Layout, Value

__all__ = ["RULES"]


def _channelwise(spatial_dims: int | None) -> Rule:
    """BatchNorm / InstanceNorm: one parameter per channel on dim 1."""

    def rule(ctx: RuleContext) -> Value:
        layout = sole_layout(ctx)
        if layout is None:
            return None
        module = ctx.module
        ok = layout.dim == -(spatial_dims + 1) if spatial_dims else (
            (layout.dim == -1 and layout.rank in (None, 2)) or (layout.dim == -2 and layout.rank in (None, 3))
        )
        width = int(getattr(module, "num_features"))
        if not ok:
            ctx.unknown(f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
            return None
        resolved = resolve_width(ctx, layout, width)
        if resolved is None or not ctx.add_role(resolved, None):
            return None
        ctx.block(resolved, "fold", "a normalisation layer lies between producer and consumer")
        return resolved

    return rule


def _layer_norm(ctx: RuleContext) -> Value:
    layout = sole_layout(ctx)
    if layout is None:
        return None
    module = ctx.module
    assert isinstance(module, nn.LayerNorm)
    normed = len(module.normalized_shape)
    if layout.dim < -normed:  # normalises other dims: channels stay apart
        ctx.block(layout, "fold", "a LayerNorm over other dims turns a constant channel into its bias")
        return ctx.with_path(layout)
    ctx.block(layout, "inexact", "normalises over the pruned channels, so removing them changes "
              "the statistics of the kept ones; pass approximate=True to prune anyway")
    if normed != 1 or layout.dim != -1:
        ctx.unknown("normalises over several dims including the pruned channels")
        return None
    resolved = resolve_width(ctx, layout, module.normalized_shape[0])
    if resolved is None or not ctx.add_role(resolved, None):
        return None
    return resolved


def _group_norm(ctx: RuleContext) -> Value:
    """GroupNorm normalises each group of channels together: it is pruned by whole norm groups."""
    layout = sole_layout(ctx)
    if layout is None:
        return None
    module = ctx.module
    assert isinstance(module, nn.GroupNorm)
    if layout.rank is None or layout.rank + layout.dim != 1:
        ctx.unknown(f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
        return None
    resolved = resolve_width(ctx, layout, int(module.num_channels))
    if resolved is None:
        return None
    g = int(module.num_groups)
    unit = None
    if len(resolved.segs) == 1 and resolved.factor == 1:
        unit = ctx.refine(resolved.segs[0].space, g, int(module.num_channels) // g, 1)
    if unit is None:
        ctx.unknown("GroupNorm over channels that do not split into its groups (a concatenation, "
                    "a flatten, or a split made elsewhere)")
        return None
    if not ctx.add_role(resolved, None):
        return None
    ctx.block(resolved, "fold", "a normalisation layer lies between producer and consumer")
    return ctx.with_path(resolved)


def _functional_batch_norm(ctx: RuleContext) -> Value:
    """F.batch_norm(x, running_mean, running_var, weight, bias, ...) on the model's own tensors.

    What a BatchNorm subclass traced through (timm's BatchNormAct2d) leaves in the graph: the
    statistics and affine parameters are get_attr tensors, sliced along dim 0 like BatchNorm's.
    """
    x = ctx.arg(0, "input", None)
    layout = ctx.value(x)
    tensors = [ctx.arg(i, name, None) for i, name in
               ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    reads = [t for t in tensors if t is not None]
    if not isinstance(layout, Layout):
        ctx.unknown()
        return None
    if not reads or not all(ctx.model_tensor(t) is not None for t in reads):
        ctx.unknown("batch_norm with statistics or parameters that are not the model's own tensors")
        return None
    if layout.rank is None or layout.rank + layout.dim != 1:
        ctx.unknown(f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
        return None
    width = ctx.model_tensor(reads[0]).shape[0]  # type: ignore[union-attr]  # checked above
    resolved = resolve_width(ctx, layout, int(width))
    if resolved is None:
        return None
    for tensor in reads:
        ctx.tensor_role(tensor, replace(resolved, dim=-1, rank=1, spatial=1))
    ctx.block(resolved, "fold", "a normalisation layer lies between producer and consumer")
    return resolved


RULES = {"batch_norm1d": _channelwise(None), "batch_norm2d": _channelwise(2), "batch_norm3d": _channelwise(3),
         "layer_norm": _layer_norm, "group_norm": _group_norm, "functional_batch_norm": _functional_batch_norm}
