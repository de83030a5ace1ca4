"""From an nn.Module to a torch.fx GraphModule.

Example:
    >>> import torch
    >>> from torch import nn
    >>> gm = trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    >>> isinstance(gm, torch.fx.GraphModule)
    True
    >>> trace(gm) is gm
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fprune.errors import InvalidTypeError, TraceError

__all__ = ["trace", "attribute"]


def trace(model: nn.Module) -> GraphModule:
    """Returns `model` itself if it is a GraphModule, else ``torch.fx.symbolic_trace(model)``.

    fprune's :class:`fprune.modules.PrunedMultiheadAttention` stays a leaf, as torch.nn modules do,
    so a pruned model can be traced and pruned again.

    The traced GraphModule holds the model's own submodules (no copy); fprune
    never mutates it.

    Args:
        model: an ``nn.Module``, or a GraphModule traced in any way.

    Raises:
        InvalidTypeError: `model` is not an ``nn.Module``.
        TraceError: symbolic tracing failed (the fx error is chained).
    """
    if isinstance(model, GraphModule):
        return model
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(
            f"expected an nn.Module or a torch.fx.GraphModule, got {type(model).__name__}; "
            "pass the model itself"
        )
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        return GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise TraceError(
            f"torch.fx.symbolic_trace could not trace {type(model).__name__}: {exc}. "
            "Trace it yourself (e.g. with a torch.fx.Tracer whose is_leaf_module marks the "
            "untraceable submodules as leaves, or torch.fx.symbolic_trace(model, concrete_args=...)) "
            "and pass the GraphModule instead"
        ) from exc


class _Tracer(torch.fx.Tracer):
    """``symbolic_trace``'s tracer, with fprune's own modules kept as leaves like the torch.nn ones."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from fprune.modules import PrunedMultiheadAttention

        return isinstance(m, PrunedMultiheadAttention) or super().is_leaf_module(m, module_qualified_name)


def attribute(root: nn.Module, target: str) -> Any:
    """The object an fx target names under `root` (``"features.0.weight"``: a submodule, a tensor).

    Example:
        >>> from torch import nn
        >>> attribute(nn.Sequential(nn.Linear(2, 3)), "0.weight").shape
        torch.Size([3, 2])
    """
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
