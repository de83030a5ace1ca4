"""Recurrent layers: an LSTM's, GRU's or RNN's hidden units are channels, with every gate's rows."""

from __future__ import annotations

from torch import nn

from fprune.analysis.context import RuleContext
from fprune.analysis.rules.common import resolve_width
from fprune.analysis.values import Layout, LSTMOut, Seg, Value

__all__ = ["RULES"]


def _lstm(ctx: RuleContext) -> Value:
    """LSTM, GRU, RNN: the hidden units are the channels, each unit's rows in every gate go together."""
    module = ctx.module
    assert isinstance(module, nn.RNNBase)
    kind = type(module).__name__
    if getattr(module, "proj_size", 0) or len(ctx.args) != 1 or ctx.kwargs:
        why = (f"{kind} with proj_size is not supported" if getattr(module, "proj_size", 0)
               else f"{kind} called with an initial state; fprune prunes recurrent layers called on the input alone")
        ctx.unknown(why)
        return None
    layout, _ = ctx.first_tracked()
    in_layout = None
    if layout is not None:
        if layout.dim != -1:
            ctx.unknown(f"reads pruned channels on dim {layout.dim}, expected -1")
        else:
            in_layout = resolve_width(ctx, layout, module.input_size)
    name = str(ctx.target)
    space = ctx.producer_space(name, module.hidden_size)
    ctx.add_role(in_layout, space)  # on a conflict the inputs are blocked; the output is still new
    seg = Seg(space, module.hidden_size)
    segs = (seg, seg) if module.bidirectional else (seg,)
    return LSTMOut(Layout(-1, segs, rank=None, spatial=1), name, paired=isinstance(module, nn.LSTM))


RULES = {"recurrent": _lstm}
