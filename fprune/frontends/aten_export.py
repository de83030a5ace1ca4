"""The torch.export front-end: an ``ExportedProgram``'s aten graph, read in the analysis's vocabulary.

torch.export records a model as aten ops over *lifted* state: the parameters and buffers are
graph inputs named in the program's signature.  :func:`lift` turns that graph back into the
vocabulary the channel analysis understands, one node for one node:

* an op that owns parameters (``aten.linear``, ``conv*d``, ``batch_norm``, ``layer_norm``,
  ``rms_norm``, ``group_norm``, ``embedding``, ``prelu``) becomes a call of a small stand-in module of the
  standard torch.nn class (an ``nn.Linear`` for ``aten.linear``) holding the program's own tensors,
  placed at the path of the module that owned them, so groups, roles and plans name the original
  model's modules and parameters, exactly as the torch.fx front-end does;
* every other op in :data:`ATEN_OPS` becomes the torch function or method with the same meaning;
* an op not listed stays an aten call: the analysis has no rule for it, so every channel it reads
  is left unpruned (soundness does not depend on this table being complete).

The stand-ins exist only for the analysis and the scorers; :mod:`fprune.rewrite.export_backend`
slices the program itself.  Nothing here modifies the program.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> ep = torch.export.export(net, (torch.randn(3, 4),))
    >>> lifted = lift(ep)
    >>> [n.op + ":" + str(n.target) for n in lifted.graph.graph.nodes][1:4]
    ['call_module:0', 'call_function:<built-in method relu of type object at ...>', 'call_module:2']
    >>> type(lifted.graph.get_submodule("0")).__name__
    'Linear'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import Graph, GraphModule, Node

from fprune.errors import InvalidTypeError, TraceError
from fprune.modules import TransposedLinear

if TYPE_CHECKING:
    from fprune.analysis.values import ArgPath

__all__ = ["Lifted", "lift", "export", "ATEN_OPS", "PARAMETER_OPS"]

aten = torch.ops.aten

#: aten ops read as the torch-level function or method of the same meaning (``"method:name"``).
ATEN_OPS: Mapping[Any, Any] = MappingProxyType({
    # elementwise
    aten.relu.default: torch.relu, aten.relu_.default: torch.relu, aten.gelu.default: F.gelu,
    aten.silu.default: F.silu, aten.silu_.default: F.silu, aten.sigmoid.default: torch.sigmoid,
    aten.tanh.default: torch.tanh, aten.hardtanh.default: F.hardtanh, aten.hardtanh_.default: F.hardtanh,
    aten.hardswish.default: F.hardswish, aten.hardswish_.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid, aten.elu.default: F.elu, aten.leaky_relu.default: F.leaky_relu,
    aten.mish.default: F.mish, aten.softplus.default: F.softplus, aten.neg.default: torch.neg,
    aten.abs.default: torch.abs, aten.exp.default: torch.exp, aten.dropout.default: F.dropout,
    aten.clone.default: "method:clone", aten.contiguous.default: "method:contiguous",
    aten.alias.default: "method:contiguous", aten.detach.default: "method:detach",
    aten.to.dtype: "method:to", aten.to.dtype_layout: "method:to", aten.type_as.default: "method:type_as",
    aten.reshape_as.default: "method:reshape_as", aten.view_as.default: "method:reshape_as",
    aten.pad.default: F.pad, aten.constant_pad_nd.default: torch.constant_pad_nd, aten.roll.default: torch.roll,
    aten._to_copy.default: "method:to", aten.to.device: "method:to",
    aten.pow.Tensor_Scalar: torch.pow, aten.pow.Tensor_Tensor: torch.pow, aten.rsqrt.default: torch.rsqrt,
    aten.sqrt.default: torch.sqrt, aten.cos.default: torch.cos, aten.sin.default: torch.sin,
    aten.log.default: torch.log, aten.reciprocal.default: torch.reciprocal, aten.erf.default: torch.erf,
    aten.clamp.default: torch.clamp, aten.clamp_min.default: torch.clamp_min, aten.square.default: torch.square,
    aten.zeros_like.default: torch.zeros_like, aten.ones_like.default: torch.ones_like,
    aten.full_like.default: torch.full_like,
    # binary
    aten.add.Tensor: operator.add, aten.sub.Tensor: operator.sub, aten.mul.Tensor: operator.mul,
    aten.div.Tensor: operator.truediv, aten.add_.Tensor: operator.add, aten.mul_.Tensor: operator.mul,
    aten.add.Scalar: operator.add, aten.sub.Scalar: operator.sub, aten.mul.Scalar: operator.mul,
    aten.div.Scalar: operator.truediv, aten.rsub.Scalar: torch.rsub,
    aten.eq.Tensor: torch.eq, aten.eq.Scalar: torch.eq, aten.ne.Tensor: torch.ne, aten.ne.Scalar: torch.ne,
    aten.le.Tensor: torch.le, aten.le.Scalar: torch.le, aten.lt.Tensor: torch.lt, aten.lt.Scalar: torch.lt,
    aten.ge.Tensor: torch.ge, aten.ge.Scalar: torch.ge, aten.gt.Tensor: torch.gt, aten.gt.Scalar: torch.gt,
    aten.__and__.Tensor: torch.bitwise_and, aten.bitwise_and.Tensor: torch.bitwise_and,
    aten.logical_and.default: torch.logical_and, aten.__or__.Tensor: torch.bitwise_or,
    aten.bitwise_or.Tensor: torch.bitwise_or, aten.logical_not.default: torch.logical_not,
    aten.minimum.default: torch.minimum, aten.maximum.default: torch.maximum, aten.min.other: torch.minimum,
    aten.max.other: torch.maximum,
    aten.where.self: torch.where, aten.where.ScalarOther: torch.where, aten.where.ScalarSelf: torch.where,
    # new tensors, index arithmetic (masks, positions)
    aten.arange.default: torch.arange, aten.arange.start: torch.arange, aten.arange.start_step: torch.arange,
    aten.ones.default: torch.ones, aten.zeros.default: torch.zeros, aten.full.default: torch.full,
    aten.empty.memory_format: torch.empty, aten.new_ones.default: "method:new_ones",
    aten.new_zeros.default: "method:new_zeros", aten.new_full.default: "method:new_full",
    aten.new_empty.default: "method:new_empty", aten.scalar_tensor.default: torch.scalar_tensor,
    aten.cumsum.default: torch.cumsum, aten.diff.default: torch.diff,
    aten.gather.default: torch.gather,
    # a linear whose weight no module owns alone (tied): read as the functional form, never sliced
    aten.linear.default: F.linear,
    # a norm no module stands in for (no affine tensors, or the root's own): the functional form
    aten.layer_norm.default: F.layer_norm, aten.rms_norm.default: F.rms_norm,
    # shapes
    aten.view.default: "method:view", aten.reshape.default: "method:reshape",
    aten._unsafe_view.default: "method:view", aten.permute.default: "method:permute",
    aten.transpose.int: "method:transpose", aten.flatten.using_ints: torch.flatten,
    aten.cat.default: torch.cat, aten.concat.default: torch.cat, aten.split.Tensor: torch.split,
    aten.split_with_sizes.default: torch.split, aten.chunk.default: torch.chunk, aten.unbind.int: torch.unbind,
    aten.sym_size.int: "method:size", aten.expand.default: "method:expand",
    # reductions and attention
    aten.mean.dim: torch.mean, aten.sum.dim_IntList: torch.sum, aten.amax.default: torch.amax,
    aten.softmax.int: F.softmax, aten._softmax.default: F.softmax, aten.log_softmax.int: F.log_softmax,
    aten.matmul.default: torch.matmul, aten.bmm.default: torch.matmul,
    aten.scaled_dot_product_attention.default: F.scaled_dot_product_attention,
    aten.adaptive_avg_pool1d.default: F.adaptive_avg_pool1d, aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.adaptive_avg_pool3d.default: F.adaptive_avg_pool3d,
    aten.avg_pool1d.default: F.avg_pool1d, aten.avg_pool2d.default: F.avg_pool2d, aten.avg_pool3d.default: F.avg_pool3d,
    aten.max_pool1d.default: F.max_pool1d, aten.max_pool2d.default: F.max_pool2d, aten.max_pool3d.default: F.max_pool3d,
})

# Shape ops whose output shape is given by their arguments only: read as a reshape to that shape,
# with no constant of their own to edit (their result follows the input's pruned size).
READ_AS_RESHAPE = (aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
               aten.unflatten.int)
# Ops that check metadata and produce nothing the graph reads.
_CHECKS = (aten._assert_tensor_metadata.default, aten._assert_scalar.default, aten.sym_constrain_range_for_size.default)


@dataclass(frozen=True)
class Lifted:
    """An ExportedProgram read in the analysis's vocabulary, and the way back to the program."""

    graph: GraphModule  # torch-level graph over stand-in modules named as the original model
    program: ExportedProgram  # the program read (not owned: never mutated)
    nodes: Mapping[str, str]  # lifted node -> program node it stands for
    paths: Mapping[tuple[str, ArgPath], ArgPath | None]  # (lifted node, arg path) -> program path
    tensors: Mapping[str, str]  # lifted tensor fqn -> program state name (parameter, buffer or constant)
    # stand-in module -> the program nodes calling it, and where each module attribute the rewrite may
    # change (a conv's groups, a norm's num_groups) is an argument of that op: attr -> (index, defaults)
    sites: Mapping[str, tuple[tuple[str, Mapping[str, tuple[int, tuple[Any, ...]]]], ...]]


def export(
    model: nn.Module,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
    dynamic_shapes: Any = None,
) -> ExportedProgram:
    """``torch.export.export`` with fprune's errors: the program every fprune stage accepts.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> ep = export(nn.Linear(2, 3), (torch.randn(1, 2),))
        >>> type(ep).__name__
        'ExportedProgram'

    Raises:
        InvalidTypeError: `model` is not an nn.Module.
        TraceError: torch.export failed; the message carries torch's reason and the usual fixes.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"expected an nn.Module to export, got {type(model).__name__}")
    if not isinstance(args, tuple):
        raise InvalidTypeError(f"args must be a tuple of the model's positional inputs, got {type(args).__name__}; "
                               "wrap a single input as (x,)")
    try:
        return torch.export.export(model, args, dict(kwargs or {}), strict=strict, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch.export raises many types (UserError, TypeError, GuardOnDataDependent...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(
            f"torch.export could not capture {type(model).__name__}: {type(exc).__name__}: {reason}. "
            "Usual fixes: pass keyword inputs with kwargs= (e.g. kwargs={'input_ids': ids}); for a decoder "
            "pass use_cache=False (a cache object is not a tensor); keep strict=False (the default) so "
            "Python code runs as it is; mark only batch or sequence dims as dynamic"
        ) from exc


def lift(program: ExportedProgram) -> Lifted:
    """Reads an ExportedProgram in the analysis's vocabulary (the program is not modified).

    Raises:
        InvalidTypeError: `program` is not an ExportedProgram.
    """
    if not isinstance(program, ExportedProgram):
        raise InvalidTypeError(f"expected a torch.export.ExportedProgram, got {type(program).__name__}")
    return _Lifter(program).run()


# --------------------------------------------------------------------------------------


def _rank(node: Any) -> int | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val.dim() if isinstance(val, Tensor) else None


def _shape(node: Node) -> list[Any] | None:
    val = node.meta.get("val")
    return list(val.shape) if isinstance(val, Tensor) else None


class _Lifter:
    def __init__(self, program: ExportedProgram) -> None:
        self.program = program
        self.root = nn.Module()
        self.graph = Graph()
        self.env: dict[Node, Any] = {}
        self.nodes: dict[str, str] = {}
        self.paths: dict[tuple[str, ArgPath], ArgPath | None] = {}
        self.tensors: dict[str, str] = {}
        self.state: dict[str, Tensor] = {**program.state_dict, **program.constants}
        self.placeholder_state: dict[str, str] = {}  # placeholder name -> state name
        sig = program.graph_signature
        for spec in sig.input_specs:
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR) and spec.target:
                self.placeholder_state[spec.arg.name] = spec.target
        self.mutated = set(sig.buffers_to_mutate.values()) | set(getattr(sig, "parameters_to_mutate", {}).values())
        self.shells: dict[tuple[str, str], str] = {}  # (weight state name, op) -> module path
        self.taken: set[str] = set()
        self.get_attrs: dict[str, Node] = {}
        self.reason: str | None = None  # why the node being lifted keeps its channels whole
        self.sites: dict[str, list[tuple[str, Mapping[str, tuple[int, tuple[Any, ...]]]]]] = {}

    # state ------------------------------------------------------------------------------
    def state_name(self, arg: Any) -> str | None:
        return self.placeholder_state.get(arg.name) if isinstance(arg, Node) and arg.op == "placeholder" else None

    def install(self, path: str, obj: Any) -> None:
        """Places a module or tensor at a dotted path under the root, making plain containers on the way."""
        owner: nn.Module = self.root
        *parents, leaf = path.split(".")
        for part in parents:
            child = getattr(owner, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                owner.add_module(part, child)
            owner = child
        if isinstance(obj, nn.Module):
            old = getattr(owner, leaf, None)
            if isinstance(old, nn.Module):  # a container made earlier: keep its children
                for name, sub in old.named_children():
                    obj.add_module(name, sub)
                for name, t in list(old._parameters.items()) + list(old._buffers.items()):
                    if not hasattr(obj, name) and t is not None:
                        self._set_tensor(obj, name, t)
            owner.add_module(leaf, obj)
        else:
            self._set_tensor(owner, leaf, obj)

    @staticmethod
    def _set_tensor(owner: nn.Module, name: str, t: Tensor) -> None:
        if name in owner._parameters or name in owner._buffers:
            delattr(owner, name)
        if isinstance(t, nn.Parameter):
            owner.register_parameter(name, t)
        else:
            owner.register_buffer(name, t)

    def get_attr(self, state_name: str) -> Node:
        node = self.get_attrs.get(state_name)
        if node is None:
            target = state_name if "." in state_name or state_name.isidentifier() else f"_c.{state_name}"
            target = target.replace("-", "_")
            if target not in self.tensors:
                self.install(target, self.state[state_name])
                self.tensors[target] = state_name
            node = self.graph.get_attr(target)
            node.meta["val"] = self.state[state_name]
            self.get_attrs[state_name] = node
        return node

    def arg(self, a: Any) -> Any:
        if isinstance(a, Node):
            if a in self.env:
                return self.env[a]
            name = self.state_name(a)
            if name is not None:
                return self.get_attr(name)
            raise KeyError(a.name)  # pragma: no cover - topological order guarantees it
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        return a

    # the pass ---------------------------------------------------------------------------
    def run(self) -> Lifted:
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name not in self.placeholder_state:
                    new = self.graph.placeholder(node.name)
                    new.meta = dict(node.meta)
                    self.env[node] = new
                continue
            if node.op == "output":
                self.output(node)
                continue
            if node.op == "call_function" and node.target in _CHECKS:
                continue
            self.reason = None
            new = self.lift_node(node)
            if self.reason:
                new.meta["fprune_reason"] = self.reason
            new.meta.update({k: v for k, v in node.meta.items() if k in ("val", "nn_module_stack", "stack_trace")})
            self.env[node] = new
            self.nodes[new.name] = node.name
        gm = GraphModule(self.root, self.graph, "Lifted")
        sites = {k: tuple(v) for k, v in self.sites.items()}
        return Lifted(gm, self.program, MappingProxyType(self.nodes), MappingProxyType(self.paths),
                      MappingProxyType(self.tensors), MappingProxyType(sites))

    def output(self, node: Node) -> None:
        specs = self.program.graph_signature.output_specs
        outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
        user = [self.arg(o) for o, spec in zip(outs, specs) if spec.kind == OutputKind.USER_OUTPUT]
        self.graph.output(user[0] if len(user) == 1 else tuple(user))

    def lift_node(self, node: Node) -> Node:
        target = node.target
        if node.op == "call_function" and target in PARAMETER_OPS:
            made = PARAMETER_OPS[target](self, node)
            if made is not None:
                return made
        if node.op == "call_function" and target is operator.getitem:
            return self.graph.call_function(operator.getitem, (self.arg(node.args[0]), node.args[1]))
        if node.op == "call_function" and target in (aten.select.int, aten.slice.Tensor):
            return self.index(node)
        if node.op == "call_function" and target is aten.index.Tensor:  # x[i0, i1, ...] with index tensors
            indices: Any = node.args[1]
            return self.graph.call_function(operator.getitem, (self.arg(node.args[0]), tuple(self.arg(indices))))
        if node.op == "call_function" and target in READ_AS_RESHAPE and _shape(node) is not None:
            new = self.graph.call_method("reshape", (self.arg(node.args[0]), _shape(node)))
            for i in range(len(_shape(node) or ())):
                self.paths[(new.name, (1, i))] = self.unflatten_path(node, i)
            return new
        mapped = ATEN_OPS.get(target) if node.op == "call_function" else None
        args, kwargs = self.arg(node.args), self.arg(node.kwargs)
        if target is aten.t.default:
            return self.graph.call_method("transpose", (args[0], 0, 1))
        if isinstance(mapped, str):
            return self.graph.call_method(mapped.partition(":")[2], args, kwargs)
        if mapped is not None:
            return self.graph.call_function(mapped, args, kwargs)
        return self.graph.create_node(node.op, node.target, args, kwargs)  # no rule: its channels stay whole

    @staticmethod
    def unflatten_path(node: Node, i: int) -> tuple[int, ...] | None:
        """Where the lifted reshape's size ``i`` lives in the op: only unflatten has sizes of its own."""
        if node.target is not aten.unflatten.int:
            return None
        rank = _rank(node.args[0]) or 0
        dim = node.args[1] % rank if isinstance(node.args[1], int) and rank else 0
        sizes: Any = node.args[2]
        return (2, i - dim) if dim <= i < dim + len(sizes) else None

    def index(self, node: Node) -> Node:
        """select/slice as the indexing expression the analysis reads (``x[:, 3]``, ``x[:, 0:4]``)."""
        source: Any = node.args[0]
        rank = _rank(source)
        dim = node.args[1] if len(node.args) > 1 else 0
        if rank is None or not isinstance(dim, int):
            return self.graph.create_node("call_function", node.target, self.arg(node.args), self.arg(node.kwargs))
        dim %= rank
        if node.target is aten.select.int:
            item: Any = node.args[2]
        else:
            start, end, step = (list(node.args[2:]) + [None, None, 1])[:3]
            size = (_shape(source) or [None] * rank)[dim]
            full = start in (None, 0) and (end is None or (isinstance(size, int) and isinstance(end, int)
                                                             and end >= size)) and step in (None, 1)
            item = slice(None) if full else slice(start, end, step)
        index = tuple([slice(None)] * dim + [item])
        return self.graph.call_function(operator.getitem, (self.arg(source), index))

    # stand-in modules -------------------------------------------------------------------
    def shell(self, node: Node, key: str, owner_of: Any, build: Callable[[], nn.Module],
              tensors: Mapping[str, Any], inputs: tuple[Any, ...],
              attrs: Mapping[str, tuple[int, tuple[Any, ...]]] | None = None) -> Node | None:
        """Calls a stand-in module holding `tensors` (attr -> program arg), placed at the owner's path.

        `attrs` names the module attributes that are arguments of the op (attr -> (position, the
        defaults of the positions before it)), so that the back-end can write their new values.
        """
        names = {attr: self.state_name(a) for attr, a in tensors.items() if a is not None}
        if any(n is None or n in self.mutated for n in names.values()):
            if any(n in self.mutated for n in names.values() if n is not None):
                self.reason = (
                    "updates its own state while running (a BatchNorm in training mode), so its "
                    "channels are left whole; export the model in eval mode to prune them")
            return None
        owner_name = names.get(owner_of)
        if owner_name is None:
            return None
        shell_key = (owner_name, key)
        path = self.shells.get(shell_key)
        if path is None:
            prefix = owner_name.rpartition(".")[0]
            stack = node.meta.get("nn_module_stack") or {}
            caller = list(stack.values())[-1][0] if stack else ""
            # the owning module's path; a tensor used outside its owner (a tied embedding, whose one
            # state name is the lm_head's) is named after the module that runs the op
            running = {str(v[0]) for v in stack.values()}
            order = (prefix, caller) if prefix in running or not caller else (caller, prefix)
            path = next((p for p in order if p and p not in self.taken), None)
            if path is None:
                return None
            module = build()
            for attr, name in names.items():
                assert name is not None  # checked above
                self._set_tensor(module, attr, self.state[name])
                self.tensors[f"{path}.{attr}"] = name
            self.install(path, module)
            self.taken.add(path)
            self.shells[shell_key] = path
        self.sites.setdefault(path, []).append((node.name, MappingProxyType(dict(attrs or {}))))
        return self.graph.call_module(path, tuple(self.arg(a) for a in inputs))


def _val(node: Any) -> Tensor:
    val: Tensor = node.meta["val"]
    return val


def _args(node: Node, names: tuple[str, ...], defaults: tuple[Any, ...]) -> list[Any]:
    """Positional-or-keyword arguments of an aten call, by schema position."""
    out = []
    for i, (name, default) in enumerate(zip(names, defaults)):
        out.append(node.args[i] if i < len(node.args) else node.kwargs.get(name, default))
    return out


def _linear(lifter: _Lifter, node: Node) -> Node | None:
    x, w, b = _args(node, ("input", "weight", "bias"), (None, None, None))
    out, inp = _val(w).shape

    def build() -> nn.Module:
        return nn.Linear(inp, out, bias=b is not None, device="meta")

    return lifter.shell(node, "linear", "weight", build, {"weight": w, "bias": b}, (x,))


def _addmm(lifter: _Lifter, node: Node) -> Node | None:
    """addmm(bias, x, weight) with the program's own (in, out) weight: Hugging Face's Conv1D."""
    b, x, w, beta, alpha = _args(node, ("self", "mat1", "mat2", "beta", "alpha"), (None, None, None, 1, 1))
    if beta != 1 or alpha != 1 or _rank(b) != 1:
        return None
    inp, out = _val(w).shape

    def build() -> nn.Module:
        return TransposedLinear(inp, out, bias=True, device="meta")

    return lifter.shell(node, "addmm", "weight", build, {"weight": w, "bias": b}, (x,))


def _conv(spatial: int, transposed: bool) -> Callable[[_Lifter, Node], Node | None]:
    cls = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
           (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d}[(spatial, transposed)]

    def rule(lifter: _Lifter, node: Node) -> Node | None:
        if transposed:
            x, w, b, stride, padding, output_padding, groups, dilation = _args(
                node, ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
                (None, None, None, 1, 0, 0, 1, 1))
        else:
            x, w, b, stride, padding, dilation, groups = _args(
                node, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                (None, None, None, 1, 0, 1, 1))
            output_padding = 0
        shape = _val(w).shape
        if not isinstance(groups, int):
            return None
        in_ch, out_ch = (shape[0], shape[1] * groups) if transposed else (shape[1] * groups, shape[0])

        def build() -> nn.Module:
            kw: dict[str, Any] = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                                      bias=b is not None, device="meta")
            if transposed:
                kw["output_padding"] = output_padding
            module: nn.Module = cls(in_ch, out_ch, tuple(shape[2:]), **kw)
            return module

        defaults = (None, None, None, 1, 0, 0) if transposed else (None, None, None, 1, 0, 1)
        return lifter.shell(node, cls.__name__, "weight", build, {"weight": w, "bias": b}, (x,),
                            {"groups": (6, defaults)})

    return rule


def _batch_norm(lifter: _Lifter, node: Node) -> Node | None:
    x, w, b, mean, var, training, momentum, eps = _args(
        node, ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"),
        (None, None, None, None, None, False, 0.1, 1e-5))
    rank = _rank(x)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank or 0)
    if cls is None or mean is None or var is None:
        return None
    if training:
        lifter.reason = ("is a batch norm in training mode (it updates its running statistics), so "
                                      "its channels are left whole; export the model in eval mode to prune them")
        return None
    width = _val(mean).shape[0]

    def build() -> nn.Module:
        bn = cls(width, eps=eps, momentum=momentum, affine=w is not None, device="meta")
        bn.register_buffer("num_batches_tracked", None)
        return bn

    tensors = {"weight": w, "bias": b, "running_mean": mean, "running_var": var}
    return lifter.shell(node, cls.__name__, "running_mean", build, tensors, (x,))


def _layer_norm(lifter: _Lifter, node: Node) -> Node | None:
    x, shape, w, b, eps = _args(node, ("input", "normalized_shape", "weight", "bias", "eps"),
                                (None, None, None, None, 1e-5))
    if w is None:
        return None

    def build() -> nn.Module:
        return nn.LayerNorm(list(shape), eps=eps, elementwise_affine=True, bias=b is not None, device="meta")

    return lifter.shell(node, "layer_norm", "weight", build, {"weight": w, "bias": b}, (x,),
                        {"normalized_shape": (1, (None,))})


def _rms_norm(lifter: _Lifter, node: Node) -> Node | None:
    x, shape, w, eps = _args(node, ("input", "normalized_shape", "weight", "eps"), (None, None, None, None))
    if w is None:
        return None

    def build() -> nn.Module:
        return nn.RMSNorm(list(shape), eps=eps, elementwise_affine=True, device="meta")

    return lifter.shell(node, "rms_norm", "weight", build, {"weight": w}, (x,),
                        {"normalized_shape": (1, (None,)), "eps": (3, (None, None, None))})


def _group_norm(lifter: _Lifter, node: Node) -> Node | None:
    x, groups, w, b, eps = _args(node, ("input", "num_groups", "weight", "bias", "eps"), (None, 1, None, None, 1e-5))
    if w is None or b is None:
        return None

    def build() -> nn.Module:
        return nn.GroupNorm(groups, _val(w).shape[0], eps=eps, affine=True, device="meta")

    return lifter.shell(node, "group_norm", "weight", build, {"weight": w, "bias": b}, (x,),
                        {"num_groups": (1, (None,))})


def _embedding(lifter: _Lifter, node: Node) -> Node | None:
    w, idx, padding_idx = _args(node, ("weight", "indices", "padding_idx"), (None, None, -1))
    num, dim = _val(w).shape

    def build() -> nn.Module:
        return nn.Embedding(num, dim, padding_idx=None if padding_idx in (None, -1) else padding_idx, device="meta")

    return lifter.shell(node, "embedding", "weight", build, {"weight": w}, (idx,))


def _prelu(lifter: _Lifter, node: Node) -> Node | None:
    x, w = _args(node, ("self", "weight"), (None, None))

    def build() -> nn.Module:
        return nn.PReLU(_val(w).numel(), device="meta")

    return lifter.shell(node, "prelu", "weight", build, {"weight": w}, (x,))


#: aten ops that own parameters, read as a call of the standard module holding them.
PARAMETER_OPS: Mapping[Any, Callable[[_Lifter, Node], Node | None]] = MappingProxyType({
    aten.linear.default: _linear, aten.addmm.default: _addmm,
    aten.conv1d.default: _conv(1, False), aten.conv2d.default: _conv(2, False), aten.conv3d.default: _conv(3, False),
    aten.conv_transpose1d.default: _conv(1, True), aten.conv_transpose2d.input: _conv(2, True),
    aten.conv_transpose3d.input: _conv(3, True),
    aten.batch_norm.default: _batch_norm, aten.layer_norm.default: _layer_norm, aten.rms_norm.default: _rms_norm,
    aten.group_norm.default: _group_norm, aten.embedding.default: _embedding, aten.prelu.default: _prelu,
})
