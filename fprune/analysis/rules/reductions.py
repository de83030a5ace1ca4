"""Reductions: pooling over the spatial dims, and mean/sum/amax over dims other than the channels."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fprune.analysis.context import Rule, RuleContext
from fprune.analysis.rules.common import sole_layout
from fprune.analysis.values import Value

__all__ = ["RULES"]


def _pool(spatial_dims: int, adaptive: bool, kind: Literal["max", "avg"]) -> Rule:
    """Pools act on the last `spatial_dims` dims: channels pass through."""

    def rule(ctx: RuleContext) -> Value:
        layout = sole_layout(ctx)
        if layout is None:
            return None
        if layout.dim >= -spatial_dims or layout.factor != 1:
            ctx.unknown(f"pools over the pruned channels (dim {layout.dim})")
            return None
        if ctx.form == "module":
            indices = getattr(ctx.module, "return_indices", False)
        else:
            indices = kind == "max" and ctx.arg(2 if adaptive else 6, "return_indices", False)
        if indices:
            ctx.unknown("pools with return_indices=True (a tuple of values and indices)")
            return None
        spatial = None
        if adaptive:
            size = ctx.arg(1, "output_size", None) if ctx.form == "function" else getattr(
                ctx.module, "output_size", None)
            sizes = (size,) * spatial_dims if isinstance(size, int) else size
            if isinstance(sizes, (tuple, list)) and all(isinstance(s, int) for s in sizes):
                spatial = 1
                for s in sizes:
                    spatial *= s
        else:
            padding = ctx.arg(3, "padding", 0) if ctx.form == "function" else getattr(
                ctx.module, "padding", 0)
            include = ctx.arg(5, "count_include_pad", True) if ctx.form == "function" else getattr(
                ctx.module, "count_include_pad", True)
            is_avg = kind == "avg"
            if is_avg and include and padding not in (0, (0, 0), (0, 0, 0), [0, 0]):
                ctx.block(layout, "fold", "average pooling with zero padding changes a constant")
            divisor = ctx.arg(6, "divisor_override", None) if ctx.form == "function" else getattr(
                ctx.module, "divisor_override", None)
            if is_avg and divisor is not None:
                ctx.block(layout, "fold", "average pooling with divisor_override changes a constant")
        return replace(layout, spatial=spatial)

    return rule


def _reduce(ctx: RuleContext) -> Value:
    """mean/sum/amax over dims other than the channel dim."""
    layout = sole_layout(ctx)
    if layout is None:
        return None
    dims, keepdim = ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False)
    dims = (dims,) if isinstance(dims, int) else dims
    rank = layout.rank
    if rank is None or not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims):
        ctx.unknown("reduces dims that cannot be told apart from the pruned channels")
        return None
    p, reduced = rank + layout.dim, {d % rank for d in dims}
    if p in reduced:  # a statistic over the channels (an RMSNorm's mean of squares): not tracked further
        ctx.block(layout, "inexact", "reduces over the pruned channels (a normalisation statistic, as in an "
                  "RMSNorm), so removing channels changes the result; pass approximate=True to prune anyway")
        return None
    spatial = 1 if set(range(p + 1, rank)) <= reduced else None
    if keepdim:
        return replace(layout, spatial=spatial)
    new_rank = rank - len(reduced)
    new_p = p - sum(1 for d in reduced if d < p)
    return replace(layout, dim=new_p - new_rank, rank=new_rank, spatial=spatial)


def _scan(dim_index: int, default: int | None) -> Rule:
    """cumsum(x, dim) / diff(x, n, dim) along a dim other than the channels: channels pass."""

    def rule(ctx: RuleContext) -> Value:
        layout = sole_layout(ctx)
        if layout is None:
            return None
        dim = ctx.arg(dim_index, "dim", default)
        if layout.rank is None or type(dim) is not int or dim % layout.rank == layout.rank + layout.dim:
            ctx.unknown("accumulates along the pruned channels, or along a dim not known")
            return None
        return replace(layout, spatial=None)

    return rule


RULES: dict[str, Rule] = {"reduce": _reduce, "cumsum": _scan(1, None), "diff": _scan(2, -1)}
for _k in (1, 2, 3):
    RULES.update({f"max_pool{_k}d": _pool(_k, False, "max"), f"avg_pool{_k}d": _pool(_k, False, "avg"),
                  f"adaptive_max_pool{_k}d": _pool(_k, True, "max"),
                  f"adaptive_avg_pool{_k}d": _pool(_k, True, "avg")})
