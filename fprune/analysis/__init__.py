"""The channel analysis: which slices of which tensors index the same channels.

One pass over a graph, in topological order, propagates *channel spaces* from the producers
(Linear, Conv, LSTM, Embedding, attention) to everything that reads them.  The package is one
folder a concern (see ``README.md`` beside this file):

* :mod:`~fprune.analysis.values`: layouts, groups, blocks, the finished :class:`Analysis`;
* :mod:`~fprune.analysis.ops`: the canonical op vocabulary the front-ends name nodes with;
* :mod:`~fprune.analysis.rules`: one small module per op family, ``rule(ctx) -> Value``;
* :mod:`~fprune.analysis.context`: :class:`RuleContext`, all a rule sees of a node;
* :mod:`~fprune.analysis.engine`: the pass, the union-find of channel spaces, soundness checks;
* :mod:`~fprune.analysis.resolve`: masks over groups -> kept indices of every tensor and every
  graph constant to edit, which the rewrite back-ends only read.

:data:`SUPPORTED_OPS` lists the aten ops of an ExportedProgram the analysis reads (any other op
keeps the channels it reads whole, with a warning naming it).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.analysis import SUPPORTED_OPS, analyze
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [(g.name, g.size, g.members, g.prunable()) for g in analyze(net).groups]
    [('0', 8, ('0', '2'), True), ('2', 2, ('2',), False)]
    >>> "aten.linear.default" in SUPPORTED_OPS and "aten.scaled_dot_product_attention.default" in SUPPORTED_OPS
    True
"""

from __future__ import annotations

from typing import Any

from fprune.analysis.engine import describe, run
from fprune.analysis.values import (
    DEFAULT_OPTIONS,
    Analysis,
    AttnOut,
    Block,
    BlockKind,
    ChannelGroup,
    Edit,
    Layout,
    LSTMOut,
    Options,
    Role,
    Seg,
)
from fprune.frontends import read
from fprune.frontends.aten_export import ATEN_OPS, PARAMETER_OPS, READ_AS_RESHAPE
from fprune.frontends.fx_symbolic import canonical_op

__all__ = [
    "Analysis",
    "AttnOut",
    "Block",
    "BlockKind",
    "ChannelGroup",
    "DEFAULT_OPTIONS",
    "Edit",
    "Layout",
    "LSTMOut",
    "Options",
    "Role",
    "Seg",
    "analyze",
    "describe",
    "SUPPORTED_OPS",
]

#: Names of the aten ops of an ExportedProgram the analysis reads, sorted.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(
    {str(op) for op in (*ATEN_OPS, *PARAMETER_OPS, *READ_AS_RESHAPE)}
    | {"aten.select.int", "aten.slice.Tensor", "aten.t.default", "aten.index.Tensor", "getitem"}
))


def analyze(model: Any) -> Analysis:
    """Finds the channel groups of a model (does not modify it).

    Args:
        model: a GraphModule, an ``nn.Module`` (traced with :func:`fprune.trace`), or a
            ``torch.export.ExportedProgram`` (read through :mod:`fprune.frontends.aten_export`).

    Returns:
        The groups, in graph order of their first producer, and each module's role.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fprune.trace import trace
        >>> class Res(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         h = self.a(x)
        ...         return self.head(h + self.b(h))
        >>> [(g.producers, g.members) for g in analyze(trace(Res())).groups][0]
        (('a', 'b'), ('a', 'b', 'head'))
    """
    gm, source = read(model)
    return run(gm, canonical_op, source)
