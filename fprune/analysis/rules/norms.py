"""Normalisation: BatchNorm/InstanceNorm (per channel), GroupNorm (whole norm groups), and LayerNorm
and RMSNorm over the channels, kept exact (module, functional and decomposed forms).

Over the channels a norm's statistics change when channels go; the rules record a
:class:`~fprune.analysis.values.NormSite` and the rewrite restores them: an RMSNorm's weight and
eps are rescaled, a LayerNorm computes over its original width (``approximate=True``: over the
kept channels, a different function).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from fprune.analysis.context import Rule, RuleContext
from fprune.analysis.rules.common import resolve_width, sole_layout
from fprune.analysis.rules.elementwise import binary
from fprune.analysis.rules.reductions import RULES as _REDUCTIONS
from fprune.analysis.values import ArgPath, Layout, Value, layout_key

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


_BETWEEN = "a normalisation layer lies between producer and consumer"


def _over_channels(ctx: RuleContext, layout: Layout, shape: Any, width_of: str) -> Layout | None:
    """The layout a norm over the last ``len(shape)`` dims normalises, when it is the channels.

    Returns `layout` unchanged (flagged by the caller) when the norm is over other dims, None (and
    blocks) when it normalises several dims including the channels.
    """
    normed = len(shape)
    if layout.dim < -normed:
        return layout
    if normed != 1 or layout.dim != -1:
        ctx.unknown(f"{width_of} normalises over several dims at once, the pruned channels among them "
                    "(normalized_shape of rank > 1); normalise over the channels alone, or leave this "
                    "group out of the masks")
        return None
    return resolve_width(ctx, layout, int(shape[0]))


def _layer_norm(ctx: RuleContext) -> Value:
    """nn.LayerNorm: over other dims the channels pass; over the channels it is kept exact."""
    layout = sole_layout(ctx)
    if layout is None:
        return None
    module = ctx.module
    assert isinstance(module, nn.LayerNorm)
    resolved = _over_channels(ctx, layout, module.normalized_shape, "the LayerNorm")
    if resolved is None:
        return None
    if resolved is layout and layout.dim < -len(module.normalized_shape):  # normalises other dims
        ctx.block(layout, "fold", "a LayerNorm over other dims turns a constant channel into its bias")
        return ctx.with_path(layout)
    if not ctx.add_role(resolved, None):
        return None
    ctx.norm("layer", resolved, module=ctx.module_name)
    ctx.block(resolved, "fold", _BETWEEN)
    return resolved


def _rms_norm(ctx: RuleContext) -> Value:
    """nn.RMSNorm over the channels: its weight and eps are rescaled (it stays an nn.RMSNorm)."""
    layout = sole_layout(ctx)
    if layout is None:
        return None
    module = ctx.module
    resolved = _over_channels(ctx, layout, module.normalized_shape, "the RMSNorm")
    if resolved is None:
        return None
    if resolved is layout and layout.dim < -len(module.normalized_shape):
        ctx.block(layout, "fold", "an RMSNorm over other dims scales a constant channel")
        return ctx.with_path(layout)
    if not ctx.add_role(resolved, None):
        return None
    _rms_checks(ctx, resolved, module.weight is not None, module.eps)
    ctx.norm("rms", resolved, module=ctx.module_name)
    ctx.block(resolved, "fold", _BETWEEN)
    return resolved


def _rms_checks(ctx: RuleContext, layout: Layout, has_weight: bool, eps: Any) -> None:
    """Blocks (inexact) an RMSNorm whose pruned form cannot be made exact."""
    if not has_weight:
        ctx.block(layout, "inexact", "an RMSNorm without a weight: its output scales by sqrt(d'/d) when "
                  "channels go and it has no weight to undo that; give it a weight (elementwise_affine=True), "
                  "or pass approximate=True to prune anyway")
    if eps is None:
        ctx.block(layout, "inexact", "an RMSNorm with eps=None takes eps from the input's dtype at run "
                  "time, so the rescaled eps cannot be written; construct it with an explicit eps, or "
                  "pass approximate=True to prune anyway")


def _functional_norm(kind: str) -> Rule:
    """F.layer_norm(x, shape, weight, bias, eps) / F.rms_norm(x, shape, weight, eps) on the model's tensors."""
    names = ("weight", "bias") if kind == "layer" else ("weight",)

    def rule(ctx: RuleContext) -> Value:
        layout, others = ctx.first_tracked()
        x, shape = ctx.arg(0, "input", None), ctx.arg(1, "normalized_shape", None)
        if layout is None or ctx.value(x) is not layout or not isinstance(shape, (tuple, list)) or \
                not all(type(d) is int for d in shape):
            ctx.unknown("a norm whose input or normalized_shape is not known")
            return None
        resolved = _over_channels(ctx, layout, shape, f"F.{kind}_norm")
        if resolved is None:
            return None
        tensors = [ctx.arg(2 + i, name, None) for i, name in enumerate(names)]
        if resolved is layout and layout.dim < -len(shape):  # over other dims: weights broadcast over channels
            if any(ctx.is_node(t) and ctx.value(t) is None and ctx.own_tensor(t) is None for t in tensors):
                ctx.unknown("a norm over other dims with weights that are not the model's own tensors")
                return None
            ctx.block(layout, "fold", "a norm over other dims changes a constant channel")
            return ctx.with_path(layout)
        found = [None if t is None else ctx.own_tensor(t) for t in tensors]
        if any(t is not None and f is None for t, f in zip(tensors, found)) or len(others) != sum(
                t is not None for t in tensors):
            ctx.unknown(f"F.{kind}_norm over the pruned channels with a weight or bias that is not one of "
                        "the model's own tensors; leave this group out of the masks")
            return None
        for item in found:
            if item is not None:
                ctx.tensor_role(item[0], replace(resolved, rank=1, dim=-1, spatial=None),
                                item[1] if item[1] is not item[0] else None)
        weight = found[0][0] if found[0] is not None else None
        eps_index = 4 if kind == "layer" else 3
        eps = ctx.arg(eps_index, "eps", 1e-5 if kind == "layer" else None)
        at: ArgPath = (eps_index,) if len(ctx.args) > eps_index else ("eps",)
        if kind == "rms":
            _rms_checks(ctx, resolved, weight is not None, eps)
        full = ctx.node.kwargs.get("full_width") if kind == "layer" else None  # layer_norm_full: pruned before
        ctx.norm(kind, resolved, weight=weight, eps=None if kind == "layer" or eps is None else (ctx.node, at, eps),
                 shape=(1,), full_width=full if type(full) is int else None)
        ctx.block(resolved, "fold", _BETWEEN)
        return resolved

    return rule


# A decomposed RMSNorm (fprune.analysis.patterns): three of its nodes come here.

def _rms_statistic(ctx: RuleContext) -> Value:
    """The mean of squares over the channels: a statistic the pattern's weight product rescales."""
    found = ctx.pattern
    layout = ctx.value(found.source)
    dims = ctx.arg(1, "dim", None)
    dims = (dims,) if type(dims) is int else dims
    if isinstance(layout, Layout) and layout.dim == -1 and layout.width is not None and \
            isinstance(dims, (tuple, list)) and len(dims) == 1 and type(dims[0]) is int and \
            (dims[0] == -1 or (layout.rank is not None and dims[0] == layout.rank - 1)) and \
            ctx.value(ctx.args[0]) is not None:
        ctx.note(found, layout)
        return None
    return _REDUCTIONS["reduce"](ctx)


def _rms_scale(ctx: RuleContext) -> Value:
    """x * rsqrt(statistic): the channels of x, scaled per position."""
    layout: Layout | None = ctx.note(ctx.pattern)
    if layout is None:
        return binary(ctx)
    return layout


def _rms_weight(ctx: RuleContext) -> Value:
    """weight * normalised x: the RMSNorm's weight, rescaled by the rewrite."""
    found = ctx.pattern
    layout: Layout | None = ctx.note(found)
    if layout is None:
        return binary(ctx)
    values = [ctx.value(a) for a in ctx.args]
    tensor = ctx.model_tensor(found.weight)
    tracked = [v for v in values if isinstance(v, Layout)]
    if len(tracked) != 1 or layout_key(tracked[0]) != layout_key(layout) or tensor is None or \
            tuple(tensor.shape) != (layout.width,):
        ctx.block(layout, "unknown", "a decomposed RMSNorm whose weight does not hold one value per "
                  "normalised channel; leave this group out of the masks")
        return None
    ctx.tensor_role(found.weight, replace(layout, rank=1, dim=-1, spatial=None), found.reader)
    ctx.norm("rms", layout, weight=found.weight, offset=found.offset, eps=found.eps)
    ctx.block(layout, "fold", _BETWEEN)
    return layout


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
         "layer_norm": _layer_norm, "rms_norm": _rms_norm, "group_norm": _group_norm,
         "functional_batch_norm": _functional_batch_norm, "functional_layer_norm": _functional_norm("layer"),
         "functional_rms_norm": _functional_norm("rms"), "rms_statistic": _rms_statistic,
         "rms_scale": _rms_scale, "rms_weight": _rms_weight}
