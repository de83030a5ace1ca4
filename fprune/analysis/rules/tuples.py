"""Tuples and joins: indexing results (recurrent, attention, shapes), cat, chunk/split, unbind."""

from __future__ import annotations

from dataclasses import replace

from fprune.analysis.context import Rule, RuleContext
from fprune.analysis.rules.common import may_be_channel, own_operand, source_layout
from fprune.analysis.rules.elementwise import binary
from fprune.analysis.rules.shapes import index_tensor
from fprune.analysis.values import AttnOut, BlockKind, ChannelSize, Layout, LSTMOut, Seg, ShapeOf, Unbound, Value

__all__ = ["RULES"]


def _getitem(ctx: RuleContext) -> Value:
    source, index = ctx.args[0], ctx.args[1]
    value = ctx.value(source)
    if isinstance(value, LSTMOut):
        if type(index) is int and -2 <= index < 2:
            if value.state or index % 2 == 0:
                return value.layout  # the output, or h_n / c_n (hidden units on dim -1, once per direction)
            hidden = Layout(-1, value.layout.segs[:1], rank=None, spatial=1)
            return LSTMOut(hidden, value.module, state=True) if value.paired else hidden
        ctx.block(value, "unknown", f"indexes the result of recurrent layer '{value.module}' with "
                  f"{index!r}; expected 0 (output) or 1 (the state)")
        return None
    if isinstance(value, AttnOut):
        if index in (0, -2):
            return value.layout
        if index in (1, -1) and (value.weights == "none" or not ctx.users):
            return None
        if index in (1, -1):
            kind: BlockKind = "inexact" if value.weights == "mean" else "unknown"
            ctx.block_spaces([value.heads.space], kind, "reads the attention weights"
                             + (", averaged over the heads, so removing heads changes them; pass "
                                "approximate=True to prune anyway, or need_weights=False"
                                if kind == "inexact" else " per head; leave the attention out of the masks"))
            return None
        ctx.unknown()
        return None
    if isinstance(value, Unbound):
        if type(index) is int:
            return value.layout
        if isinstance(index, slice):
            return value  # a tuple of pieces, each still carrying the layout
        ctx.unknown("indexes a tuple of pruned tensors with a non-constant index")
        return None
    if isinstance(value, ShapeOf):
        return ChannelSize(value.layout) if may_be_channel(value.layout, index) else None
    if isinstance(value, ChannelSize):
        ctx.unknown()
        return None
    if isinstance(value, Layout):
        return index_tensor(ctx, value, index)
    if value is not None:
        ctx.unknown("indexes into pruned channels")
    return None


def _cat(ctx: RuleContext) -> Value:
    """torch.cat: along the channel dim the segments concatenate; along another dim they couple."""
    tensors, dim = ctx.arg(0, "tensors", ()), ctx.arg(1, "dim", 0)
    if ctx.is_node(tensors):  # a tuple made at run time (chunk, a slice of one): its length is not known
        value = ctx.value(tensors)
        if isinstance(value, Unbound) and type(dim) is int and value.layout.rank is not None \
                and (dim if dim < 0 else dim - value.layout.rank) != value.layout.dim:
            return value.layout if (dim if dim < 0 else dim - value.layout.rank) < value.layout.dim \
                else replace(value.layout, spatial=None)
        if value is not None:
            ctx.unknown("concatenates a run-time tuple of pruned tensors along their channels, "
                        "or along a dim not known")
        return None
    values = [ctx.value(t) for t in tensors if ctx.is_node(t)] if isinstance(tensors, (list, tuple)) else []
    layouts = [v for v in values if isinstance(v, Layout)]
    if not layouts:
        if any(v is not None for v in values):
            ctx.unknown()
        return None
    others = [t for t in tensors if ctx.is_node(t) and ctx.value(t) is None]
    rank = next((v.rank for v in layouts if v.rank is not None), None)
    if rank is None:  # every operand of cat has the same rank: a model tensor's tells it
        owned = [ctx.own_tensor(t) for t in others]
        rank = next((ctx.model_tensor(o[0]).dim() for o in owned if o is not None), None)  # type: ignore[union-attr]
        layouts = [replace(v, rank=rank) for v in layouts]
    d = dim if not isinstance(dim, int) or dim < 0 else (dim - rank if rank is not None else None)
    first = layouts[0]
    if others and isinstance(d, int) and len(layouts) + len(others) == len(tensors) and d != first.dim \
            and all(v.dim == first.dim for v in layouts) \
            and all(own_operand(ctx, t, first) == "role" for t in others):
        # model tensors (a class token) joined along another dim: sliced with the channels
        ctx.block(first, "fold", "a model tensor is joined to the channels")
        if len(layouts) == 1:
            return replace(first, spatial=None if d > first.dim else first.spatial)
        return binary(ctx)
    if len(layouts) != len(tensors) or not isinstance(dim, int):
        ctx.unknown("concatenates pruned channels with untracked tensors")
        return None
    if d is not None and all(v.dim == d for v in layouts) and len({v.factor for v in layouts}) == 1 \
            and first.factor is not None:
        segs = tuple(s for v in layouts for s in v.segs)
        return Layout(d, segs, rank=rank, factor=first.factor, spatial=first.spatial)
    if d is not None and all(v.dim == first.dim != d for v in layouts):
        return binary(ctx)
    ctx.unknown("concatenates tensors whose channel dims differ or are unknown")
    return None


def _unbind(ctx: RuleContext) -> Value:
    layout, _ = ctx.first_tracked()
    dim = ctx.arg(1, "dim", 0)
    if layout is None or layout.rank is None or type(dim) is not int:
        ctx.unknown("unbinds a tensor whose channel position is not known")
        return None
    rank, removed = layout.rank, dim % layout.rank
    p = rank + layout.dim
    if removed == p:
        ctx.unknown("unbinds the pruned channels")
        return None
    new_rank = rank - 1
    return Unbound(replace(layout, dim=(p - (removed < p)) - new_rank, rank=new_rank))


def _chunk(split: bool) -> Rule:
    """chunk(k) (`split` False) or split(size) (`split` True)."""

    def rule(ctx: RuleContext) -> Value:
        return _pieces(ctx, split)

    return rule


def _pieces(ctx: RuleContext, split: bool) -> Value:
    """chunk / split into equal pieces: along another dim every piece keeps the channels; along the
    channels each piece is one tile of the producer's space (a unit removes its channel in every piece,
    as for the two halves of a gated MLP)."""
    layout = source_layout(ctx)
    if layout is None:
        return None
    size = ctx.arg(1, "split_size_or_sections" if split else "chunks", None)
    dim = ctx.arg(2, "dim", 0)
    rank = layout.rank
    d = dim if type(dim) is int and dim < 0 else (dim - rank if type(dim) is int and rank is not None else None)
    if d is None:
        ctx.unknown("splits a tensor whose channel position is not known")
        return None
    if d != layout.dim:
        return Unbound(layout if d < layout.dim else replace(layout, spatial=None))
    width = layout.width
    sizes = list(size) if isinstance(size, (list, tuple)) else None
    pieces = None
    if width and len(layout.segs) == 1 and layout.factor == 1:
        if not split and type(size) is int and size > 0 and width % size == 0:
            pieces = size
        elif split and type(size) is int and size > 0 and width % size == 0:
            pieces = width // size
        elif split and sizes and all(type(v) is int for v in sizes) and len(set(sizes)) == 1 \
                and sizes[0] * len(sizes) == width:
            pieces = len(sizes)
    unit = None if pieces is None or width is None else ctx.refine(layout.segs[0].space, width // pieces, 1, pieces)
    if unit is None or width is None or pieces is None:
        ctx.unknown("splits the pruned channels into pieces fprune cannot keep equal "
                    "(supported: chunk(k) or split(size) into equal pieces of one producer's channels)")
        return None
    if split:  # the piece size is a constant in the graph: it follows the kept count
        paths = [(1, i) for i in range(len(sizes))] if sizes else [(1,)]
        if ctx.form == "function" and "split_size_or_sections" in ctx.kwargs:
            ctx.unknown("split with keyword sizes; pass them positionally")
            return None
        for path in paths:
            ctx.edit(path, "count", unit)
    ctx.block_spaces([unit], "fold", "a split of the channels lies between producer and consumer")
    return Unbound(Layout(layout.dim, (Seg(unit, width // pieces),), rank=rank, spatial=layout.spatial))


RULES = {"getitem": _getitem, "cat": _cat, "unbind": _unbind, "chunk": _chunk(False), "split": _chunk(True)}
