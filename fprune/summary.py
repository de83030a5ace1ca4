"""Per-layer before/after table of a pruned model: channels, parameters and MACs.

:func:`summary` compares an original model with its pruned copy module by
module (matched by fully-qualified name).  MACs (multiply-accumulates) are
counted on an example input with ``torch.fx`` shape propagation
(:class:`torch.fx.passes.shape_prop.ShapeProp`), run on a deep copy in eval
mode, so neither model is touched (not even BatchNorm statistics or the
training flag).  The result is a frozen :class:`Summary` that prints as an
aligned text table, renders as markdown (:meth:`Summary.to_markdown`) and
displays as a table in notebooks (``_repr_markdown_``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune import apply_patterns
    >>> from fprune.summary import summary
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pruned = apply_patterns(net, {"0": torch.arange(8) % 2 == 0})
    >>> print(summary(net, pruned, torch.zeros(1, 4)))
    layer  type    channels  channels  params  params    MACs   MACs
                   before    after     before   after  before  after
    -----  ------  --------  --------  ------  ------  ------  -----
    0      Linear  4→8       4→4           40      20      32     16
    2      Linear  8→2       4→2           18      10      16      8
    -----  ------  --------  --------  ------  ------  ------  -----
    total                                  58      30      48     24
                                                51.7%          50.0%
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.utils._pytree import tree_leaves
from typing_extensions import TypeAlias

from fprune.errors import InvalidArgumentError, InvalidTypeError
from fprune.trace import trace

if TYPE_CHECKING:
    from fprune.plan import Plan

__all__ = ["summary", "Summary", "LayerRow", "count_macs", "macs_by_module", "count_params"]

ExampleInput: TypeAlias = Union[Tensor, Sequence[Tensor]]  # one input tensor, or the positional inputs
Shape: TypeAlias = tuple[int, ...]
MacRule: TypeAlias = Callable[[Any, Shape, Shape], int]  # (module, input shape, output shape) -> MACs of one call
ChannelRule: TypeAlias = Callable[[Any], str]  # module -> "in→out" (or "n" for per-channel layers)


# --------------------------------------------------------------------------------------
# Counting rules, as data: looked up along the module type's MRO.


def _conv_macs(m: Any, inp: Shape, out: Shape) -> int:
    # every output element sums in_channels / groups * kernel products
    return int(math.prod(out) * (m.in_channels // m.groups) * math.prod(m.kernel_size))


def _conv_transpose_macs(m: Any, inp: Shape, out: Shape) -> int:
    # every input element is scattered to out_channels / groups * kernel outputs
    return int(math.prod(inp) * (m.out_channels // m.groups) * math.prod(m.kernel_size))


def _linear_macs(m: Any, inp: Shape, out: Shape) -> int:
    return int(math.prod(out) * m.in_features)


def _lstm_macs(m: Any, inp: Shape, out: Shape) -> int:
    steps = math.prod(inp[:-1])  # sequence length x batch (any order); 1 x batch when unbatched
    dirs = 2 if m.bidirectional else 1
    total, size = 0, m.input_size
    for _ in range(m.num_layers):
        total += dirs * 4 * m.hidden_size * (size + m.hidden_size)
        size = m.hidden_size * dirs
    return int(steps * total)


def _attention_macs(m: Any, query: Shape, key: Shape) -> int:
    # projections of query, key and value, scores and context over the heads, output projection
    inner = m.in_proj_weight.shape[0] // 3
    tokens_q, tokens_k = math.prod(query[:-1]), math.prod(key[:-1])
    src = key[0] if len(key) == 2 or not m.batch_first else key[1]
    return int(tokens_q * query[-1] * inner + 2 * tokens_k * key[-1] * inner + 2 * tokens_q * src * inner
               + tokens_q * inner * m.out_proj.out_features)


_MAC_RULES: Mapping[type, MacRule] = MappingProxyType(
    {
        nn.Conv1d: _conv_macs,
        nn.Conv2d: _conv_macs,
        nn.Conv3d: _conv_macs,
        nn.ConvTranspose1d: _conv_transpose_macs,
        nn.ConvTranspose2d: _conv_transpose_macs,
        nn.ConvTranspose3d: _conv_transpose_macs,
        nn.Linear: _linear_macs,
        nn.LSTM: _lstm_macs,
    }
)


def _io(m: Any, inp: str, out: str) -> str:
    return f"{getattr(m, inp)}→{getattr(m, out)}"


_CHANNEL_RULES: Mapping[type, ChannelRule] = MappingProxyType(
    {
        nn.modules.conv._ConvNd: lambda m: _io(m, "in_channels", "out_channels"),
        nn.Linear: lambda m: _io(m, "in_features", "out_features"),
        nn.modules.batchnorm._NormBase: lambda m: str(m.num_features),
        nn.GroupNorm: lambda m: str(m.num_channels),
        nn.LayerNorm: lambda m: "×".join(str(d) for d in m.normalized_shape),
        nn.RNNBase: lambda m: _io(m, "input_size", "hidden_size"),
        nn.Embedding: lambda m: _io(m, "num_embeddings", "embedding_dim"),
        nn.MultiheadAttention: lambda m: f"{m.embed_dim}→{m.in_proj_weight.shape[0] // (3 * m.head_dim)}×{m.head_dim}",
    }
)


def _lookup(rules: Mapping[type, Any], module: nn.Module) -> Any:
    return next((rules[t] for t in type(module).__mro__ if t in rules), None)


def _channels(module: nn.Module) -> str:
    rule = _lookup(_CHANNEL_RULES, module)
    if rule is not None:
        return str(rule(module))
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and weight.dim() >= 2:
        return f"{weight.shape[1]}→{weight.shape[0]}"
    if isinstance(weight, Tensor) and weight.dim() == 1:
        return str(weight.shape[0])
    return "-"


# --------------------------------------------------------------------------------------
# Counting


def count_params(model: nn.Module) -> int:
    """Number of parameter entries of `model` (shared parameters counted once).

    Example:
        >>> from torch import nn
        >>> count_params(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())


def _shape(meta: Any) -> Shape | None:
    return tuple(int(d) for d in meta.shape) if isinstance(meta, TensorMetadata) else None


def _first_shape(meta: Any) -> Shape | None:
    """The shape of a node's tensor result, or of the first tensor in a tuple result (LSTM)."""
    while isinstance(meta, (tuple, list)) and not isinstance(meta, TensorMetadata) and meta:
        meta = meta[0]
    return _shape(meta)


def _arg_shape(node: Node) -> Shape | None:
    arg = node.args[0] if node.args else None
    return _first_shape(arg.meta.get("tensor_meta")) if isinstance(arg, Node) else None


def _as_inputs(example_input: object, where: str) -> tuple[Tensor, ...]:
    inputs = (example_input,) if isinstance(example_input, Tensor) else example_input
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, Tensor) for t in inputs):
        raise InvalidTypeError(
            f"{where} expects example_input to be a tensor or a tuple of tensors (the model's "
            f"positional inputs); got {type(example_input).__name__}. "
            "Fix: pass e.g. torch.zeros(1, 3, 32, 32)."
        )
    return tuple(inputs)


def macs_by_module(model: nn.Module, example_input: ExampleInput) -> dict[str, int]:
    """MACs of every Linear, Conv, LSTM and MultiheadAttention module on `example_input`, by module name.

    The model is traced (:func:`fprune.trace`), deep-copied, put in eval mode and
    run once on `example_input` with :class:`torch.fx.passes.shape_prop.ShapeProp`;
    a module called several times is summed over its calls.  MACs count the whole
    example batch.  Does not modify `model`.

    Raises:
        InvalidTypeError: `example_input` is not a tensor or a tuple of tensors.
        InvalidArgumentError: the model cannot run on `example_input` (the cause is chained).
        TraceError: ``torch.fx.symbolic_trace`` cannot trace the model.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> macs_by_module(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)),
        ...                torch.zeros(1, 3, 3, 3))
        {'0': 216, '2': 16}
    """
    inputs = _as_inputs(example_input, "macs_by_module")
    gm: GraphModule = copy.deepcopy(trace(model))
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:  # ShapeProp re-raises whatever the forward raised, as RuntimeError
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise InvalidArgumentError(
            f"cannot count MACs of {type(model).__name__}: running it on an example input of "
            f"shape {shapes} failed ({exc}). Fix: pass an example input the model accepts, "
            "e.g. one batch of real data."
        ) from exc
    modules = dict(gm.named_modules())
    out: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[str(node.target)]
        rule = _lookup(_MAC_RULES, module)
        inp, res = _arg_shape(node), _first_shape(node.meta.get("tensor_meta"))
        if isinstance(module, nn.MultiheadAttention):  # its cost depends on the key's length too
            key = node.args[1] if len(node.args) > 1 else node.kwargs.get("key")
            rule, res = _attention_macs, _first_shape(key.meta.get("tensor_meta")) if isinstance(key, Node) else None
        if rule is None or inp is None or res is None:
            continue
        out[str(node.target)] = out.get(str(node.target), 0) + int(rule(module, inp, res))
    return out


def count_macs(model: nn.Module, example_input: ExampleInput) -> int:
    """Total Linear, Conv, LSTM and MultiheadAttention MACs of one forward pass on `example_input`.

    See :func:`macs_by_module`.  Does not modify `model`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> count_macs(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.zeros(5, 4))
        90
    """
    return sum(macs_by_module(model, example_input).values())


# --------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class LayerRow:
    """One module with its own parameters or buffers, before and after pruning."""

    name: str  # fully-qualified module name
    kind: str  # module class name
    channels_before: str  # "in→out" (or "n" for per-channel layers) in the original
    channels_after: str  # the same in the pruned model; "-" when the module is gone
    params_before: int  # parameter entries held by the module itself
    params_after: int  # the same in the pruned model (0 when the module is gone)
    macs_before: int | None  # MACs on the example input; None without one or for layers not counted
    macs_after: int | None  # the same in the pruned model


_HEADER = (
    ("layer", ""), ("type", ""), ("channels", "before"), ("channels", "after"),
    ("params", "before"), ("params", "after"), ("MACs", "before"), ("MACs", "after"),
)
_NUMERIC = (False, False, False, False, True, True, True, True)


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _pct(after: int | None, before: int | None) -> str:
    return "" if after is None or not before else f"{100.0 * after / before:.1f}%"


@dataclass(frozen=True, repr=False)
class Summary:
    """Per-layer channels, params and MACs of a model before and after pruning.

    ``str(s)`` is an aligned text table, :meth:`to_markdown` a markdown table;
    in a notebook the value displays as that markdown table.
    """

    rows: tuple[LayerRow, ...]  # one per module that holds parameters or buffers, in module order
    params_before: int  # all parameter entries of the original model
    params_after: int  # all parameter entries of the pruned model
    macs_before: int | None  # total MACs on the example input (None without one)
    macs_after: int | None  # the same for the pruned model
    output_error: float | None = None  # ||pruned(x) - zeroed(x)|| / ||zeroed(x)|| (with a plan; see summary)
    approximate: bool = False  # the plan was made with approximate=True
    # layer -> relative output error on the calibration batches before and after fprune.reconstruct
    # re-solved it (from the plan; empty without one)
    reconstruction: tuple[tuple[str, float, float], ...] = ()

    @property
    def params_ratio(self) -> float:
        """Fraction of parameters kept (after / before)."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float | None:
        """Fraction of MACs kept (after / before), or None without an example input."""
        if self.macs_before is None or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (r.name, r.kind, r.channels_before, r.channels_after, _num(r.params_before),
             _num(r.params_after), _num(r.macs_before), _num(r.macs_after))
            for r in self.rows
        ]

    def _total(self) -> tuple[str, ...]:
        return ("total", "", "", "", _num(self.params_before), _num(self.params_after),
                _num(self.macs_before), _num(self.macs_after))

    def _ratios(self) -> tuple[str, ...]:
        return ("", "", "", "", "", _pct(self.params_after, self.params_before), "",
                _pct(self.macs_after, self.macs_before))

    def __str__(self) -> str:
        head = [tuple(h[0] for h in _HEADER), tuple(h[1] for h in _HEADER)]
        body, foot = self._cells(), [self._total(), self._ratios()]
        widths = [max(len(row[i]) for row in head + body + foot) for i in range(len(_HEADER))]
        rule = tuple("-" * w for w in widths)

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, _NUMERIC)
            ).rstrip()

        return "\n".join([*(line(r) for r in [*head, rule, *body, rule, *foot]), *self._error_line()])

    def _error_line(self) -> list[str]:
        lines = []
        if self.output_error is not None:
            kind = ("re-solved by reconstruct: not the zeroed original" if self.reconstruction else
                    "approximate=True" if self.approximate else "exact up to rounding")
            lines.append(f"output vs the original with the removed channels zero: relative error "
                         f"{self.output_error:.2e} ({kind})")
        if self.reconstruction:
            lines.append("reconstruct, relative error of each re-solved layer's output on the calibration batches "
                         "(pruned -> re-solved):")
            lines.extend(f"  {name}: {before:.2e} -> {after:.2e}" for name, before, after in self.reconstruction)
        return lines

    def __repr__(self) -> str:
        return str(self)

    def to_markdown(self) -> str:
        """The table in GitHub markdown, with a bold total row.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(2, 2))
            >>> print(summary(net, net).to_markdown())
            | layer | type | channels before | channels after | params before | params after | MACs before | MACs after |
            |---|---|---|---|---:|---:|---:|---:|
            | `0` | Linear | 2→2 | 2→2 | 6 | 6 | - | - |
            | **total** | | | | **6** | **6** (100.0%) | **-** | **-** |
        """
        names = [f"{a} {b}".strip() for a, b in _HEADER]
        align = ["---:" if num else "---" for num in _NUMERIC]
        lines = ["| " + " | ".join(names) + " |", "|" + "|".join(align) + "|"]
        for cells in self._cells():
            lines.append("| " + " | ".join((f"`{cells[0]}`", *cells[1:])) + " |")
        total, ratio = self._total(), self._ratios()
        params_after = f"**{total[5]}**" + (f" ({ratio[5]})" if ratio[5] else "")
        macs_after = f"**{total[7]}**" + (f" ({ratio[7]})" if ratio[7] else "")
        lines.append(f"| **total** | | | | **{total[4]}** | {params_after} | **{total[6]}** | {macs_after} |")
        extra = self._error_line()
        return "\n".join(lines + ["", *extra] if extra else lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _holds_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def summary(original: nn.Module | ExportedProgram, pruned: nn.Module | ExportedProgram,
            example_input: ExampleInput | None = None, *, plan: Plan | None = None) -> Summary:
    """Per-layer table of channels, params and MACs of `original` and `pruned`.

    Rows are the modules of `original` that hold parameters or buffers
    themselves (Conv, Linear, BatchNorm, LSTM, ...), in module order, matched
    with the module of the same name in `pruned`.  With `example_input`, MACs
    of Linear, Conv and LSTM modules are counted on it for both models (see
    :func:`macs_by_module`; give the pruned model's input, the same for both
    unless pruning changed the input).  With the `plan` that made `pruned` too,
    ``output_error`` is the measured relative error of the pruned model's output
    against the original with every slice the plan removes set to zero, on
    `example_input` (an ExportedProgram without one: its own example inputs, the
    tracing input): rounding only for an exact plan, the price of
    ``approximate=True`` otherwise (a LayerNorm over the kept channels only).
    A plan that went through :func:`fprune.reconstruct` is no longer the zeroed
    original, by design: ``reconstruction`` then lists each re-solved layer's
    relative output error on the calibration batches, before and after.
    Does not modify either model.

    Args:
        original: the model before pruning (an ``nn.Module``, a GraphModule or an ExportedProgram).
        pruned: the model after pruning, e.g. the result of ``apply_patterns``.
        example_input: optional tensor (or tuple of tensors) to count MACs on.
        plan: optional :class:`fprune.Plan` that made `pruned`, to measure ``output_error``.

    Returns:
        A frozen :class:`Summary`: ``print`` it, or call ``to_markdown()``.

    Raises:
        InvalidTypeError: a model is not an ``nn.Module`` or the example input is not a tensor.
        InvalidArgumentError: a model cannot run on `example_input`.
        TraceError: a model cannot be traced (only when counting MACs).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fprune import apply_patterns
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> s = summary(net, apply_patterns(net, {"0": torch.tensor([True, True, False, False])}),
        ...             torch.zeros(1, 1, 6, 6))
        >>> [(r.name, r.channels_after, r.params_after) for r in s.rows]
        [('0', '1→2', 20), ('1', '2', 4), ('3', '2→2', 38)]
        >>> s.macs_before, s.macs_after, round(s.params_ratio, 3)
        (864, 432, 0.508)
    """
    from fprune.frontends import lift

    error = None if plan is None else _output_error(original, pruned, example_input, plan)
    # an ExportedProgram is summarised through its lifted graph: the same module names and classes
    original, pruned = (lift(m).graph if isinstance(m, ExportedProgram) else m for m in (original, pruned))
    models: tuple[Any, Any] = (original, pruned)
    for role, model in zip(("original", "pruned"), models):
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(
                f"summary expects the {role} model to be an nn.Module; got {type(model).__name__}. "
                "Fix: call summary(model, pruned_model[, example_input])."
            )
    if example_input is not None:
        _as_inputs(example_input, "summary")
    macs_a = macs_by_module(original, example_input) if example_input is not None else None
    macs_b = macs_by_module(pruned, example_input) if example_input is not None else None
    after = dict(pruned.named_modules())
    rows = []
    for name, module in original.named_modules():
        if not name or not _holds_state(module):
            continue
        other = after.get(name)
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                channels_before=_channels(module),
                channels_after=_channels(other) if other is not None else "-",
                params_before=_own_params(module),
                params_after=_own_params(other) if other is not None else 0,
                macs_before=None if macs_a is None else macs_a.get(name),
                macs_after=None if macs_b is None else macs_b.get(name),
            )
        )
    return Summary(
        rows=tuple(rows),
        params_before=count_params(original),
        params_after=count_params(pruned),
        macs_before=None if macs_a is None else sum(macs_a.values()),
        macs_after=None if macs_b is None else sum(macs_b.values()),
        output_error=error,
        approximate=plan is not None and plan.options.approximate,
        reconstruction=() if plan is None else tuple((k, a, b) for k, (a, b) in plan.reconstruction.items()),
    )


def _output_error(original: Any, pruned: Any, example_input: ExampleInput | None, plan: Plan) -> float | None:
    """max over output tensors of ||pruned(x) - zeroed(x)|| / ||zeroed(x)||, on `example_input` (or a
    program's own example inputs); None when there is no input or the outputs differ in shape."""
    kwargs: dict[str, Any] = {}
    if example_input is not None:
        inputs = _as_inputs(example_input, "summary")
    elif isinstance(original, ExportedProgram) and original.example_inputs is not None:
        inputs, kwargs = original.example_inputs
    else:
        return None
    zeroed = copy.deepcopy(original.module() if isinstance(original, ExportedProgram) else original)
    tensors = dict(zeroed.named_parameters()) | dict(zeroed.named_buffers())
    with torch.no_grad():
        for fqn, entries in plan.params().items():
            tensor = tensors.get(fqn)
            if tensor is None:
                return None
            for entry in entries:
                removed = torch.ones(tensor.shape[entry["dim"]], dtype=torch.bool)
                removed[entry["keep"]] = False
                tensor.index_fill_(entry["dim"], removed.nonzero().squeeze(1).to(tensor.device), 0)
        run = pruned.module() if isinstance(pruned, ExportedProgram) else pruned
        try:
            want, got = tree_leaves(zeroed(*inputs, **kwargs)), tree_leaves(run(*inputs, **kwargs))
        except Exception as e:  # a model that cannot run on the input: the user's input is wrong
            raise InvalidArgumentError(
                f"summary could not run the models on example_input to measure the output error: "
                f"{type(e).__name__}: {e}. Fix: pass an input both models accept, or leave out plan="
            ) from e
    pairs = [(g, w) for g, w in zip(got, want) if isinstance(w, Tensor) and w.is_floating_point()]
    if len(got) != len(want) or not pairs or any(not isinstance(g, Tensor) or g.shape != w.shape for g, w in pairs):
        return None  # outputs pruned too (prune_outputs=True): no like-for-like comparison
    return max(float((g.double() - w.double()).norm() / w.double().norm().clamp_min(1e-300)) for g, w in pairs)
