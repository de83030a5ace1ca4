"""Metadata and the graph output: shapes, sizes, dtypes, and channels that reach the output."""

from __future__ import annotations

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import may_be_channel
from fprune.analysis.values import ChannelSize, Layout, ShapeOf, Value

__all__ = ["RULES"]


def _getattr(ctx: RuleContext) -> Value:
    """getattr(x, "shape" | "ndim" | "dtype" | "device"): metadata, not channel values."""
    source = ctx.args[0]
    value = ctx.value(source)
    if ctx.args[1:2] and ctx.args[1] in ("ndim", "dtype", "device", "is_cuda"):
        return None
    if ctx.args[1:2] == ("shape",):
        return ShapeOf(value) if isinstance(value, Layout) else None
    ctx.unknown()
    return None


def _shape_query(ctx: RuleContext) -> Value:
    """x.size(), x.size(d), x.dim(): the size of the channel dim shrinks with pruning."""
    source = ctx.args[0]
    value = ctx.value(source)
    if not isinstance(value, Layout) or ctx.target == "dim":
        return None
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        return ShapeOf(value)
    return ChannelSize(value) if may_be_channel(value, dim) else None


def _output(ctx: RuleContext) -> Value:
    """The graph output: a tracked tensor reaching it changes the model's output shape."""
    for value in ctx.tracked_inputs():
        ctx.block(value, "output", "these channels reach the model output, so removing them changes "
                  "its shape; pass prune_outputs=True to prune them anyway")
    return None


def _factory(ctx: RuleContext) -> Value:
    """arange, ones, zeros, full, x.new_ones(...): a new tensor; a tensor argument is read for its
    dtype and device only.  A size computed from the channel count is checked by the engine."""
    return None


def _gather(ctx: RuleContext) -> Value:
    """torch.gather on index arithmetic (positions, token types): pruned channels read by it stay whole."""
    if any(True for _ in ctx.tracked_inputs()):
        ctx.unknown("gathers from pruned channels; fprune follows gather only on tensors that carry no channels")
    return None


RULES = {"getattr": _getattr, "shape_query": _shape_query, "output": _output, "factory": _factory,
         "gather": _gather}
