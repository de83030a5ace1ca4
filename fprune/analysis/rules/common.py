"""Helpers shared by the rule families."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from torch import nn

from fprune.analysis.context import RuleContext
from fprune.analysis.values import Layout

__all__ = ["source_layout", "sole_layout", "in_width", "resolve_width", "own_operand", "may_be_channel"]


def source_layout(ctx: RuleContext) -> Layout | None:
    """The layout of the first argument (the tensor a shape op acts on); a tracked non-tensor value
    there (a tuple, a shape) blocks what the node reads."""
    value = ctx.value(ctx.args[0]) if ctx.args else None
    if value is not None and not isinstance(value, Layout):
        ctx.unknown()
    return value if isinstance(value, Layout) else None


def sole_layout(ctx: RuleContext) -> Layout | None:
    """The one tracked tensor a single-input op reads; anything else blocks what the node reads."""
    layout, others = ctx.first_tracked()
    if layout is None or others:
        ctx.unknown()  # blocks nothing when the node reads no tracked channel
        return None
    return layout


def in_width(module: Any) -> int:
    """The number of input features or channels a producer module reads."""
    if isinstance(module, nn.Linear) or hasattr(module, "in_features"):  # TransposedLinear too
        return int(module.in_features)
    if isinstance(module, nn.RNNBase):
        return module.input_size
    return int(getattr(module, "in_channels"))


def resolve_width(ctx: RuleContext, layout: Layout, width: int) -> Layout | None:
    """Fixes an unknown flatten factor from the consumer's input width; None (and blocks) if inconsistent."""
    base = sum(s.size for s in layout.segs)
    factor = layout.factor
    if factor is None and width % base == 0:
        factor = width // base
    if factor is None or base * factor != width:
        ctx.unknown(f"expects {width} input features but the channels it reads span "
                    f"{base} x {layout.factor or '?'}")
        return None
    return replace(layout, factor=factor)


def own_operand(ctx: RuleContext, operand: Any, layout: Layout) -> Literal["role", "broadcast"] | None:
    """Whether an untracked operand is a model tensor that broadcasts over the channels of `layout`,
    or holds one entry per channel (then it is sliced with them); None if neither."""
    shape = ctx.shape(operand)
    if shape is not None and (len(shape) < -layout.dim or shape[layout.dim] == 1):
        return "broadcast"  # one value for every channel (a normalisation statistic, a mask)
    found = ctx.own_tensor(operand, reshapes=True)
    if found is None or layout.width is None:
        return None
    tensor, reader = found
    shape = tuple(ctx.model_tensor(tensor).shape)  # type: ignore[union-attr]  # own_tensor found a tensor
    views = [n for n in _chain(operand, tensor) if n.target in ("reshape", "view")]
    if views:
        return _viewed_scale(ctx, views, tensor, reader, shape, layout)
    if len(shape) < -layout.dim or shape[layout.dim] == 1:
        return "broadcast"
    if shape[layout.dim] != layout.width:
        return None
    ctx.tensor_role(tensor, replace(layout, rank=len(shape), spatial=None), reader if reader is not tensor else None)
    return "role"


def _chain(operand: Any, tensor: Any) -> list[Any]:
    """The nodes from `operand` back to (not including) the model tensor it reads."""
    out = []
    while operand is not tensor:
        out.append(operand)
        operand = operand.args[0]
    return out


def _viewed_scale(ctx: RuleContext, views: list[Any], tensor: Any, reader: Any, shape: tuple[int, ...],
                  layout: Layout) -> Literal["role"] | None:
    """A per-channel vector viewed onto the channel dim (ConvNeXt's ``gamma.reshape(1, -1, 1, 1)``).

    One reshape/view, to a shape whose only non-unit entry is the channel dim, of a tensor whose
    only non-unit dim holds one value per channel: the tensor is sliced with the channels, and an
    explicit channel count in the view becomes -1 (the only inferred entry, so always equivalent).
    """
    width = layout.width
    if len(views) != 1 or [s for s in shape if s != 1] != [width] or layout.factor != 1 or \
            any(n.target == "expand" for n in _chain(views[0], tensor)):
        return None
    view = views[0]
    nested = len(view.args) == 2 and isinstance(view.args[1], (tuple, list))
    entries = list(view.args[1] if nested else view.args[1:])
    at = len(entries) + layout.dim
    if not all(type(e) is int for e in entries) or at < 0 or entries[at] not in (-1, width) or \
            any(e != 1 for i, e in enumerate(entries) if i != at):
        return None
    if entries[at] != -1:
        ctx.edit((1, at) if nested else (1 + at,), "minus_one", layout.segs[0].space, node=view)
    channel = next(i for i, s in enumerate(shape) if s != 1) - len(shape)
    ctx.tensor_role(tensor, replace(layout, rank=len(shape), dim=channel, spatial=None), reader)
    return "role"


def may_be_channel(layout: Layout, index: Any) -> bool:
    """Whether ``shape[index]`` may be the channel count (unknown rank: any index but 0)."""
    if type(index) is not int:
        return True
    if layout.rank is not None:
        return index % layout.rank == layout.rank + layout.dim
    return index < 0 and index == layout.dim or index > 0
