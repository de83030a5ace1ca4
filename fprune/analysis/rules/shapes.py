"""Shapes: reshape/view (heads split and merged), flatten, permute, transpose, tensor indexing."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import torch

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import sole_layout, source_layout
from fprune.analysis.values import Layout, Seg, Value

__all__ = ["RULES", "index_tensor"]


def index_tensor(ctx: RuleContext, layout: Layout, index: Any) -> Value:
    """x[i], x[:, i], x[..., a:b]: ints and constant slices over dims other than the channel dim; on the
    channel dim, a slice from the start to at least the end (GhostNet's ``cat(...)[:, :out]`` with an
    even ``out``): the whole dim before and after pruning."""
    items = index if isinstance(index, tuple) else (index,)
    full = slice(None, None, None)
    rank = layout.rank

    def constant(i: Any) -> bool:
        return type(i) is int or (isinstance(i, slice) and not any(ctx.is_node(b) for b in (i.start, i.stop, i.step)))

    if rank is None or not all(constant(i) for i in items) or len(items) > rank:
        ctx.unknown("indexes into a tensor whose channel position is not known")
        return None
    p = rank + layout.dim
    if p < len(items) and items[p] != full:
        if not _whole(layout, items[p]):
            ctx.unknown("indexes into the pruned channels (on the channel dim only x[..., :n] with n at "
                        "least the channel count is followed; a slice inside them, as Phi-3's fused qkv "
                        "or GhostNet with an odd width, is not)")
            return None
        items = items[:p] + (full,) + items[p + 1:]
    removed = [d for d, i in enumerate(items) if type(i) is int]
    new_rank = rank - len(removed)
    new_p = p - sum(1 for d in removed if d < p)
    sliced_after = any(i != full for i in items[p + 1:])  # fewer positions after the channels
    return replace(layout, dim=new_p - new_rank, rank=new_rank, spatial=None if sliced_after else layout.spatial)


def _whole(layout: Layout, index: Any) -> bool:
    """Whether ``x[..., index]`` on the channel dim keeps it whole: a slice from 0 to at least its
    width, which stays whole once channels are removed."""
    width = layout.width
    return isinstance(index, slice) and index.start in (None, 0) and index.step in (None, 1) and \
        type(index.stop) is int and width is not None and index.stop >= width


def _flatten(ctx: RuleContext) -> Value:
    layout = sole_layout(ctx)
    if layout is None:
        return None
    if ctx.form == "module":
        module = ctx.module
        start, end = getattr(module, "start_dim", 1), getattr(module, "end_dim", -1)
    else:
        start, end = ctx.arg(1, "start_dim", 0), ctx.arg(2, "end_dim", -1)
    if not isinstance(start, int) or not isinstance(end, int):
        ctx.unknown("flattens with dims that are not constants")
        return None
    return _flatten_range(ctx, layout, start, end)


def _flatten_range(ctx: RuleContext, layout: Layout, start: int, end: int) -> Value:
    rank = layout.rank
    if rank is None:
        ctx.unknown("flattens a tensor of unknown rank")
        return None
    s, e, p = start % rank, end % rank, rank + layout.dim
    new_rank = rank - (e - s)
    if p < s or p > e:
        return replace(layout, dim=(p if p < s else p - (e - s)) - new_rank, rank=new_rank)
    if p != s:
        shape = ctx.shape(ctx.args[0]) if ctx.args else None
        if p == e and shape is not None and layout.factor == 1:  # (..., 2, 2, C) -> (..., 4C): 4 copies
            copies = math.prod(shape[s:p])
            return replace(layout, dim=s - new_rank, rank=new_rank, segs=layout.segs * copies)
        ctx.unknown("flattens leading dims together with the pruned channels (followed: the channels "
                    "last in the flattened dims, with their sizes known, as fprune.export records them)")
        return None
    inner = layout.spatial if e == rank - 1 else None
    factor = None if (inner is None or layout.factor is None) else layout.factor * inner
    return replace(layout, dim=s - new_rank, rank=new_rank, factor=factor, spatial=1 if e == rank - 1 else None)


def _reshape(ctx: RuleContext) -> Value:
    """view/reshape: split the channels into (..., heads, head_dim), merge them back, or flatten.

    Dims before the channel dim are taken to be unchanged (the ``x.view(B, N, ...)`` idiom).  A
    split into several trailing dims makes the second-to-last of them the pruning unit (attention
    heads): the channel space is refined so that one unit removes its rows in every outer block.
    """
    layout = source_layout(ctx)
    if layout is None:
        return None
    shape: list[Any]
    paths: list[tuple[int, ...]]
    if ctx.form == "method":
        shape, paths = list(ctx.args[1:]), [(i + 1,) for i in range(len(ctx.args) - 1)]
    else:
        given = ctx.arg(1, "shape", ())
        shape, paths = list(given), [(1, i) for i in range(len(given))]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        paths = [(paths[0][0], i) for i in range(len(shape[0]))]
        shape = list(shape[0])
    rank = layout.rank
    p = None if rank is None else rank + layout.dim
    # merge: the channel dim and every dim after it become the last dim
    if rank is not None and p is not None and len(shape) == p + 1:
        factor = None if (layout.factor is None or layout.spatial is None) else layout.factor * layout.spatial
        if not _channel_size_arg(ctx, layout, shape, paths, p, merged=p < rank - 1):
            return None
        return Layout(-1, layout.segs, rank=p + 1, factor=factor, spatial=1)
    # unsqueeze-like: (..., C) -> (..., C, 1, 1) with the leading dims unchanged
    ones = 0
    while ones < len(shape) and shape[-1 - ones] == 1:
        ones += 1
    if p is not None and layout.dim == -1 and ones and len(shape) - ones == p + 1 and shape[p] != 1:
        if not _channel_size_arg(ctx, layout, shape, paths, p, merged=False):
            return None
        return replace(layout, dim=-1 - ones, rank=len(shape), spatial=1)
    known = _known_reshape(ctx, layout, shape, paths)
    if known is not False:
        return known
    # split: the last (channel) dim becomes trailing int dims
    trailing = 0
    product = 1
    while trailing < len(shape) and type(shape[-1 - trailing]) is int and shape[-1 - trailing] > 0:
        product *= shape[-1 - trailing]
        trailing += 1
        if product >= (layout.width or 0):
            break
    single = len(layout.segs) == 1 and layout.factor == 1
    if layout.dim == -1 and single and trailing >= 1 and product == layout.width:
        while trailing > 1 and shape[-trailing] == 1:
            trailing -= 1  # leading size-1 dims of the split are outer dims of size 1
        if trailing == 1:  # (N, C) -> (B, T, C): the channel size follows pruning
            if not _channel_size_arg(ctx, layout, shape, paths, len(shape) - 1, merged=False):
                return None
            return Layout(-1, layout.segs, rank=len(shape), spatial=1)
        unit, inner = shape[-2], shape[-1]
        outer = layout.width // (unit * inner) if layout.width else 1
        return _split_heads(ctx, layout, unit, inner, outer, len(shape), paths[-2])
    # (..., -1, head_dim): the head count is inferred, so nothing in the graph needs editing
    width = layout.width
    if layout.dim == -1 and single and width and rank is not None and p is not None and len(shape) == p + 2 \
            and shape[-2] == -1 and type(shape[-1]) is int and shape[-1] > 0 and width % shape[-1] == 0:
        return _split_heads(ctx, layout, width // shape[-1], shape[-1], 1, len(shape), None)
    # (..., [3,] heads, -1): head_dim inferred, the head count follows pruning (Swin's qkv)
    split = shape[p:-1] if p is not None else []
    if layout.dim == -1 and single and width and p is not None and len(shape) >= p + 2 and shape[-1] == -1 \
            and split and all(type(s) is int and s > 0 for s in split) and width % math.prod(split) == 0:
        return _split_heads(ctx, layout, split[-1], width // math.prod(split), math.prod(split[:-1]), len(shape),
                            paths[-2])
    ctx.unknown("reshapes the pruned channels in a way fprune does not understand; "
                "supported: (batch, -1), (..., heads, head_dim) splits and their merges")
    return None


def _split_heads(ctx: RuleContext, layout: Layout, unit: int, inner: int, outer: int, rank: int,
                 count_at: tuple[int, ...] | None) -> Value:
    """The channels split into ``unit`` heads of ``inner`` channels (in ``outer`` blocks) on dim -2;
    the head-count argument at `count_at` follows pruning (None: inferred, ``-1``)."""
    space = ctx.refine(layout.segs[0].space, unit, inner, outer)
    if space is None:
        ctx.unknown("splits channels already split differently")
        return None
    if count_at is not None:
        ctx.edit(count_at, "count", space)
    ctx.block_spaces([space], "fold", "attention heads: their biases are not folded")
    return Layout(-2, (Seg(space, unit),), rank=rank, spatial=inner)


def _known_reshape(ctx: RuleContext, layout: Layout, shape: list[Any],
                   paths: list[tuple[int, ...]]) -> Value | Literal[False]:
    """Reshapes read off known sizes (``fprune.export`` records them): size-1 dims inserted or
    removed around the channels (``x[:, :, None]``), or the channel dim merged with the dims after
    it, which repeat each channel (GQA's ``repeat_kv``: ``(B, kv, n_rep, S, D) -> (B, kv * n_rep, S, D)``).
    False when neither applies (the other forms are tried)."""
    src = ctx.shape(ctx.args[0]) if ctx.args else None
    rank = layout.rank
    if src is None or rank is None or len(src) != rank or not all(type(x) is int for x in shape) or \
            shape.count(-1) > 1 or any(x < -1 or x == 0 for x in shape):
        return False
    given, shape = shape, list(shape)
    if -1 in shape:  # the inferred size, from the known ones
        rest = math.prod(x for x in shape if x != -1)
        if rest == 0 or math.prod(src) % rest:
            return False
        shape[shape.index(-1)] = math.prod(src) // rest
    p = rank + layout.dim
    if src[p] == 1:
        return False
    # size-1 dims inserted or removed: the same non-one sizes, in order
    if [x for x in src if x != 1] == [x for x in shape if x != 1]:
        q = [i for i, x in enumerate(shape) if x != 1][sum(1 for x in src[:p] if x != 1)]
        if not _channel_size_arg(ctx, layout, given, paths, q, merged=False):
            return None
        return replace(layout, dim=q - len(shape), rank=len(shape), spatial=math.prod(shape[q + 1:]))
    # the channel dim merged with the k dims after it: each channel's positions repeat k-fold
    for k in range(1, rank - p):
        if list(shape[:p]) == list(src[:p]) and shape[p] == math.prod(src[p:p + k + 1]) and \
                list(shape[p + 1:]) == list(src[p + k + 1:]):
            factor = None if layout.factor is None else layout.factor * math.prod(src[p + 1:p + k + 1])
            if not _channel_size_arg(ctx, layout, given, paths, p, merged=True):
                return None
            return replace(layout, dim=p - len(shape), rank=len(shape), factor=factor,
                           spatial=math.prod(shape[p + 1:]))
    return False


def _channel_size_arg(ctx: RuleContext, layout: Layout, shape: list[Any],
                      paths: list[tuple[int, ...]], p: int, merged: bool) -> bool:
    """Makes the reshape size at the channel position follow pruning; False (and blocks) if it cannot.

    -1 stays; any other size (a literal or a size read at run time) becomes -1, or, when another
    dim is already -1, the kept channel count (single-group, unmerged channels only).
    """
    size = shape[p]
    if size == -1:
        return True
    if -1 not in shape:
        for seg in layout.segs:
            ctx.edit(paths[p], "minus_one", seg.space)
        return True
    single = len(layout.segs) == 1 and layout.factor == 1
    if single and not merged and size == layout.width:
        ctx.edit(paths[p], "count", layout.segs[0].space)
        return True
    ctx.unknown("reshapes the pruned channels with a size that cannot follow pruning")
    return False


def _permute(ctx: RuleContext) -> Value:
    layout, _ = ctx.first_tracked()
    if layout is None:
        ctx.unknown()
        return None
    dims: list[Any] = list(ctx.args[1:]) if ctx.form == "method" else list(ctx.arg(1, "dims", ()))
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    rank = len(dims)
    if not all(type(d) is int for d in dims) or layout.rank not in (None, rank) or -layout.dim > rank:
        ctx.unknown("permutes a tensor whose channel position is not known")
        return None
    new_p = [d % rank for d in dims].index(rank + layout.dim)
    return replace(layout, dim=new_p - rank, rank=rank, spatial=None if new_p != rank + layout.dim else layout.spatial)


def _transpose(ctx: RuleContext) -> Value:
    layout, _ = ctx.first_tracked()
    a, b = ctx.arg(1, "dim0", None), ctx.arg(2, "dim1", None)
    if layout is None or type(a) is not int or type(b) is not int:
        ctx.unknown()
        return None
    rank = layout.rank
    if rank is not None:
        a, b = a % rank - rank, b % rank - rank
    elif a >= 0 or b >= 0:
        ctx.unknown("transposes a tensor of unknown rank")
        return None
    if layout.dim not in (a, b):
        return layout if (a < layout.dim) == (b < layout.dim) else replace(layout, spatial=None)
    return replace(layout, dim=b if layout.dim == a else a, spatial=None)


def _expand(ctx: RuleContext) -> Value:
    """x.expand(*sizes): broadcasts size-1 dims; the channel dim must keep its size (-1 or its width)."""
    layout = source_layout(ctx)
    if layout is None:
        return None
    sizes: list[Any] = list(ctx.args[1:])
    paths: list[tuple[int, ...]] = [(i + 1,) for i in range(len(sizes))]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes, paths = list(sizes[0]), [(1, i) for i in range(len(sizes[0]))]
    if len(sizes) < -layout.dim or (layout.rank is not None and len(sizes) < layout.rank):
        ctx.unknown("expands a tensor whose channel position is not known")
        return None
    size = sizes[layout.dim]
    if size != -1:
        if ctx.is_node(size) or size != layout.width:
            ctx.unknown("expands the pruned channels to a size that cannot follow pruning")
            return None
        for seg in layout.segs:
            ctx.edit(paths[layout.dim], "minus_one", seg.space)
    _repeat_count(ctx, layout, sizes, paths)
    return replace(layout, rank=len(sizes), spatial=None)


def _repeat_count(ctx: RuleContext, layout: Layout, sizes: list[Any], paths: list[tuple[int, ...]]) -> None:
    """GQA's ``repeat_kv``: a size-1 dim right after the channels broadcast to ``n_rep`` copies.

    When query heads are removed within their key/value heads, ``n_rep`` becomes the number each
    keeps; the engine allows that only where this edit exists (see ChannelGroup.subunits).
    """
    src = ctx.shape(ctx.args[0]) if ctx.args else None
    if src is None or layout.rank is None or len(src) != len(sizes) or len(layout.segs) != 1:
        return
    p = layout.rank + layout.dim
    if p + 1 < len(sizes) and src[p + 1] == 1 and type(sizes[p + 1]) is int and sizes[p + 1] > 1:
        ctx.edit(paths[p + 1], "rep", layout.segs[0].space)


def _reshape_as(ctx: RuleContext) -> Value:
    """x.reshape_as(y): LeViT's ``bn(x.flatten(0, 1)).reshape_as(x)``: x and y carry the same channels
    last, so only the leading dims change (to y's)."""
    x, y = ctx.arg(0, "self", None), ctx.arg(1, "other", None)
    lx, ly = ctx.value(x), ctx.value(y)
    if isinstance(lx, Layout) and isinstance(ly, Layout) and lx.dim == ly.dim == -1 and \
            lx.factor == ly.factor and len(lx.segs) == len(ly.segs) and \
            all(a.size == b.size and ctx.same_space(a.space, b.space) for a, b in zip(lx.segs, ly.segs)):
        return replace(ly, segs=lx.segs)
    ctx.unknown("reshapes the pruned channels to another tensor's shape (supported: both with the same "
                "channels last, x.flatten(0, 1) then reshape_as(x))")
    return None


def _pad(ctx: RuleContext) -> Value:
    """F.pad(x, pad, "constant", 0): zeros on other dims are zero in every channel, removed ones too."""
    layout = source_layout(ctx)
    if layout is None:
        return None
    pad, mode, value = ctx.arg(1, "pad", None), ctx.arg(2, "mode", "constant"), ctx.arg(3, "value", None)
    if ctx.node.target is torch.constant_pad_nd:  # (input, pad, value)
        mode, value = "constant", ctx.arg(2, "value", 0)
    if not isinstance(pad, (tuple, list)) or not all(type(p) is int for p in pad) or len(pad) % 2 or \
            mode != "constant" or value not in (None, 0, 0.0):
        ctx.unknown("pads the pruned channels with something other than constant zeros, or by sizes "
                    "computed at run time")
        return None
    at = -layout.dim - 1  # pad pairs run from the last dim backwards
    if 2 * at + 1 < len(pad) and (pad[2 * at] or pad[2 * at + 1]):
        ctx.unknown("pads the channel dim itself")
        return None
    ctx.block(layout, "fold", "zero padding: a removed channel's constant is not constant at the border")
    return replace(layout, spatial=None)


def _roll(ctx: RuleContext) -> Value:
    """torch.roll(x, shifts, dims) over other dims: each channel moves as a whole."""
    layout = source_layout(ctx)
    if layout is None:
        return None
    dims = ctx.arg(2, "dims", None)
    dims = (dims,) if type(dims) is int else dims
    rank = layout.rank
    if rank is None:
        ctx.unknown("rolls a tensor of unknown rank (torch.fx records none; fprune.export does)")
        return None
    if not isinstance(dims, (tuple, list)) or not dims or not all(type(d) is int for d in dims) or \
            any(d % rank == rank + layout.dim for d in dims):
        ctx.unknown("rolls over the pruned channels, or over all dims at once (no dims)")
        return None
    return layout  # a removed channel's constant (bias folding) rolls onto itself: nothing to evaluate


RULES = {"expand": _expand, "reshape": _reshape, "flatten": _flatten, "permute": _permute, "transpose": _transpose,
         "reshape_as": _reshape_as, "pad": _pad, "roll": _roll}
