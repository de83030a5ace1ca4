"""RuleContext: everything a rule may see of one node, and every way it may record a finding.

A rule is ``rule(ctx) -> Value``: it reads the node's arguments (``ctx.args``, ``ctx.arg``), the
channel values of its tensor inputs (``ctx.value``), the module it calls (``ctx.module``), and
returns the value its output carries.  Graph inputs arrive as opaque handles: a rule asks the
context about them (``ctx.is_node``, ``ctx.value``, ``ctx.model_tensor``) and never walks the
graph itself.  Channel spaces are integers the engine hands out (``ctx.new_space``,
``ctx.producer_space``); a rule couples them (``ctx.couple``), splits them into units
(``ctx.refine``) or blocks them (``ctx.block``, ``ctx.unknown``), and the engine keeps the
union-find behind these calls.

Example:
    >>> from fprune.analysis.context import RuleContext
    >>> sorted(m for m in vars(RuleContext) if not m.startswith("_"))[:6]
    ['add_role', 'arg', 'args', 'block', 'block_spaces', 'couple']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor
from torch.fx import Node
from typing_extensions import TypeAlias

from fprune.analysis.values import (
    ArgPath, AttnOut, BlockKind, Edit, Layout, LSTMOut, NormSite, Role, Value, layout_key, segs_of,
)
from fprune.trace import attribute

if TYPE_CHECKING:
    from fprune.analysis.engine import Engine

__all__ = ["RuleContext", "Rule", "node_args"]

_PASS_METHODS = ("expand", "to", "type_as", "contiguous", "float", "double", "half")
_RESHAPES = ("reshape", "view")


def node_args(node: Node) -> Iterator[Node]:
    """Every graph value among a node's arguments, nested ones included."""
    stack: list[Any] = [node.args, node.kwargs]
    while stack:
        item = stack.pop()
        if isinstance(item, Node):
            yield item
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


class RuleContext:
    """One node as a rule sees it (built by the engine, valid during one rule call)."""

    __slots__ = ("_engine", "_node")

    def __init__(self, engine: Engine, node: Node) -> None:
        self._engine = engine
        self._node = node

    # what the node is -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The node's name (messages, edits)."""
        return self._node.name

    @property
    def node(self) -> Any:
        """The node itself, as a handle (to name it in a finding)."""
        return self._node

    @property
    def form(self) -> str:
        """How the op is called: ``"module"``, ``"function"``, ``"method"`` or ``"output"``."""
        return {"call_module": "module", "call_function": "function", "call_method": "method"}.get(
            self._node.op, self._node.op)

    @property
    def target(self) -> Any:
        """The called function or method name (the module's name for a module call)."""
        return self._node.target

    @property
    def args(self) -> tuple[Any, ...]:
        """Positional arguments: constants, and handles for graph values."""
        return tuple(self._node.args)

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments, as for :attr:`args`."""
        return dict(self._node.kwargs)

    @property
    def users(self) -> int:
        """How many nodes read this node's output."""
        return len(self._node.users)

    def arg(self, index: int, name: str, default: Any) -> Any:
        """Argument `index` if given positionally, else keyword `name`, else `default`."""
        if len(self._node.args) > index:
            return self._node.args[index]
        return self._node.kwargs.get(name, default)

    @property
    def module(self) -> Any:
        """The module a ``call_module`` node calls."""
        return self._engine.modules[str(self._node.target)]

    @property
    def module_name(self) -> str:
        """The module's fully-qualified name (a ``call_module`` node)."""
        return str(self._node.target)

    # the node's inputs --------------------------------------------------------------------
    def is_node(self, x: Any) -> bool:
        """Whether an argument is a graph value (not a constant)."""
        return isinstance(x, Node)

    def value(self, x: Any) -> Value:
        """The channel value a graph input carries (None: untracked, or a constant)."""
        return self._engine.values.get(x) if self.is_node(x) else None

    def inputs(self) -> list[Any]:
        """Every graph value among the arguments, nested ones included."""
        return list(node_args(self._node))

    def tracked_inputs(self) -> Iterator[Value]:
        """The channel values of every tracked input."""
        return self._engine.tracked_inputs(self._node)

    def first_tracked(self) -> tuple[Layout | None, list[Any]]:
        """The single tracked layout among the tensor operands, and the untracked operands."""
        layouts = [(a, self._engine.values.get(a)) for a in node_args(self._node)]
        tracked = [v for _, v in layouts if isinstance(v, Layout)]
        others = [a for a, v in layouts if v is None]
        if len(tracked) != 1 or any(isinstance(v, (LSTMOut, AttnOut)) for _, v in layouts):
            return None, others
        return tracked[0], others

    def shape(self, x: Any) -> tuple[int, ...] | None:
        """The static shape of a graph input, when the front-end recorded one (torch.export does)."""
        val = x.meta.get("val") if self.is_node(x) else None
        shape = getattr(val, "shape", None)
        if shape is None or not all(type(d) is int for d in shape):
            return None
        return tuple(shape)

    def model_tensor(self, x: Any) -> Tensor | None:
        """The model tensor an input reads directly (a ``get_attr``), or None."""
        if not self.is_node(x) or x.op != "get_attr":
            return None
        found = attribute(self._engine.gm, str(x.target))
        return found if isinstance(found, Tensor) else None

    def tensor_name(self, x: Any) -> str:
        """The model's name for the tensor a ``get_attr`` input reads."""
        return str(x.target)

    def own_tensor(self, x: Any, reshapes: bool = False) -> tuple[Any, Any] | None:
        """The model tensor an untracked input is, through expand and casts (and with `reshapes`,
        reshape/view, which the caller checks: :func:`~fprune.analysis.rules.common.own_operand`),
        and the handle reading it.

        Each step must have this one user, so that slicing the tensor changes nothing else.
        """
        node, reader = x, None
        passes = _PASS_METHODS + (_RESHAPES if reshapes else ())
        while node.op == "call_method" and node.target in passes and self.is_node(node.args[0]) \
                and self._engine.values.get(node) is None:
            if len(node.users) != 1:  # another user would see the sliced tensor too
                return None
            reader, node = node, node.args[0]
            if len(node.users) != 1:
                return None
        if self.model_tensor(node) is None:
            return None
        return node, reader or node

    def defaults_to_constant(self, x: Any) -> bool:
        """A model input that defaults to None or a bool (timm's ``attn_mask=None, is_causal=False``).

        The analysis assumes the model is called without it, as its default says; a per-head mask
        passed later fails on its shape rather than silently.
        """
        return self.is_node(x) and x.op == "placeholder" and len(x.args) == 1 and (
            x.args[0] is None or type(x.args[0]) is bool)

    def with_path(self, layout: Layout) -> Layout:
        """`layout` with this node appended to every segment's unary path (bias folding)."""
        return replace(layout, segs=tuple(replace(s, path=s.path + (self._node.name,)) for s in layout.segs))

    # channel spaces -------------------------------------------------------------------------
    def new_space(self, size: int, producer: str) -> int:
        """A fresh channel space of `size` channels named after `producer`."""
        return self._engine.new_space(size, producer)

    def producer_space(self, name: str, size: int) -> int:
        """The space module `name` produces (made on its first call, the same on later calls)."""
        engine = self._engine
        if name not in engine.producer_space:
            engine.producer_space[name] = engine.new_space(size, name)
        return engine.producer_space[name]

    def couple(self, a: int, b: int) -> bool:
        """Makes two spaces one (removing a channel removes it in both); False if their splits differ."""
        return self._engine.union(a, b)

    def same_space(self, a: int, b: int) -> bool:
        """Whether two raw spaces are already one."""
        return self._engine.find(a) == self._engine.find(b)

    def mark_subunits(self, space: int, n_rep: int) -> None:
        """`space` (query heads) is tiled into key/value heads of `n_rep`; its heads may also go one by one."""
        self._engine.mark_subunits(space, n_rep)

    def refine(self, space: int, unit_size: int, inner: int, outer: int) -> int | None:
        """Splits a space into units of ``inner`` channels repeated ``outer`` times; see the engine."""
        return self._engine.refine(space, unit_size, inner, outer)

    # findings -------------------------------------------------------------------------------
    def block(self, value: Value, kind: BlockKind, why: str) -> None:
        """Records why every group `value` carries cannot (or cannot exactly) be pruned."""
        self.block_spaces([seg.space for seg in segs_of(value)], kind, why)

    def block_spaces(self, spaces: list[int], kind: BlockKind, why: str) -> None:
        """As :meth:`block`, for raw spaces."""
        self._engine.block_spaces(spaces, kind, self._node, why)

    def unknown(self, why: str | None = None) -> None:
        """Blocks every channel this node reads (its output is then not tracked)."""
        self._engine.unknown(self._node, why)

    def role(self, name: str) -> Role | None:
        """The role recorded for module `name`, if any."""
        return self._engine.roles.get(name)

    def add_role(self, in_layout: Layout | None, out_space: int | None, module: str | None = None) -> bool:
        """Records what the called module (or `module`) must be sliced by; False (and blocks) on a conflict."""
        engine, name = self._engine, module or str(self._node.target)
        old = engine.roles.get(name)
        role = Role(name, in_layout, out_space, self._node.name)
        if old is not None and layout_key(old.in_layout) != layout_key(in_layout):
            if module is not None:  # a sub-module role (out_proj) keeps the first call's
                return True
            for v in (old.in_layout, in_layout):
                self.block(v, "unknown", f"module '{name}' is called several times on different channels")
            return False
        engine.roles[name] = role if old is None else old
        return True

    def tensor_role(self, tensor: Any, layout: Layout, reader: Any = None) -> None:
        """A model tensor (a ``get_attr`` handle) whose dim ``layout.dim`` of ``layout.rank`` indexes the
        channels of `layout`; `reader` (default: this node) is the one node allowed to read it."""
        engine, target = self._engine, str(tensor.target)
        old = engine.tensor_roles.get(target)
        if old is not None and layout_key(old) != layout_key(layout):
            for v in (old, layout):
                self.block(v, "unknown", f"tensor '{target}' is used on different channels")
            return
        engine.tensor_roles[target] = layout
        engine.tensor_readers.setdefault(target, set()).add((reader if reader is not None else self._node).name)

    def norm(self, kind: str, layout: Layout, module: str | None = None, weight: Any = None, offset: float = 0.0,
             eps: tuple[Any, ArgPath, float] | None = None, shape: ArgPath | None = None,
             full_width: int | None = None) -> None:
        """This node normalises over the channels of `layout` (``"layer"`` or ``"rms"``): the rewrite
        keeps it exact.  `weight` is the handle of a functional form's weight; `eps` names the node,
        argument path and value of its eps constant; `shape` where its normalized_shape is;
        `full_width` the original width of a norm pruned before (``layer_norm_full``)."""
        eps_at = None if eps is None else (eps[0].name, eps[1], float(eps[2]))
        self._engine.norms.append(NormSite(self._node.name, kind, layout, module,  # type: ignore[arg-type]
                                           None if weight is None else str(weight.target), offset, eps_at,
                                           shape, full_width))

    @property
    def pattern(self) -> Any:
        """What a multi-node pattern (:mod:`fprune.analysis.patterns`) found at this node, or None."""
        return self._engine.patterns.get(self._node)

    def note(self, key: Any, value: Any = None) -> Any:
        """A finding one rule leaves for a later node's rule (a pattern's statistic); returns it."""
        if value is not None:
            self._engine.notes[key] = value
        return self._engine.notes.get(key)

    def edit(self, path: tuple[int, ...], kind: str, space: int, node: Node | None = None) -> None:
        """A constant argument at `path` of this node (or of `node`) that must follow the kept count
        of `space` (``"count"``), become -1 (``"minus_one"``), or follow the query heads kept per
        key/value head of `space`'s group (``"rep"``, GQA's ``repeat_kv``)."""
        where = self._node if node is None else node
        self._engine.edits.append(Edit(where.name, path, kind, space))  # type: ignore[arg-type]


Rule: TypeAlias = Callable[[RuleContext], Value]
