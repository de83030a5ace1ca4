"""Attention: nn.MultiheadAttention, batched matmul over heads, softmax, scaled_dot_product_attention."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import own_operand, resolve_width
from fprune.analysis.values import AttnOut, Layout, Seg, Value, layout_key

__all__ = ["RULES"]


def _multihead_attention(ctx: RuleContext) -> Value:
    """nn.MultiheadAttention: in_proj columns read the input channels; heads and out_proj rows are new.

    Its packed ``in_proj_weight`` rows are (q, k, v) x heads x head_dim, refined into a space of
    heads as for a fused qkv Linear; ``out_proj`` reads the heads (head_dim columns each) and
    produces the output channels.  Only self-attention (query, key and value the same tensor)
    has its input channels pruned.
    """
    module = ctx.module
    name = str(ctx.target)
    names = ("query", "key", "value")
    qkv = [ctx.arg(i, n, None) for i, n in enumerate(names)]
    extras = list(ctx.args[3:]) + [v for k, v in ctx.kwargs.items() if k not in names]
    if any(ctx.is_node(a) and ctx.value(a) is not None for a in extras):
        ctx.unknown("an attention mask computed from pruned channels")
        return None
    why = None
    if module.bias_k is not None or module.add_zero_attn:
        why = "nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported"
    elif not module._qkv_same_embed_dim:
        why = "nn.MultiheadAttention with kdim/vdim different from embed_dim is not supported"
    if why is not None:
        ctx.unknown(why)
        return None
    values = [ctx.value(a) for a in qkv]
    tracked = [v for v in values if v is not None]
    layouts = [v for v in tracked if isinstance(v, Layout)]
    in_layout = None
    if tracked:
        first = layouts[0] if layouts else None
        same = len(layouts) == 3 and all(layout_key(v) == layout_key(first) for v in layouts)
        if first is None or not same or first.dim != -1:
            ctx.unknown("nn.MultiheadAttention reads pruned channels other than as one self-attention "
                        "input on the last dim (cross-attention inputs are not pruned)")
        else:
            in_layout = resolve_width(ctx, first, int(module.embed_dim))
    heads, head_dim = int(module.num_heads), int(module.head_dim)
    rows = ctx.producer_space(name, 3 * heads * head_dim)
    unit = ctx.refine(rows, heads, head_dim, 3)
    out_name = f"{name}.out_proj"
    out_space = ctx.producer_space(out_name, int(module.out_proj.out_features))
    if unit is None:
        ctx.unknown("nn.MultiheadAttention whose heads are split differently elsewhere")
        ctx.block_spaces([out_space], "unknown", "nn.MultiheadAttention whose heads are split differently")
    ctx.add_role(in_layout, rows)  # called again on other channels: its inputs are blocked
    if unit is None:
        return None
    heads_layout = Layout(-1, (Seg(unit, heads),), rank=None, factor=head_dim, spatial=1)
    ctx.add_role(heads_layout, out_space, module=out_name)  # the first call's, if called again
    ctx.block_spaces([unit], "fold", "attention heads: their biases are not folded")
    need = ctx.arg(4, "need_weights", True)
    average = ctx.arg(6, "average_attn_weights", True)
    weights: Literal["none", "mean", "per_head"] = (
        "none" if need is False else "mean" if average is True else "per_head")
    rank = layouts[0].rank if layouts else None
    out = Layout(-1, (Seg(out_space, int(module.out_proj.out_features)),), rank=rank, spatial=1)
    return AttnOut(out, Seg(unit, heads), weights)


def _couple_heads(ctx: RuleContext, q: Layout, k: Layout) -> bool | None:
    """Couples the heads of two operands on the same batch dim; None when their layouts do not match.

    Heads seg by seg, or grouped-query attention: ``k`` holds each of its ``kv`` heads repeated
    ``n_rep`` times (``repeat_kv``, a layout factor ``n_rep``), so query head ``i`` reads key head
    ``i // n_rep``: the query heads are refined into ``kv`` groups of ``n_rep`` and each group is
    coupled to its key head (a group is removed whole, with its key and value head).
    """
    if q.dim != k.dim or q.dim > -3:
        return None
    if [x.size for x in q.segs] == [x.size for x in k.segs] and q.factor == k.factor:
        return all(ctx.couple(x.space, y.space) for x, y in zip(q.segs, k.segs))
    if len(q.segs) == len(k.segs) == 1 and q.factor == 1 and k.factor is not None and k.factor > 1 and \
            q.segs[0].size == k.segs[0].size * k.factor:
        (qs,), (ks,) = q.segs, k.segs
        groups = ctx.refine(qs.space, ks.size, k.factor, 1)
        if groups is None or not ctx.couple(groups, ks.space):
            return False
        ctx.mark_subunits(qs.space, k.factor)  # query heads may also go one by one (see ChannelGroup.subunits)
        return True
    return None


def _matmul(ctx: RuleContext) -> Value:
    """Batched matmul: channels on a batch dim (heads) couple the operands and pass through."""
    operands = [ctx.value(a) for a in ctx.args[:2]]
    a, b = operands
    if isinstance(a, Layout) and isinstance(b, Layout):
        coupled = _couple_heads(ctx, a, b) if a.factor == 1 else _couple_heads(ctx, b, a)
        if coupled is False:
            ctx.unknown("multiplies heads split differently")
            return None
        if coupled:
            rank = max(a.rank or 0, b.rank or 0) or None
            query = a if a.factor == 1 else b
            return Layout(query.dim, query.segs, rank=rank, spatial=None)
    ctx.unknown("multiplies pruned channels as a matrix (only batched heads are understood)")
    return None


def _softmax(ctx: RuleContext) -> Value:
    layout, others = ctx.first_tracked()
    dim = ctx.arg(1, "dim", None)
    if layout is None or others or type(dim) is not int:
        ctx.unknown()
        return None
    if dim >= 0:
        if layout.rank is None:
            ctx.unknown("normalises a dim of a tensor of unknown rank")
            return None
        dim -= layout.rank
    if dim == layout.dim:
        ctx.unknown("normalises over the pruned channels")
        return None
    ctx.block(layout, "fold", "a softmax lies between producer and consumer")
    return layout


def _attention(ctx: RuleContext) -> Value:
    """scaled_dot_product_attention(q, k, v): heads on a batch dim couple q, k and v."""
    values = [ctx.value(a) for a in ctx.args[:3]]
    if not all(isinstance(v, Layout) for v in values):
        ctx.unknown("attention with untracked q, k or v")
        return None
    q, k, v = values
    assert isinstance(q, Layout) and isinstance(k, Layout) and isinstance(v, Layout)
    extra = [a for a in list(ctx.args[3:]) + list(ctx.kwargs.values())
             if ctx.is_node(a) and not ctx.defaults_to_constant(a)]
    if any(ctx.value(a) is not None or own_operand(ctx, a, q) != "broadcast" for a in extra):
        ctx.unknown("attention with a mask tensor that may differ per head (only a mask broadcast over the "
                    "heads, size 1 on their dim, is understood)")
        return None
    for other in (k, v):
        coupled = _couple_heads(ctx, q, other)
        if coupled is None:
            ctx.unknown("attention whose q, k, v heads are not on the same batch dim (or k, v heads "
                        "repeated other than as whole groups of query heads)")
            return None
        if not coupled:
            ctx.unknown("attention over heads split differently")
            return None
    return replace(q, spatial=None)


RULES = {"multihead_attention": _multihead_attention, "matmul": _matmul, "softmax": _softmax,
         "scaled_dot_product_attention": _attention}
