"""Patterns that span several nodes, found before the per-node pass: the decomposed RMSNorm.

Llama, Mistral, Qwen, Gemma and T5 write their RMSNorm out rather than call ``nn.RMSNorm``::

    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)          # Gemma: h * (1.0 + weight.float())

Node by node the mean is a statistic over the channels, which pruning changes; as a whole the
function is an RMSNorm, which stays exact once its weight and eps are rescaled.  :func:`find_patterns`
matches the whole form on canonical op names (front-end neutral) and hands three of its nodes to
the rules ``rms_statistic``, ``rms_scale`` and ``rms_weight`` (:mod:`fprune.analysis.rules.norms`),
which check the channels at run of the pass and otherwise behave as ``reduce`` and ``binary``.
Every intermediate value must have one user, so that the statistic reaches nothing else.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.frontends.fx_symbolic import canonical_op
    >>> class Norm(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.weight = nn.Parameter(torch.ones(4))
    ...     def forward(self, x):
    ...         h = x.float()
    ...         return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
    >>> gm = torch.fx.symbolic_trace(Norm())
    >>> modules = dict(gm.named_modules())
    >>> sorted(op for op, _ in find_patterns(gm, {n: canonical_op(n, modules) for n in gm.graph.nodes}).values())
    ['rms_scale', 'rms_statistic', 'rms_weight']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule, Node

__all__ = ["RMSPattern", "find_patterns"]

_CASTS = ("to", "float", "double", "half", "bfloat16", "type_as", "contiguous")


@dataclass(frozen=True)
class RMSPattern:
    """The nodes of one decomposed RMSNorm."""

    source: Node  # x as squared and scaled
    statistic: Node  # the mean of squares
    eps: tuple[Node, tuple[int, ...], float] | None  # the add of eps: node, argument path, value
    scale: Node  # x * rsqrt(...)
    anchor: Node  # the product with the weight
    weight: Node  # the weight's get_attr
    reader: Node  # the node reading the weight
    offset: float  # the weight is applied as offset + weight (Gemma: 1)


def _name(node: Any) -> str | None:
    if not isinstance(node, Node) or node.op not in ("call_function", "call_method"):
        return None
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", None)


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _down_casts(node: Node) -> Node:
    """`node`, followed through casts that are its only use."""
    while True:
        user = _sole_user(node)
        if user is None or _name(user) not in _CASTS or not user.args or user.args[0] is not node:
            return node
        node = user


def _up_casts(node: Any) -> Any:
    """`node` followed back through casts of one use each."""
    while _name(node) in _CASTS and isinstance(node.args[0], Node) and len(node.args[0].users) == 1:
        node = node.args[0]
    return node


def _other(node: Node, one: Any) -> Any:
    """The other operand of a binary node with `one` as an operand, or None."""
    args = list(node.args)
    if len(args) != 2 or node.kwargs:
        return None
    if args[0] is one and args[1] is not one:
        return args[1]
    if args[1] is one and args[0] is not one:
        return args[0]
    return None


def _squared(node: Any) -> Node | None:
    name = _name(node)
    if name == "pow" and len(node.args) == 2 and node.args[1] == 2 and isinstance(node.args[0], Node):
        return node.args[0]  # type: ignore[no-any-return]
    if name == "square" and isinstance(node.args[0], Node):
        return node.args[0]  # type: ignore[no-any-return]
    if name == "mul" and len(node.args) == 2 and node.args[0] is node.args[1] and isinstance(node.args[0], Node):
        return node.args[0]  # type: ignore[no-any-return]
    return None


def _weight(node: Any) -> tuple[Node, Node, float] | None:
    """The get_attr weight an operand applies (through casts, maybe as ``c + weight``), its reader, c."""
    offset = 0.0
    if _name(node) == "add" and len(node.args) == 2 and not node.kwargs:
        consts = [a for a in node.args if type(a) in (int, float)]
        tensors = [a for a in node.args if isinstance(a, Node)]
        if len(consts) != 1 or len(tensors) != 1 or len(tensors[0].users) != 1:
            return None
        offset, node = float(consts[0]), tensors[0]
    base = _up_casts(node)
    if not isinstance(base, Node) or base.op != "get_attr" or len(base.users) != 1:
        return None
    return base, next(iter(base.users)), offset


def _match(mean: Node) -> RMSPattern | None:
    keepdim = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
    if keepdim is not True or not isinstance(mean.args[0], Node) or len(mean.args[0].users) != 1:
        return None
    source = _squared(mean.args[0])
    step = _sole_user(mean)
    if source is None or step is None:
        return None
    eps = None
    if _name(step) == "add":
        const = _other(step, mean)
        if type(const) not in (int, float):
            return None
        eps = (step, (list(step.args).index(const),), float(const))
        step = _sole_user(step)  # type: ignore[assignment]
    if step is None or _name(step) != "rsqrt" or (eps is not None and step.args[0] is not eps[0]):
        return None
    scale = _sole_user(step)
    if scale is None or _name(scale) != "mul" or _other(scale, step) is not source:
        return None
    out = _down_casts(scale)
    anchor = _sole_user(out)
    if anchor is None or _name(anchor) != "mul":
        return None
    found = _weight(_other(anchor, out))
    if found is None:
        return None
    weight, reader, offset = found
    return RMSPattern(source, mean, eps, scale, anchor, weight, reader, offset)


def find_patterns(gm: GraphModule, ops: Mapping[Node, str | None]) -> dict[Node, tuple[str, RMSPattern]]:
    """Nodes of `gm` that belong to a multi-node pattern: node -> (the op to read it as, the pattern)."""
    out: dict[Node, tuple[str, RMSPattern]] = {}
    for node in gm.graph.nodes:
        if ops.get(node) != "reduce" or _name(node) != "mean":
            continue
        found = _match(node)
        if found is not None and ops.get(found.scale) == "binary" and ops.get(found.anchor) == "binary":
            out.update({found.statistic: ("rms_statistic", found), found.scale: ("rms_scale", found),
                        found.anchor: ("rms_weight", found)})
    return out
