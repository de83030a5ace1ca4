"""The ExportedProgram back-end: a rewrite's data applied to a copy of the program.

The rewrite (:func:`fprune.analysis.resolve.plan_rewrite`) says, as data, every tensor's new value and
every graph constant's new value.  This back-end reads only that: it copies the program's graph,
writes the new constants into the copied nodes, swaps the sliced state into a new state dict,
re-derives every node's ``meta["val"]`` with fake tensors (the shapes the new sizes imply, dynamic
dims kept symbolic) and builds a new ``ExportedProgram`` with the same signature.  The input
program is not modified.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune import apply_patterns, export
    >>> ep = export(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), (torch.randn(3, 4),))
    >>> small = apply_patterns(ep, {"0": torch.tensor([True, False, True, True, False, True])})
    >>> small.state_dict["0.weight"].shape, ep.state_dict["0.weight"].shape
    (torch.Size([4, 4]), torch.Size([6, 4]))
    >>> small.module()(torch.randn(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.fx import Graph, GraphModule, Node

from fprune.errors import UnsupportedModelError

if TYPE_CHECKING:
    from fprune.frontends.aten_export import Lifted
    from fprune.analysis.resolve import Rewrite
    from fprune.analysis.values import ArgPath

__all__ = ["rebuild_program"]


def rebuild_program(lifted: Lifted, change: Rewrite) -> ExportedProgram:
    """A new ExportedProgram: `lifted.program` with the tensors and constants `change` gives.

    Raises:
        UnsupportedModelError: the change adds a tensor the program does not have (``fold_bias``
            giving a bias to a layer without one), or a constant it must edit is computed at run time
            (a dynamic dim); nothing is built.
    """
    program = lifted.program
    state: dict[str, Tensor] = {}
    for module, tensors in change.tensors.items():
        for tname, new in tensors.items():
            fqn = f"{module}.{tname}" if module else tname
            name = lifted.tensors.get(fqn)
            if name is None:
                raise UnsupportedModelError(
                    f"pruning adds tensor {fqn!r}, which the ExportedProgram does not have (fold_bias=True gives "
                    "a bias to a layer exported without one); prune without fold_bias, or prune the nn.Module "
                    "and export the result"
                )
            state[name] = new
    # a tied tensor is in the program under several names (a tied lm_head and its embedding): one value
    originals: dict[int, list[str]] = {}
    for name, t in program.state_dict.items():
        originals.setdefault(id(t), []).append(name)
    for name in list(state):
        old = program.state_dict.get(name)
        for alias in originals.get(id(old), []) if old is not None else []:
            state.setdefault(alias, state[name])
    edits: dict[str, list[tuple[ArgPath, Any]]] = {}
    for node, path, value in (*change.constants, *change.args):
        key = (node, path)
        target = lifted.paths[key] if key in lifted.paths else path
        if target is not None:
            edits.setdefault(lifted.nodes[node], []).append((target, value))

    graph = Graph()
    graph._codegen = copy.deepcopy(program.graph._codegen)
    val_map: dict[Any, Any] = {}  # Node -> Node (typed for tensors upstream)
    copied: Any = graph.graph_copy(program.graph, val_map, return_output_node=True)
    result, old_output = copied
    graph.output(result).meta = dict(old_output.meta)
    for old, new in val_map.items():  # a fresh graph may rename ("input" -> "input_1"); the signature names them
        if new.name != old.name:
            new.name = old.name
    gm = GraphModule(program.graph_module, graph)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, changes in edits.items():
        for path, value in changes:
            _set_arg(nodes[name], path, value)
    for module, attrs in change.attrs.items():  # module attributes that are op arguments (conv groups)
        for node_name, where in lifted.sites.get(module, ()):
            for attr, (index, defaults) in where.items():
                if attr in attrs:
                    node = nodes[node_name]
                    args = list(node.args) + list(defaults[len(node.args):index])
                    value = attrs[attr]
                    args[index:index + 1] = [list(value) if isinstance(value, tuple) else value]
                    node.args = tuple(args)
        if "full_width" in attrs:  # a LayerNorm over pruned channels, computed over its original width
            for node_name, _ in lifted.sites.get(module, ()):
                _widen_layer_norm(gm.graph, nodes[node_name], int(attrs["full_width"]))
    for node_name, full in change.full_width:  # the same, for a layer norm without affine tensors
        _widen_layer_norm(gm.graph, nodes[lifted.nodes[node_name]], full)

    made: dict[int, Tensor] = {}  # id(new tensor) -> its one Parameter or buffer (tied names share it)
    new_state = {k: _like(v, state.get(k), made) for k, v in program.state_dict.items()}
    new_constants = {k: state.get(k, v) if isinstance(v, Tensor) else v for k, v in program.constants.items()}
    _propagate(program, gm, {**new_state, **new_constants})
    return ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=copy.deepcopy(program.graph_signature),
        state_dict=new_state,
        range_constraints=copy.deepcopy(program.range_constraints),
        module_call_graph=copy.deepcopy(program._module_call_graph),
        example_inputs=program.example_inputs,
        constants=new_constants,
        verifiers=program.verifiers,
    )


def _widen_layer_norm(graph: Graph, node: Node, full: int) -> None:
    """``layer_norm(x, [d'], w, b)`` -> ``layer_norm(pad(x, d - d'), [d])[..., :d'] * w + b``: the
    statistics of the original width with the removed channels zero (what PrunedLayerNorm computes)."""
    aten = torch.ops.aten
    defaults: tuple[Any, ...] = (None, None, None, None, 1e-5)  # aten.layer_norm(input, shape, weight, bias, eps)
    x, shape, w, b, eps = (list(node.args) + list(defaults[len(node.args):]))[:5]
    kept = int(shape[-1])
    with graph.inserting_before(node):
        made = [graph.call_function(aten.constant_pad_nd.default, (x, [0, full - kept], 0.0))]
        made.append(graph.call_function(aten.layer_norm.default, (made[-1], [full], None, None, eps)))
        made.append(graph.call_function(aten.slice.Tensor, (made[-1], -1, 0, kept)))
        if w is not None:
            made.append(graph.call_function(aten.mul.Tensor, (made[-1], w)))
        if b is not None:
            made.append(graph.call_function(aten.add.Tensor, (made[-1], b)))
    for new in made:
        new.meta = {k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace", "source_fn_stack")}
    node.replace_all_uses_with(made[-1])
    graph.erase_node(node)


def _like(old: Tensor, new: Tensor | None, made: dict[int, Tensor]) -> Tensor:
    """The program's tensor for `old`: `new` (a fresh tensor the rewrite made, owned: not copied
    again) in old's kind, or `old` itself where nothing changed."""
    if new is None:
        return old
    if id(new) not in made:
        made[id(new)] = nn.Parameter(new.detach(), requires_grad=old.requires_grad) \
            if isinstance(old, nn.Parameter) else new.detach()
    return made[id(new)]


def _set_arg(node: Node, path: ArgPath, value: Any) -> None:
    head = path[0]
    if isinstance(head, str):  # a keyword argument
        node.kwargs = {**node.kwargs, head: _check(node, node.kwargs.get(head), value)}
        return
    args: list[Any] = list(node.args)
    if len(path) == 1:
        old: Any = args[head]
        args[head] = _check(node, old, value)
    else:
        inner, at = list(args[head]), path[1]
        assert isinstance(at, int)  # keywords only at the top
        inner[at] = _check(node, inner[at], value)
        args[head] = type(args[head])(inner)
    node.args = tuple(args)


def _check(node: Node, old: Any, value: Any) -> Any:
    if isinstance(old, Node):
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.target}) sizes the pruned channels with a value computed at run time "
            f"('{old.name}', a dynamic dim); export with a static size for that dim (leave it out of "
            "dynamic_shapes), or leave its group out of the masks"
        )
    return value


def _propagate(program: ExportedProgram, gm: GraphModule, state: dict[str, Tensor]) -> None:
    """Re-derives every node's fake value; user inputs keep theirs (their dynamic dims stay symbolic)."""
    from torch._guards import detect_fake_mode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode([n.meta.get("val") for n in placeholders])
    if mode is None:  # pragma: no cover - torch.export always records fake values
        raise UnsupportedModelError("the ExportedProgram has no fake values on its inputs; re-export it")
    names = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
             if getattr(spec.arg, "name", None) is not None}
    args: list[Any] = []
    with mode:
        for node in placeholders:
            target = names.get(node.name)
            if target is not None and target in state:
                args.append(mode.from_tensor(state[target], static_shapes=True))
            else:
                args.append(node.meta.get("val"))
    try:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*args)
    except Exception as exc:  # a shape the new sizes do not fit: refuse rather than build a broken program
        raise UnsupportedModelError(
            f"the pruned program does not type-check ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "an op fprune read as channel-preserving uses a size it did not edit. Leave that group out of "
            "the masks and report the model"
        ) from exc
    for node in gm.graph.nodes:
        node.meta.pop("tensor_meta", None)
