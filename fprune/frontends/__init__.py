"""Front-ends: from what the user holds to the graph the channel analysis reads.

* an ``nn.Module`` is traced with torch.fx (:func:`fprune.trace`); a GraphModule is read as it is;
* a ``torch.export.ExportedProgram`` is read by :mod:`fprune.frontends.aten_export`, which keeps the
  way back to the program so that :func:`fprune.apply_patterns` returns a new program.

Example:
    >>> import torch
    >>> from torch import nn
    >>> gm, source = read(nn.Sequential(nn.Linear(2, 3)))
    >>> isinstance(gm, torch.fx.GraphModule), source
    (True, None)
"""

from __future__ import annotations

from typing import Any

from torch.export import ExportedProgram
from torch.fx import GraphModule

from fprune.frontends.aten_export import Lifted, export, lift
from fprune.trace import trace

__all__ = ["read", "export", "lift", "Lifted"]


def read(model: Any) -> tuple[GraphModule, Lifted | None]:
    """The graph to analyse for `model`, and the front-end's way back (None for torch.fx)."""
    if isinstance(model, ExportedProgram):
        lifted = lift(model)
        return lifted.graph, lifted
    return trace(model), None
