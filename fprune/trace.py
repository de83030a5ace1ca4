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

    fprune's :class:`~fprune.modules.PrunedMultiheadAttention` and :class:`~fprune.modules.PrunedLayerNorm`
    stay leaves, as torch.nn modules do, so a pruned model can be traced and pruned again.

    The traced GraphModule holds the model's own submodules (no copy); fprune
    never mutates it.  What the model's forward sets on its modules while traced
    (a cache of derived tensors, as timm's LeViT keeps in eval mode) is put back
    afterwards, so the model is left exactly as it was and can be traced again.

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
    saved = _snapshot(model)
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
    finally:
        _restore(saved)


_OWN = ("_parameters", "_buffers", "_modules")


def _snapshot(model: nn.Module) -> list[tuple[dict[str, Any], dict[str, Any], dict[int, Any]]]:
    """Each module's plain attributes, and a shallow copy of every dict or list among them.

    Tracing runs the model's forward on proxies; a forward that caches a value on its module
    (timm's LeViT and EfficientFormerV2 keep attention biases in a dict in eval mode) would leave a
    proxy of this trace in the user's model, which breaks every later trace.
    """
    saved = []
    for module in model.modules():
        attrs = {k: v for k, v in module.__dict__.items() if k not in _OWN}
        copies = {id(v): (list(v) if isinstance(v, list) else dict(v)) for v in attrs.values()
                  if isinstance(v, (dict, list)) and type(v) in (dict, list)}
        saved.append((module.__dict__, attrs, copies))
    return saved


def _restore(saved: list[tuple[dict[str, Any], dict[str, Any], dict[int, Any]]]) -> None:
    """Puts back what tracing changed in the modules' plain attributes (the model is left as it was)."""
    for namespace, attrs, copies in saved:
        for key in [k for k in namespace if k not in _OWN and k not in attrs]:
            del namespace[key]  # set during the trace
        for key, value in attrs.items():
            namespace[key] = value
            old = copies.get(id(value))
            if old is not None and _changed(value, old):  # a cache filled during the trace
                value.clear()
                value.extend(old) if isinstance(value, list) else value.update(old)


def _changed(value: Any, old: Any) -> bool:
    """Whether a container's entries differ, by identity (``==`` on a proxy or tensor is not a bool)."""
    if len(value) != len(old):
        return True
    if isinstance(value, list):
        return any(a is not b for a, b in zip(value, old))
    return any(k not in old or value[k] is not old[k] for k in value)


class _Tracer(torch.fx.Tracer):
    """``symbolic_trace``'s tracer, with fprune's own modules kept as leaves like the torch.nn ones."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from fprune.modules import PrunedLayerNorm, PrunedMultiheadAttention

        return isinstance(m, (PrunedMultiheadAttention, PrunedLayerNorm)) or super().is_leaf_module(m, module_qualified_name)


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
