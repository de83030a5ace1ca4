"""The GraphModule back-end: a Rewrite -> a new GraphModule sharing no tensor with the input.

Reads only the :class:`~fprune.analysis.resolve.Rewrite` (new tensors, sizes, graph constants)
and the analysed graph; it decides nothing about which channels go.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.analysis import Options, analyze
    >>> from fprune.analysis.resolve import plan_rewrite
    >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> analysis = analyze(net)
    >>> new = rebuild_graph(analysis, plan_rewrite(analysis, {0: torch.tensor([True, False, True, True])}, Options()))
    >>> new.get_submodule("0").weight.shape, net[0].weight.shape
    (torch.Size([3, 2]), torch.Size([4, 2]))
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from fprune.analysis.resolve import Rewrite
from fprune.analysis.values import Analysis, ArgPath
from fprune.trace import attribute

__all__ = ["rebuild_graph", "apply_constants", "apply_edits"]


def rebuild_graph(analysis: Analysis, change: Rewrite, owned: bool = False) -> GraphModule:
    """Builds the pruned GraphModule.

    `owned` says the GraphModule was traced by fprune for this call alone: its leaf modules are
    swapped for new ones in place (no second code generation).  Otherwise a copy of the graph gets
    a new GraphModule.  Either way every module and tensor reached by the graph is new.
    """
    gm = analysis.graph
    memo: dict[int, Any] = {}  # id(original tensor) -> its replacement
    added: dict[str, dict[str, Tensor]] = {}
    for name, new_tensors in change.tensors.items():
        module = gm.get_submodule(name)
        for tname, new in new_tensors.items():
            original = getattr(module, tname)
            if original is None:
                added.setdefault(name, {})[tname] = nn.Parameter(new)
            elif isinstance(original, nn.Parameter):
                memo[id(original)] = nn.Parameter(new, requires_grad=original.requires_grad)
            else:
                memo[id(original)] = new
    with torch.no_grad():
        out = gm if owned else GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
        cloned: set[str] = set()
        targets = {str(n.target) for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
        for target in sorted(targets, key=lambda t: t.count(".")):
            if _has_ancestor(target, cloned):
                continue  # cloned with its ancestor
            parent, _, field = target.rpartition(".")
            new = _clone(attribute(gm, target), memo)
            owner = out.get_submodule(parent)
            if isinstance(new, nn.Module) and field in owner._modules:
                owner._modules[field] = new  # skips nn.Module.__setattr__'s bookkeeping
            else:
                setattr(owner, field, new)
            cloned.add(target)
    apply_edits(out, change)
    for name in dict.fromkeys([*change.tensors, *change.attrs]):
        module = out.get_submodule(name)
        for tname, tensor in added.get(name, {}).items():
            setattr(module, tname, tensor)
        for attr, value in change.attrs.get(name, {}).items():
            if attr in module.__dict__ and not isinstance(value, (Tensor, nn.Module)):
                module.__dict__[attr] = value  # a plain number (out_features): nn.Module.__setattr__ is slow
            else:
                setattr(module, attr, value)
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
    return out


def apply_constants(gm: GraphModule, constants: tuple[tuple[str, tuple[int, ...], int], ...]) -> None:
    """Writes a rewrite's graph constants (head counts, inferred sizes) into `gm` and recompiles it."""
    if not constants:
        return
    nodes = {n.name: n for n in gm.graph.nodes}
    for node, path, value in constants:
        _set_arg(nodes[node], path, value)
    gm.recompile()


def apply_edits(gm: GraphModule, change: Rewrite) -> None:
    """Writes every graph edit of a rewrite into `gm`: constants, norm arguments, widened F.layer_norm."""
    if not (change.args or change.full_width):
        apply_constants(gm, change.constants)
        return
    from fprune.modules import layer_norm_full

    nodes = {n.name: n for n in gm.graph.nodes}
    for node, path, value in (*change.constants, *change.args):
        _set_arg(nodes[node], path, value)
    for node, full in change.full_width:
        nodes[node].target = layer_norm_full
        nodes[node].kwargs = {**nodes[node].kwargs, "full_width": full}
    gm.recompile()


def _set_arg(node: Node, path: ArgPath, value: Any) -> None:
    """Replaces one (possibly nested) argument of a node: a head count, an inferred size, a norm's eps
    (a keyword argument when the path starts with its name)."""
    head = path[0]
    if isinstance(head, str):
        node.kwargs = {**node.kwargs, head: value}
        return
    args: list[Any] = list(node.args)
    if len(path) == 1:
        args[head] = value
    else:
        container: Any = node.args[head]
        inner, at = list(container), path[1]
        assert isinstance(at, int)  # keywords only at the top
        inner[at] = value
        args[head] = type(container)(inner)
    node.args = tuple(args)


def _has_ancestor(target: str, done: set[str]) -> bool:
    prefix = target
    while "." in prefix:
        prefix = prefix.rpartition(".")[0]
        if prefix in done:
            return True
    return False


_PLAIN_CONTAINERS = (dict, OrderedDict, list, set)


def _clone(obj: Any, memo: dict[int, Any]) -> Any:
    """A copy sharing no tensor with `obj`; tensors found in `memo` are replaced, not copied.

    torch.nn modules are rebuilt field by field (their attributes are numbers, tuples and
    containers of those); any other class goes through ``copy.deepcopy`` with the same memo.
    """
    if isinstance(obj, Tensor):
        if id(obj) in memo:
            return memo[id(obj)]
        data = obj.detach().clone()
        return nn.Parameter(data, requires_grad=obj.requires_grad) if isinstance(obj, nn.Parameter) else data
    if not isinstance(obj, nn.Module) or not type(obj).__module__.startswith("torch.nn."):
        return copy.deepcopy(obj, memo)
    new = object.__new__(type(obj))
    fields = dict(obj.__dict__)
    for key, value in fields.items():
        if key == "_parameters" or key == "_buffers":
            fields[key] = type(value)((k, None if v is None else _clone(v, memo)) for k, v in value.items())
        elif key == "_modules":
            fields[key] = type(value)((k, None if v is None else _clone(v, memo)) for k, v in value.items())
        elif type(value) in _PLAIN_CONTAINERS:
            fields[key] = value.copy()
        elif isinstance(value, (dict, list, set)):
            fields[key] = copy.copy(value)
    new.__dict__ = fields
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()
    return new


# --------------------------------------------------------------------------------------
# Bias folding (fold_bias=True)
