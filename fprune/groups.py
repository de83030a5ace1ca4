"""Channel groups: which slices of which tensors index the same channels.

One pass over an fx graph, in topological order, propagates *channel spaces*
from the producers (Linear, Conv, LSTM) to everything that reads them.  Each
tensor value carries a :class:`Layout` saying which of its dimensions indexes
channels and how (a concatenation of :class:`Seg` runs, each possibly
expanded by a flatten).  The rule applied at each node is looked up in an
index keyed by module type, function or method name, built once; there is
no scan of patterns at every node, and every user of a node is followed
because the pass visits every node.

Coupled producers (residual adds, multiplicative gates) are merged with a
union-find; a channel read by an op without a rule makes its group
unprunable (never silently mis-pruned), and a channel whose removal cannot
be exact (a LayerNorm over it, the graph output) is flagged with the reason.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.groups import analyze
    >>> from fprune.trace import trace
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> groups = analyze(trace(net)).groups
    >>> [(g.name, g.size, g.members, g.prunable()) for g in groups]
    [('0', 8, ('0', '2'), True), ('2', 2, ('2',), False)]
    >>> groups[1].blocks[0].kind
    'output'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule, Node
from torch.nn.utils import parametrize
from typing_extensions import TypeAlias

from fprune.modules import PrunedMultiheadAttention
from fprune.trace import attribute

__all__ = [
    "Edit",
    "Seg",
    "Layout",
    "LSTMOut",
    "AttnOut",
    "Role",
    "Block",
    "ChannelGroup",
    "Options",
    "Analysis",
    "analyze",
    "describe",
]

BlockKind: TypeAlias = Literal["unknown", "inexact", "output", "fold"]


@dataclass(frozen=True)
class Seg:
    """A run of a tensor dimension whose indices enumerate one channel space."""

    space: int  # raw channel-space id (resolved through the union-find)
    size: int  # number of channels in the space
    path: tuple[str, ...] = ()  # unary nodes applied since the producer (bias folding)


@dataclass(frozen=True)
class Layout:
    """How one dimension of a tensor value maps onto channel spaces."""

    dim: int  # the channel dimension, as a negative index
    segs: tuple[Seg, ...]  # the runs, in order along the dimension
    rank: int | None = None  # tensor rank, when known
    factor: int | None = 1  # extra expansion shared by every seg; None = unknown, resolved by a consumer
    spatial: int | None = None  # product of the dimensions after `dim`, when known

    @property
    def width(self) -> int | None:
        """Length of the dimension, when known."""
        if self.factor is None:
            return None
        return sum(s.size for s in self.segs) * self.factor


@dataclass(frozen=True)
class LSTMOut:
    """The (output, state) tuple of a recurrent call (output carries `layout`).

    An LSTM's state is the pair (h_n, c_n) (`state` True: that pair, each with the hidden units on
    dim -1 as in `layout`); a GRU's or RNN's is h_n alone (`paired` False).
    """

    layout: Layout
    module: str
    state: bool = False
    paired: bool = True  # the state is a pair (LSTM), not one tensor (GRU, RNN)


@dataclass(frozen=True)
class AttnOut:
    """The (output, weights) pair of an ``nn.MultiheadAttention`` call: output carries `layout`."""

    layout: Layout
    heads: Seg  # the heads of the call, which the attention weights are averaged over
    weights: Literal["none", "mean", "per_head"]  # what item 1 holds (need_weights, average_attn_weights)


@dataclass(frozen=True)
class Unbound:
    """The tuple returned by ``unbind``: every item carries `layout`."""

    layout: Layout


@dataclass(frozen=True)
class ShapeOf:
    """``x.shape`` / ``x.size()`` of a tracked tensor: indexing its channel position gives a ChannelSize."""

    layout: Layout


@dataclass(frozen=True)
class ChannelSize:
    """The number of channels of a tracked tensor, read at run time: it shrinks with pruning."""

    layout: Layout


Value: TypeAlias = Union[Layout, LSTMOut, AttnOut, Unbound, ShapeOf, ChannelSize, None]


@dataclass(frozen=True)
class Role:
    """What the rewrite must do to one module: slice its input side, output side, or both."""

    name: str  # module fully-qualified name
    in_layout: Layout | None  # layout of the channels it reads (None: input side untouched)
    out_space: int | None  # raw space of the channels it produces (None: not a producer)
    node: str  # the graph node calling it


@dataclass(frozen=True)
class Block:
    """Why a channel group cannot (or cannot exactly) be pruned."""

    kind: BlockKind  # unknown op | inexact op | reaches output | bias fold not exact
    node: str  # the node responsible
    message: str  # what happened and how to proceed


@dataclass(frozen=True)
class Options:
    """Switches that relax or change the default exact semantics.

    Example:
        >>> Options(prune_outputs=True)
        Options(prune_outputs=True, approximate=False, fold_bias=False, strict=False)
    """

    prune_outputs: bool = False  # allow pruning channels that reach the graph output
    approximate: bool = False  # allow groups whose removal is not exact (LayerNorm over them)
    fold_bias: bool = False  # fold act(bias) of removed channels into consumers (reference prune_bias=False)
    strict: bool = False  # an op the analysis does not understand is an error, not a warning

    def tolerates(self, kind: BlockKind) -> bool:
        """Whether a block of this kind still allows pruning."""
        return (
            kind == "fold"
            or (kind == "output" and self.prune_outputs)
            or (kind == "inexact" and self.approximate)
        )


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be removed together, and every module they touch."""

    name: str  # the first producer's fully-qualified name; masks are keyed by it
    size: int  # number of channels
    producers: tuple[str, ...]  # modules whose output rows are these channels
    members: tuple[str, ...]  # every module whose tensors the group slices, in graph order
    blocks: tuple[Block, ...]  # reasons the group cannot be pruned exactly

    def prunable(self, options: Options = DEFAULT_OPTIONS) -> bool:
        """True when every block is tolerated by `options`."""
        return all(options.tolerates(b.kind) for b in self.blocks)

    def why_not(self, options: Options = DEFAULT_OPTIONS) -> str:
        """The messages of the blocks `options` does not tolerate."""
        return "; ".join(b.message for b in self.blocks if not options.tolerates(b.kind))


@dataclass(frozen=True)
class Edit:
    """A constant in the graph that depends on how many channels a group keeps (a head count)."""

    node: str  # the node whose argument changes
    path: tuple[int, ...]  # position in node.args (then inside a tuple/list argument)
    kind: Literal["count", "minus_one"]  # the kept count of the group, or -1 (inferred)
    space: int  # raw space of the group


@dataclass(frozen=True)
class Analysis:
    """The channel groups of one GraphModule and the role of every module in them."""

    graph: GraphModule  # the graph analysed (not owned: never mutated)
    groups: tuple[ChannelGroup, ...]  # in graph order of their first producer
    roles: Mapping[str, Role]  # module fqn -> role
    space_group: tuple[int, ...]  # raw space id -> index into `groups`
    by_producer: Mapping[str, int] = field(default_factory=dict)  # producer fqn -> group index
    space_stages: tuple[tuple[tuple[int, int], ...], ...] = ()  # raw space -> (inner, outer) tilings
    edits: tuple[Edit, ...] = ()  # graph constants to rewrite when their group is pruned
    tensor_roles: Mapping[str, Layout] = field(default_factory=dict)  # get_attr tensor -> its channels (dim, rank)
    source: Any = None  # the front-end's way back to the model read: a Lifted for an ExportedProgram, else None

    def public_name(self, fqn: str) -> str:
        """The name the model's user knows a tensor of `graph` by (a lifted program's own state name)."""
        return fqn if self.source is None else self.source.tensors.get(fqn, fqn)

    def space_mask(self, space: int, masks: Mapping[int, Tensor]) -> Tensor | None:
        """The keep-mask over a raw space's own channels, or None when its group is not pruned."""
        mask = masks.get(self.space_group[space])
        if mask is None:
            return None
        for inner, outer in reversed(self.space_stages[space] if self.space_stages else ()):
            mask = mask.repeat_interleave(inner).repeat(outer)
        return mask

    def group(self, producer: str) -> ChannelGroup:
        """The group produced by the module named `producer`."""
        return self.groups[self.by_producer[producer]]

    def group_of(self, seg: Seg) -> ChannelGroup:
        """The group a layout segment belongs to."""
        return self.groups[self.space_group[seg.space]]


def describe(node: Node) -> str:
    """A short human name for a node, used in every message.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU()))
        >>> describe(list(gm.graph.nodes)[1])
        "node '_0' (call_module '0')"
    """
    target = node.target
    if node.op == "call_function":
        label = getattr(target, "__name__", repr(target))
    else:
        label = str(target)
    return f"node '{node.name}' ({node.op} '{label}')"


# --------------------------------------------------------------------------------------
# The propagation state: local to one `analyze` call (no module-level mutable state).


class _State:
    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocks: list[list[Block]] = []
        self.space_producers: list[list[str]] = []
        self.producer_space: dict[str, int] = {}
        self.values: dict[Node, Value] = {}
        self.roles: dict[str, Role] = {}
        self.tiles: dict[int, tuple[int, int, int]] = {}  # root -> (unit space, inner, outer)
        self.edits: list[Edit] = []
        self.tensor_roles: dict[str, Layout] = {}  # get_attr target -> its channels (layout.dim of layout.rank dims)
        self.tensor_readers: dict[str, set[str]] = {}  # get_attr target -> nodes allowed to read it

    # union-find -----------------------------------------------------------------------
    def new_space(self, size: int, producer: str) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.blocks.append([])
        self.space_producers.append([producer])
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def union(self, a: int, b: int) -> bool:
        """Merges two spaces; False when their head structures cannot be reconciled."""
        (fa, sa), (fb, sb) = self.resolve(a), self.resolve(b)
        if sa != sb:
            if sb and not sa and self.find(a) == fa:  # `a` is a plain space: give it b's structure
                a, b, fa, fb, sa, sb = b, a, fb, fa, sb, sa
            if sa and not sb and self.find(b) == fb:
                self.tiles[fb] = self.tiles[self.find(a)]
                self.space_producers[fa].extend(self.space_producers[fb])
                self.blocks[fa].extend(self.blocks[fb])
                self.space_producers[fb], self.blocks[fb] = [], []
                return True
            return False
        self._merge(fa, fb)
        return True

    def _merge(self, ra: int, rb: int) -> None:
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.blocks[ra].extend(self.blocks[rb])
        self.space_producers[ra].extend(self.space_producers[rb])
        self.blocks[rb], self.space_producers[rb] = [], []

    def resolve(self, space: int) -> tuple[int, tuple[tuple[int, int], ...]]:
        """The final (unrefined) root a space maps to, and the (inner, outer) tilings on the way."""
        root, stages = self.find(space), []
        while root in self.tiles:
            unit, inner, outer = self.tiles[root]
            stages.append((inner, outer))
            root = self.find(unit)
        return root, tuple(stages)

    def refine(self, space: int, unit_size: int, inner: int, outer: int) -> int | None:
        """Re-expresses a space of outer*unit*inner channels as tiles of a coarser unit space.

        Channel ``o*unit*inner + u*inner + j`` of the space becomes unit ``u``: removing a unit
        removes its rows in every outer block (e.g. q, k and v of one attention head).  Tilings
        nest: a space split into conv groups can be split again into the coarser groups of a
        GroupNorm, in either order.  None when the tilings cannot be reconciled.
        """
        root = self.find(space)
        if root in self.tiles:
            unit, i, o = self.tiles[root]
            if (i, o) == (inner, outer):
                return unit if self.size[self.find(unit)] == unit_size else None
            if o != outer:
                return None
            if inner % i == 0:  # coarser than the tiling there: tile its units in turn
                return self.refine(unit, unit_size, inner // i, 1)
            if i % inner == 0:  # finer: a level between the space and its units
                fine = self.new_space(unit_size, "")
                self.space_producers[fine] = []
                self.tiles[root] = (fine, inner, outer)
                self.tiles[fine] = (unit, i // inner, 1)
                return fine
            return None
        unit = self.new_space(unit_size, "")
        self.space_producers[unit] = self.space_producers[root]
        self.blocks[unit] = self.blocks[root]
        self.space_producers[root], self.blocks[root] = [], []
        self.tiles[root] = (unit, inner, outer)
        return unit

    # blocking -------------------------------------------------------------------------
    def block(self, value: Value, kind: BlockKind, node: Node, why: str) -> None:
        self.block_spaces([seg.space for seg in _segs(value)], kind, node, why)

    def block_spaces(self, spaces: list[int], kind: BlockKind, node: Node, why: str) -> None:
        message = f"{describe(node)}: {why}"
        for space in spaces:
            root = self.resolve(space)[0]
            if not any(b.message == message for b in self.blocks[root]):
                self.blocks[root].append(Block(kind, node.name, message))

    def unknown(self, node: Node, why: str | None = None) -> None:
        """Blocks every channel this node reads; its output is not tracked."""
        how = "leave the producing module out of the masks, or restructure the model"
        reason = why or f"reads pruned channels and fprune has no exact rule for this op; {how}"
        if "out of the masks" not in reason:  # every message says how to proceed
            reason = f"{reason}; {how}"
        for value in self.tracked_inputs(node):
            self.block(value, "unknown", node, reason)

    def tracked_inputs(self, node: Node) -> Iterator[Value]:
        for arg in _node_args(node):
            value = self.values.get(arg)
            if value is not None:
                yield value

    def module(self, node: Node) -> Any:
        return self.modules[str(node.target)]

    def add_role(self, node: Node, in_layout: Layout | None, out_space: int | None) -> bool:
        """Records what `node`'s module must be sliced by; False if it conflicts."""
        name = str(node.target)
        old = self.roles.get(name)
        role = Role(name, in_layout, out_space, node.name)
        if old is not None and _layout_key(old.in_layout) != _layout_key(in_layout):
            for v in (old.in_layout, in_layout):
                self.block(v, "unknown", node, f"module '{name}' is called several times on different channels")
            return False
        self.roles[name] = role if old is None else old
        return True


def _add_tensor_role(state: _State, node: Node, tensor: Node, layout: Layout) -> None:
    """A tensor read with get_attr whose dim ``layout.dim`` (of its own ``layout.rank`` dims) indexes
    the channels of `layout`: functional BN's statistics, a position embedding added to the channels.
    `node` is the one node allowed to read the get_attr."""
    target = str(tensor.target)
    old = state.tensor_roles.get(target)
    if old is not None and _layout_key(old) != _layout_key(layout):
        for v in (old, layout):
            state.block(v, "unknown", node, f"tensor '{target}' is used on different channels")
        return
    state.tensor_roles[target] = layout
    state.tensor_readers.setdefault(target, set()).add(node.name)


def _segs(value: Value) -> tuple[Seg, ...]:
    if isinstance(value, Layout):
        return value.segs
    if isinstance(value, AttnOut):
        return value.layout.segs + (value.heads,)
    if isinstance(value, (LSTMOut, Unbound, ShapeOf, ChannelSize)):
        return value.layout.segs
    return ()


def _layout_key(layout: Layout | None) -> object:
    if layout is None:
        return None
    return (layout.dim, tuple((s.space, s.size) for s in layout.segs), layout.factor)


def _node_args(node: Node) -> Iterator[Node]:
    stack: list[Any] = [node.args, node.kwargs]
    while stack:
        item = stack.pop()
        if isinstance(item, Node):
            yield item
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _arg(node: Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --------------------------------------------------------------------------------------
# Rules.  A rule maps (state, node) to the node's output value.

Rule: TypeAlias = Callable[[_State, Node], Value]


def _first_tracked(state: _State, node: Node) -> tuple[Layout | None, list[Node]]:
    """The single tracked layout among a node's tensor operands, and the other Node operands."""
    layouts = [(a, state.values.get(a)) for a in _node_args(node)]
    tracked = [v for _, v in layouts if isinstance(v, Layout)]
    others = [a for a, v in layouts if v is None]
    if len(tracked) != 1 or any(isinstance(v, (LSTMOut, AttnOut)) for _, v in layouts):
        return None, others
    return tracked[0], others


def _sole_layout(state: _State, node: Node) -> Layout | None:
    """The one tracked tensor a single-input op reads; anything else blocks what the node reads."""
    layout, others = _first_tracked(state, node)
    if layout is None or others:
        state.unknown(node)  # blocks nothing when the node reads no tracked channel
        return None
    return layout


def _with_path(layout: Layout, node: Node) -> Layout:
    return replace(layout, segs=tuple(replace(s, path=s.path + (node.name,)) for s in layout.segs))


def _elementwise(state: _State, node: Node) -> Value:
    """f(x) applied to every element: channels pass through unchanged."""
    layout, others = _first_tracked(state, node)
    if layout is None:
        return _binary(state, node)
    if others:
        # A tensor operand we cannot see (a buffer, a model input) might be per-channel.
        state.unknown(node, "combines pruned channels with an untracked tensor operand; "
                      "leave the producing module out of the masks")
        return None
    return _with_path(layout, node)


_PASS_METHODS = ("expand", "to", "type_as", "contiguous", "float", "double", "half")


def _own_tensor(state: _State, node: Node) -> tuple[Node, Node] | None:
    """The model tensor (get_attr) an untracked operand is, through expand/casts, and the node reading it.

    Each step must have this one user, so that slicing the tensor changes nothing else.
    """
    reader = None
    while node.op == "call_method" and node.target in _PASS_METHODS and isinstance(node.args[0], Node) \
            and state.values.get(node) is None:
        if len(node.users) != 1:  # another user would see the sliced tensor too
            return None
        reader, node = node, node.args[0]
        if len(node.users) != 1:
            return None
    if node.op != "get_attr" or not isinstance(attribute(state.gm, str(node.target)), Tensor):
        return None
    return node, reader or node


def _own_operand(state: _State, node: Node, operand: Node, layout: Layout) -> Literal["role", "broadcast"] | None:
    """Whether an untracked operand is a model tensor that broadcasts over the channels of `layout`,
    or holds one entry per channel (then it is sliced with them); None if neither."""
    found = _own_tensor(state, operand)
    if found is None or layout.width is None:
        return None
    tensor, reader = found
    shape = attribute(state.gm, str(tensor.target)).shape
    if len(shape) < -layout.dim or shape[layout.dim] == 1:
        return "broadcast"
    if shape[layout.dim] != layout.width:
        return None
    _add_tensor_role(state, reader if reader is not tensor else node, tensor,
                     replace(layout, rank=len(shape), spatial=None))
    return "role"


def _binary(state: _State, node: Node) -> Value:
    """add/sub/mul/div...: couples the channels of every tracked operand."""
    args = list(_node_args(node))
    operands: list[Value] = [state.values.get(a) for a in args]
    tracked = [v for v in operands if isinstance(v, Layout)]
    untracked = [a for a, v in zip(args, operands) if v is None]
    if tracked and len(tracked) + len(untracked) == len(operands) and untracked:
        # a model tensor (a position embedding, a per-channel scale) is sliced with the channels
        kinds = [_own_operand(state, node, a, tracked[0]) for a in untracked]
        if all(kinds):
            if "role" in kinds:
                state.block(tracked[0], "fold", node, "a model tensor is combined with the channels")
            operands = list[Value](tracked)
    if any(v is None for v in operands) or len(tracked) != len(operands) or not tracked:
        state.unknown(node, "combines pruned channels with an untracked tensor operand; "
                      "leave the producing module out of the masks")
        return None
    first = tracked[0]
    for other in tracked[1:]:
        if (
            other.dim != first.dim
            or other.factor != first.factor
            or [s.size for s in other.segs] != [s.size for s in first.segs]
        ):
            state.unknown(node, "combines tensors whose channel layouts differ")
            return None
    for other in tracked[1:]:
        for a, b in zip(first.segs, other.segs):
            if not state.union(a.space, b.space):
                state.unknown(node, "combines channels split into heads differently")
                return None
    if len(tracked) > 1:
        # the constant a removed channel emits is now a sum of several producers' constants
        state.block(first, "fold", node, "couples several producers; their biases are not folded")
    return _with_path(first, node) if len(tracked) == 1 else replace(first, segs=tuple(replace(s, path=()) for s in first.segs))


def _producer(in_dim: int, out_dim: int, spatial_dims: int, out_size: Callable[[nn.Module], int]) -> Rule:
    """Linear / Conv: reads channels on `in_dim`, emits a new space on `out_dim`."""

    def rule(state: _State, node: Node) -> Value:
        module = state.module(node)
        layout, others = _first_tracked(state, node)
        in_layout = None
        if layout is not None:
            if others or layout.dim != in_dim:
                state.unknown(node, f"reads pruned channels on dim {layout.dim}, expected {in_dim}")
                layout = None
            else:
                in_layout = _resolve(state, node, layout, _in_width(module))
        name = str(node.target)
        if name not in state.producer_space:
            state.producer_space[name] = state.new_space(out_size(module), name)
        space = state.producer_space[name]
        state.add_role(node, in_layout, space)  # on a conflict the inputs are blocked; the output is still new
        rank = (spatial_dims + 2) if spatial_dims else (layout.rank if layout else None)
        return Layout(out_dim, (Seg(space, out_size(module)),), rank=rank, spatial=None if spatial_dims else 1)

    return rule


def _in_width(module: Any) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.RNNBase):
        return module.input_size
    return int(getattr(module, "in_channels"))


def _resolve(state: _State, node: Node, layout: Layout, width: int) -> Layout | None:
    """Fixes an unknown flatten factor from the consumer's input width; None if inconsistent."""
    base = sum(s.size for s in layout.segs)
    factor = layout.factor
    if factor is None and width % base == 0:
        factor = width // base
    if factor is None or base * factor != width:
        state.unknown(node, f"expects {width} input features but the channels it reads span "
                      f"{base} x {layout.factor or '?'}")
        return None
    return replace(layout, factor=factor)


def _linear_or_conv(module_type: type[nn.Module]) -> Rule:
    spatial = {nn.Linear: 0, nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[module_type]
    in_dim = -1 if spatial == 0 else -(spatial + 1)
    size: Callable[[Any], int] = (
        (lambda m: int(m.out_features)) if spatial == 0 else (lambda m: int(m.out_channels))
    )
    base = _producer(in_dim, in_dim, spatial, size)

    def rule(state: _State, node: Node) -> Value:
        module = state.module(node)
        if spatial and _is_depthwise(module):
            return _depthwise(state, node, -(spatial + 1))
        if len(node.args) != 1 or node.kwargs:
            state.unknown(node)
            return None
        if spatial and getattr(module, "groups", 1) != 1:
            return _grouped(state, node, base)
        return base(state, node)

    return rule


def _grouped(state: _State, node: Node, base: Rule) -> Value:
    """A grouped convolution prunes whole conv groups: group j reads input block j, writes output block j.

    Both sides are refined into units of one conv group, and the two unit spaces are merged, so
    removing a unit removes its output rows and the producer's channels that feed it (like a
    depthwise conv, of which this is the generalisation).
    """
    module = state.module(node)
    g = int(module.groups)
    out = base(state, node)
    role = state.roles.get(str(node.target))
    if not isinstance(out, Layout) or role is None or role.out_space is None:
        return out
    layout = role.in_layout
    if layout is None:  # removing a conv group removes its input block, which nothing here can prune
        state.block(out, "unknown", node, f"grouped convolution (groups={g}) whose input channels are not "
                    "produced by a prunable module: its conv groups cannot be removed")
        return out
    in_unit = None  # refined first, so that the group is named after the producer upstream
    if len(layout.segs) == 1 and layout.factor == 1:
        in_unit = state.refine(layout.segs[0].space, g, int(module.in_channels) // g, 1)
    out_unit = state.refine(role.out_space, g, int(module.out_channels) // g, 1)
    if out_unit is None or in_unit is None or not state.union(in_unit, out_unit):
        why = (f"grouped convolution (groups={g}) reads channels that do not split into its groups "
               "(a concatenation, a flatten, or a split made elsewhere)")
        state.block(layout, "unknown", node, why)
        state.block(out, "unknown", node, why)
        return out
    state.block(layout, "fold", node, "a grouped convolution lies between producer and consumer")
    return out


def _conv_transpose(spatial: int) -> Rule:
    """ConvTranspose: reads channels on dim 1, emits out_channels on dim 1 (weight is (in, out, ...))."""
    dim = -(spatial + 1)
    size: Callable[[Any], int] = lambda m: int(m.out_channels)
    base = _producer(dim, dim, spatial, size)

    def rule(state: _State, node: Node) -> Value:
        module = state.module(node)
        if len(node.args) != 1 or node.kwargs or module.groups != 1:
            why = (f"grouped transposed convolution (groups={module.groups}) is not supported"
                   if module.groups != 1 else "transposed convolution called with an output size")
            state.unknown(node, why)
            return None
        return base(state, node)

    return rule


def _embedding(state: _State, node: Node) -> Value:
    """Embedding: a producer whose channels are the columns of its weight (one row per index)."""
    module = state.module(node)
    assert isinstance(module, nn.Embedding)
    if len(node.args) != 1 or node.kwargs:
        state.unknown(node)
        return None
    state.unknown(node, "indexes an embedding with pruned channels")  # blocks tracked indices, if any
    name = str(node.target)
    if name not in state.producer_space:
        state.producer_space[name] = state.new_space(int(module.embedding_dim), name)
    space = state.producer_space[name]
    state.add_role(node, None, space)
    if module.max_norm is not None:
        state.block_spaces([space], "inexact", node, "max_norm renormalises each embedding over its channels, "
                           "so removing channels changes the kept ones; pass approximate=True to prune anyway")
    return Layout(-1, (Seg(space, int(module.embedding_dim)),), rank=None, spatial=1)


def _is_depthwise(module: Any) -> bool:
    groups = getattr(module, "groups", 1)
    return bool(groups > 1 and module.in_channels == groups == module.out_channels)


def _depthwise(state: _State, node: Node, dim: int) -> Value:
    """A depthwise conv maps channel c to channel c: channels pass through, its filters are per-channel."""
    layout = _sole_layout(state, node) if len(node.args) == 1 and not node.kwargs else None
    if layout is None:
        state.unknown(node)
        return None
    if layout.dim != dim:
        state.unknown(node, f"reads pruned channels on dim {layout.dim}, expected {dim}")
        return None
    resolved = _resolve(state, node, layout, int(state.module(node).in_channels))
    if resolved is None or not state.add_role(node, resolved, None):
        return None
    state.block(resolved, "fold", node, "a depthwise convolution lies between producer and consumer")
    return replace(_with_path(resolved, node), spatial=None)


def _lstm(state: _State, node: Node) -> Value:
    """LSTM, GRU, RNN: the hidden units are the channels, each unit's rows in every gate go together."""
    module = state.module(node)
    assert isinstance(module, nn.RNNBase)
    kind = type(module).__name__
    if getattr(module, "proj_size", 0) or len(node.args) != 1 or node.kwargs:
        why = (f"{kind} with proj_size is not supported" if getattr(module, "proj_size", 0)
               else f"{kind} called with an initial state; fprune prunes recurrent layers called on the input alone")
        state.unknown(node, why)
        return None
    layout, _ = _first_tracked(state, node)
    in_layout = None
    if layout is not None:
        if layout.dim != -1:
            state.unknown(node, f"reads pruned channels on dim {layout.dim}, expected -1")
        else:
            in_layout = _resolve(state, node, layout, module.input_size)
    name = str(node.target)
    if name not in state.producer_space:
        state.producer_space[name] = state.new_space(module.hidden_size, name)
    space = state.producer_space[name]
    state.add_role(node, in_layout, space)  # on a conflict the inputs are blocked; the output is still new
    seg = Seg(space, module.hidden_size)
    segs = (seg, seg) if module.bidirectional else (seg,)
    return LSTMOut(Layout(-1, segs, rank=None, spatial=1), name, paired=isinstance(module, nn.LSTM))


def _multihead_attention(state: _State, node: Node) -> Value:
    """nn.MultiheadAttention: in_proj columns read the input channels; heads and out_proj rows are new.

    Its packed ``in_proj_weight`` rows are (q, k, v) x heads x head_dim, refined into a space of
    heads as for a fused qkv Linear; ``out_proj`` reads the heads (head_dim columns each) and
    produces the output channels.  Only self-attention (query, key and value the same tensor)
    has its input channels pruned.
    """
    module = state.module(node)
    name = str(node.target)
    names = ("query", "key", "value")
    qkv = [_arg(node, i, n, None) for i, n in enumerate(names)]
    extras = list(node.args[3:]) + [v for k, v in node.kwargs.items() if k not in names]
    if any(isinstance(a, Node) and state.values.get(a) is not None for a in extras):
        state.unknown(node, "an attention mask computed from pruned channels")
        return None
    why = None
    if module.bias_k is not None or module.add_zero_attn:
        why = "nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported"
    elif not module._qkv_same_embed_dim:
        why = "nn.MultiheadAttention with kdim/vdim different from embed_dim is not supported"
    if why is not None:
        state.unknown(node, why)
        return None
    values = [state.values.get(a) if isinstance(a, Node) else None for a in qkv]
    tracked = [v for v in values if v is not None]
    layouts = [v for v in tracked if isinstance(v, Layout)]
    in_layout = None
    if tracked:
        first = layouts[0] if layouts else None
        same = len(layouts) == 3 and all(_layout_key(v) == _layout_key(first) for v in layouts)
        if first is None or not same or first.dim != -1:
            state.unknown(node, "nn.MultiheadAttention reads pruned channels other than as one self-attention "
                          "input on the last dim (cross-attention inputs are not pruned)")
        else:
            in_layout = _resolve(state, node, first, int(module.embed_dim))
    heads, head_dim = int(module.num_heads), int(module.head_dim)
    if name not in state.producer_space:
        state.producer_space[name] = state.new_space(3 * heads * head_dim, name)
    rows = state.producer_space[name]
    unit = state.refine(rows, heads, head_dim, 3)
    out_name = f"{name}.out_proj"
    if out_name not in state.producer_space:
        state.producer_space[out_name] = state.new_space(int(module.out_proj.out_features), out_name)
    out_space = state.producer_space[out_name]
    if unit is None:
        state.unknown(node, "nn.MultiheadAttention whose heads are split differently elsewhere")
        state.block_spaces([out_space], "unknown", node, "nn.MultiheadAttention whose heads are split differently")
    state.add_role(node, in_layout, rows)  # called again on other channels: its inputs are blocked
    if unit is None:
        return None
    heads_layout = Layout(-1, (Seg(unit, heads),), rank=None, factor=head_dim, spatial=1)
    state.roles.setdefault(out_name, Role(out_name, heads_layout, out_space, node.name))
    state.block_spaces([unit], "fold", node, "attention heads: their biases are not folded")
    need = _arg(node, 4, "need_weights", True)
    average = _arg(node, 6, "average_attn_weights", True)
    weights: Literal["none", "mean", "per_head"] = (
        "none" if need is False else "mean" if average is True else "per_head")
    rank = layouts[0].rank if layouts else None
    out = Layout(-1, (Seg(out_space, int(module.out_proj.out_features)),), rank=rank, spatial=1)
    return AttnOut(out, Seg(unit, heads), weights)


def _getitem(state: _State, node: Node) -> Value:
    source, index = node.args[0], node.args[1]
    value = state.values.get(source) if isinstance(source, Node) else None
    if isinstance(value, LSTMOut):
        if type(index) is int and -2 <= index < 2:
            if value.state or index % 2 == 0:
                return value.layout  # the output, or h_n / c_n (hidden units on dim -1, once per direction)
            hidden = Layout(-1, value.layout.segs[:1], rank=None, spatial=1)
            return LSTMOut(hidden, value.module, state=True) if value.paired else hidden
        state.block(value, "unknown", node, f"indexes the result of recurrent layer '{value.module}' with "
                    f"{index!r}; expected 0 (output) or 1 (the state)")
        return None
    if isinstance(value, AttnOut):
        if index in (0, -2):
            return value.layout
        if index in (1, -1) and (value.weights == "none" or not node.users):
            return None
        if index in (1, -1):
            kind: BlockKind = "inexact" if value.weights == "mean" else "unknown"
            state.block_spaces([value.heads.space], kind, node, "reads the attention weights"
                               + (", averaged over the heads, so removing heads changes them; pass "
                                  "approximate=True to prune anyway, or need_weights=False"
                                  if kind == "inexact" else " per head; leave the attention out of the masks"))
            return None
        state.unknown(node)
        return None
    if isinstance(value, Unbound):
        if type(index) is int:
            return value.layout
        if isinstance(index, slice):
            return value  # a tuple of pieces, each still carrying the layout
        state.unknown(node, "indexes a tuple of pruned tensors with a non-constant index")
        return None
    if isinstance(value, ShapeOf):
        return ChannelSize(value.layout) if _may_be_channel(value.layout, index) else None
    if isinstance(value, ChannelSize):
        state.unknown(node)
        return None
    if isinstance(value, Layout):
        return _index_tensor(state, node, value, index)
    if value is not None:
        state.unknown(node, "indexes into pruned channels")
    return None


def _index_tensor(state: _State, node: Node, layout: Layout, index: Any) -> Value:
    """x[i], x[:, i]: ints and full slices over dims other than the channel dim."""
    items = index if isinstance(index, tuple) else (index,)
    full = slice(None, None, None)
    rank = layout.rank
    if rank is None or not all(type(i) is int or i == full for i in items) or len(items) > rank:
        state.unknown(node, "indexes into a tensor whose channel position is not known")
        return None
    p = rank + layout.dim
    if p < len(items) and items[p] != full:
        state.unknown(node, "indexes into the pruned channels")
        return None
    removed = [d for d, i in enumerate(items) if type(i) is int]
    new_rank = rank - len(removed)
    new_p = p - sum(1 for d in removed if d < p)
    return replace(layout, dim=new_p - new_rank, rank=new_rank)


def _channelwise(spatial_dims: int | None) -> Rule:
    """BatchNorm / InstanceNorm: one parameter per channel on dim 1."""

    def rule(state: _State, node: Node) -> Value:
        layout = _sole_layout(state, node)
        if layout is None:
            return None
        module = state.module(node)
        ok = layout.dim == -(spatial_dims + 1) if spatial_dims else (
            (layout.dim == -1 and layout.rank in (None, 2)) or (layout.dim == -2 and layout.rank in (None, 3))
        )
        width = int(getattr(module, "num_features"))
        if not ok:
            state.unknown(node, f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
            return None
        resolved = _resolve(state, node, layout, width)
        if resolved is None or not state.add_role(node, resolved, None):
            return None
        state.block(resolved, "fold", node, "a normalisation layer lies between producer and consumer")
        return resolved

    return rule


def _layer_norm(state: _State, node: Node) -> Value:
    layout = _sole_layout(state, node)
    if layout is None:
        return None
    module = state.module(node)
    assert isinstance(module, nn.LayerNorm)
    normed = len(module.normalized_shape)
    if layout.dim < -normed:  # normalises other dims: channels stay apart
        state.block(layout, "fold", node, "a LayerNorm over other dims turns a constant channel into its bias")
        return _with_path(layout, node)
    state.block(layout, "inexact", node, "normalises over the pruned channels, so removing them changes "
                "the statistics of the kept ones; pass approximate=True to prune anyway")
    if normed != 1 or layout.dim != -1:
        state.unknown(node, "normalises over several dims including the pruned channels")
        return None
    resolved = _resolve(state, node, layout, module.normalized_shape[0])
    if resolved is None or not state.add_role(node, resolved, None):
        return None
    return resolved


def _group_norm(state: _State, node: Node) -> Value:
    """GroupNorm normalises each group of channels together: it is pruned by whole norm groups."""
    layout = _sole_layout(state, node)
    if layout is None:
        return None
    module = state.module(node)
    assert isinstance(module, nn.GroupNorm)
    if layout.rank is None or layout.rank + layout.dim != 1:
        state.unknown(node, f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
        return None
    resolved = _resolve(state, node, layout, int(module.num_channels))
    if resolved is None:
        return None
    g = int(module.num_groups)
    unit = None
    if len(resolved.segs) == 1 and resolved.factor == 1:
        unit = state.refine(resolved.segs[0].space, g, int(module.num_channels) // g, 1)
    if unit is None:
        state.unknown(node, "GroupNorm over channels that do not split into its groups (a concatenation, "
                      "a flatten, or a split made elsewhere)")
        return None
    if not state.add_role(node, resolved, None):
        return None
    state.block(resolved, "fold", node, "a normalisation layer lies between producer and consumer")
    return _with_path(resolved, node)


def _pool(spatial_dims: int, adaptive: bool) -> Rule:
    """Pools act on the last `spatial_dims` dims: channels pass through."""

    def rule(state: _State, node: Node) -> Value:
        layout = _sole_layout(state, node)
        if layout is None:
            return None
        if layout.dim >= -spatial_dims or layout.factor != 1:
            state.unknown(node, f"pools over the pruned channels (dim {layout.dim})")
            return None
        if node.op == "call_module":
            indices = getattr(state.module(node), "return_indices", False)
        else:
            name = getattr(node.target, "__name__", "")
            indices = "max" in name and _arg(node, 2 if "adaptive" in name else 6, "return_indices", False)
        if indices:
            state.unknown(node, "pools with return_indices=True (a tuple of values and indices)")
            return None
        spatial = None
        if adaptive:
            size = _arg(node, 1, "output_size", None) if node.op == "call_function" else getattr(
                state.module(node), "output_size", None)
            sizes = (size,) * spatial_dims if isinstance(size, int) else size
            if isinstance(sizes, (tuple, list)) and all(isinstance(s, int) for s in sizes):
                spatial = 1
                for s in sizes:
                    spatial *= s
        else:
            padding = _arg(node, 3, "padding", 0) if node.op == "call_function" else getattr(
                state.module(node), "padding", 0)
            include = _arg(node, 5, "count_include_pad", True) if node.op == "call_function" else getattr(
                state.module(node), "count_include_pad", True)
            is_avg = "avg" in (node.target.__name__ if callable(node.target) else type(state.module(node)).__name__).lower()
            if is_avg and include and padding not in (0, (0, 0), (0, 0, 0), [0, 0]):
                state.block(layout, "fold", node, "average pooling with zero padding changes a constant")
            divisor = _arg(node, 6, "divisor_override", None) if node.op == "call_function" else getattr(
                state.module(node), "divisor_override", None)
            if is_avg and divisor is not None:
                state.block(layout, "fold", node, "average pooling with divisor_override changes a constant")
        return replace(layout, spatial=spatial)

    return rule


def _flatten(state: _State, node: Node) -> Value:
    layout = _sole_layout(state, node)
    if layout is None:
        return None
    if node.op == "call_module":
        module = state.module(node)
        start, end = getattr(module, "start_dim", 1), getattr(module, "end_dim", -1)
    else:
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
    if not isinstance(start, int) or not isinstance(end, int):
        state.unknown(node, "flattens with dims that are not constants")
        return None
    return _flatten_range(state, node, layout, start, end)


def _flatten_range(state: _State, node: Node, layout: Layout, start: int, end: int) -> Value:
    rank = layout.rank
    if rank is None:
        state.unknown(node, "flattens a tensor of unknown rank")
        return None
    s, e, p = start % rank, end % rank, rank + layout.dim
    new_rank = rank - (e - s)
    if p < s or p > e:
        return replace(layout, dim=(p if p < s else p - (e - s)) - new_rank, rank=new_rank)
    if p != s:
        state.unknown(node, "flattens leading dims together with the pruned channels")
        return None
    inner = layout.spatial if e == rank - 1 else None
    factor = None if (inner is None or layout.factor is None) else layout.factor * inner
    return replace(layout, dim=s - new_rank, rank=new_rank, factor=factor, spatial=1 if e == rank - 1 else None)


def _cat(state: _State, node: Node) -> Value:
    """torch.cat: along the channel dim the segments concatenate; along another dim they couple."""
    tensors, dim = _arg(node, 0, "tensors", ()), _arg(node, 1, "dim", 0)
    if isinstance(tensors, Node):  # a tuple made at run time (chunk, a slice of one): its length is not known
        value = state.values.get(tensors)
        if isinstance(value, Unbound) and type(dim) is int and value.layout.rank is not None \
                and (dim if dim < 0 else dim - value.layout.rank) != value.layout.dim:
            return value.layout if (dim if dim < 0 else dim - value.layout.rank) < value.layout.dim \
                else replace(value.layout, spatial=None)
        if value is not None:
            state.unknown(node, "concatenates a run-time tuple of pruned tensors along their channels, "
                          "or along a dim not known")
        return None
    values = [state.values.get(t) for t in tensors if isinstance(t, Node)] if isinstance(tensors, (list, tuple)) else []
    layouts = [v for v in values if isinstance(v, Layout)]
    if not layouts:
        if any(v is not None for v in values):
            state.unknown(node)
        return None
    others = [t for t in tensors if isinstance(t, Node) and state.values.get(t) is None]
    rank = next((v.rank for v in layouts if v.rank is not None), None)
    if rank is None:  # every operand of cat has the same rank: a model tensor's tells it
        owned = [_own_tensor(state, t) for t in others]
        rank = next((attribute(state.gm, str(o[0].target)).dim() for o in owned if o is not None), None)
        layouts = [replace(v, rank=rank) for v in layouts]
    d = dim if not isinstance(dim, int) or dim < 0 else (dim - rank if rank is not None else None)
    first = layouts[0]
    if others and isinstance(d, int) and len(layouts) + len(others) == len(tensors) and d != first.dim \
            and all(v.dim == first.dim for v in layouts) \
            and all(_own_operand(state, node, t, first) == "role" for t in others):
        # model tensors (a class token) joined along another dim: sliced with the channels
        state.block(first, "fold", node, "a model tensor is joined to the channels")
        if len(layouts) == 1:
            return replace(first, spatial=None if d > first.dim else first.spatial)
        return _binary(state, node)
    if len(layouts) != len(tensors) or not isinstance(dim, int):
        state.unknown(node, "concatenates pruned channels with untracked tensors")
        return None
    if d is not None and all(v.dim == d for v in layouts) and len({v.factor for v in layouts}) == 1 \
            and first.factor is not None:
        segs = tuple(s for v in layouts for s in v.segs)
        return Layout(d, segs, rank=rank, factor=first.factor, spatial=first.spatial)
    if d is not None and all(v.dim == first.dim != d for v in layouts):
        return _binary(state, node)
    state.unknown(node, "concatenates tensors whose channel dims differ or are unknown")
    return None


def _reshape(state: _State, node: Node) -> Value:
    """view/reshape: split the channels into (..., heads, head_dim), merge them back, or flatten.

    Dims before the channel dim are taken to be unchanged (the ``x.view(B, N, ...)`` idiom).  A
    split into several trailing dims makes the second-to-last of them the pruning unit (attention
    heads): the channel space is refined so that one unit removes its rows in every outer block.
    """
    source = node.args[0] if node.args else None
    layout = state.values.get(source) if isinstance(source, Node) else None
    if not isinstance(layout, Layout):
        if layout is not None:
            state.unknown(node)
        return None
    shape: list[Any]
    paths: list[tuple[int, ...]]
    if node.op == "call_method":
        shape, paths = list(node.args[1:]), [(i + 1,) for i in range(len(node.args) - 1)]
    else:
        given = _arg(node, 1, "shape", ())
        shape, paths = list(given), [(1, i) for i in range(len(given))]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        paths = [(paths[0][0], i) for i in range(len(shape[0]))]
        shape = list(shape[0])
    rank = layout.rank
    p = None if rank is None else rank + layout.dim
    # merge: the channel dim and every dim after it become the last dim
    if rank is not None and p is not None and len(shape) == p + 1:
        factor = None if (layout.factor is None or layout.spatial is None) else layout.factor * layout.spatial
        if not _channel_size_arg(state, node, layout, shape, paths, p, merged=p < rank - 1):
            return None
        return Layout(-1, layout.segs, rank=p + 1, factor=factor, spatial=1)
    # unsqueeze-like: (..., C) -> (..., C, 1, 1) with the leading dims unchanged
    ones = 0
    while ones < len(shape) and shape[-1 - ones] == 1:
        ones += 1
    if p is not None and layout.dim == -1 and ones and len(shape) - ones == p + 1 and shape[p] != 1:
        if not _channel_size_arg(state, node, layout, shape, paths, p, merged=False):
            return None
        return replace(layout, dim=-1 - ones, rank=len(shape), spatial=1)
    # split: the last (channel) dim becomes trailing int dims
    trailing = 0
    product = 1
    while trailing < len(shape) and type(shape[-1 - trailing]) is int and shape[-1 - trailing] > 0:
        product *= shape[-1 - trailing]
        trailing += 1
        if product >= (layout.width or 0):
            break
    single = len(layout.segs) == 1 and layout.factor == 1
    if layout.dim == -1 and single and trailing >= 1 and product == layout.width:
        while trailing > 1 and shape[-trailing] == 1:
            trailing -= 1  # leading size-1 dims of the split are outer dims of size 1
        if trailing == 1:
            return Layout(-1, layout.segs, rank=len(shape), spatial=1)
        unit, inner = shape[-2], shape[-1]
        outer = layout.width // (unit * inner) if layout.width else 1
        space = state.refine(layout.segs[0].space, unit, inner, outer)
        if space is None:
            state.unknown(node, "splits channels already split differently")
            return None
        state.edits.append(Edit(node.name, paths[-2], "count", space))
        state.block_spaces([space], "fold", node, "attention heads: their biases are not folded")
        return Layout(-2, (Seg(space, unit),), rank=len(shape), spatial=inner)
    state.unknown(node, "reshapes the pruned channels in a way fprune does not understand; "
                  "supported: (batch, -1), (..., heads, head_dim) splits and their merges")
    return None


def _channel_size_arg(state: _State, node: Node, layout: Layout, shape: list[Any],
                      paths: list[tuple[int, ...]], p: int, merged: bool) -> bool:
    """Makes the reshape size at the channel position follow pruning; False (and blocks) if it cannot.

    -1 stays; any other size (a literal or a size read at run time) becomes -1, or, when another
    dim is already -1, the kept channel count (single-group, unmerged channels only).
    """
    size = shape[p]
    if size == -1:
        return True
    if -1 not in shape:
        for seg in layout.segs:
            state.edits.append(Edit(node.name, paths[p], "minus_one", seg.space))
        return True
    single = len(layout.segs) == 1 and layout.factor == 1
    if single and not merged and size == layout.width:
        state.edits.append(Edit(node.name, paths[p], "count", layout.segs[0].space))
        return True
    state.unknown(node, "reshapes the pruned channels with a size that cannot follow pruning")
    return False


def _permute(state: _State, node: Node) -> Value:
    layout, _ = _first_tracked(state, node)
    if layout is None:
        state.unknown(node)
        return None
    dims: list[Any] = list(node.args[1:]) if node.op == "call_method" else list(_arg(node, 1, "dims", ()))
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    rank = len(dims)
    if not all(type(d) is int for d in dims) or layout.rank not in (None, rank) or -layout.dim > rank:
        state.unknown(node, "permutes a tensor whose channel position is not known")
        return None
    new_p = [d % rank for d in dims].index(rank + layout.dim)
    return replace(layout, dim=new_p - rank, rank=rank, spatial=None if new_p != rank + layout.dim else layout.spatial)


def _transpose(state: _State, node: Node) -> Value:
    layout, _ = _first_tracked(state, node)
    a, b = _arg(node, 1, "dim0", None), _arg(node, 2, "dim1", None)
    if layout is None or type(a) is not int or type(b) is not int:
        state.unknown(node)
        return None
    rank = layout.rank
    if rank is not None:
        a, b = a % rank - rank, b % rank - rank
    elif a >= 0 or b >= 0:
        state.unknown(node, "transposes a tensor of unknown rank")
        return None
    if layout.dim not in (a, b):
        return layout if (a < layout.dim) == (b < layout.dim) else replace(layout, spatial=None)
    return replace(layout, dim=b if layout.dim == a else a, spatial=None)


def _unbind(state: _State, node: Node) -> Value:
    layout, _ = _first_tracked(state, node)
    dim = _arg(node, 1, "dim", 0)
    if layout is None or layout.rank is None or type(dim) is not int:
        state.unknown(node, "unbinds a tensor whose channel position is not known")
        return None
    rank, removed = layout.rank, dim % layout.rank
    p = rank + layout.dim
    if removed == p:
        state.unknown(node, "unbinds the pruned channels")
        return None
    new_rank = rank - 1
    return Unbound(replace(layout, dim=(p - (removed < p)) - new_rank, rank=new_rank))


def _chunk(state: _State, node: Node) -> Value:
    """chunk / split into equal pieces: along another dim every piece keeps the channels; along the
    channels each piece is one tile of the producer's space (a unit removes its channel in every piece,
    as for the two halves of a gated MLP)."""
    source = node.args[0] if node.args else None
    layout = state.values.get(source) if isinstance(source, Node) else None
    if not isinstance(layout, Layout):
        if layout is not None:
            state.unknown(node)
        return None
    split = node.target in ("split", torch.split)
    size = _arg(node, 1, "split_size_or_sections" if split else "chunks", None)
    dim = _arg(node, 2, "dim", 0)
    rank = layout.rank
    d = dim if type(dim) is int and dim < 0 else (dim - rank if type(dim) is int and rank is not None else None)
    if d is None:
        state.unknown(node, "splits a tensor whose channel position is not known")
        return None
    if d != layout.dim:
        return Unbound(layout if d < layout.dim else replace(layout, spatial=None))
    width = layout.width
    sizes = list(size) if isinstance(size, (list, tuple)) else None
    pieces = None
    if width and len(layout.segs) == 1 and layout.factor == 1:
        if not split and type(size) is int and size > 0 and width % size == 0:
            pieces = size
        elif split and type(size) is int and size > 0 and width % size == 0:
            pieces = width // size
        elif split and sizes and all(type(v) is int for v in sizes) and len(set(sizes)) == 1 \
                and sizes[0] * len(sizes) == width:
            pieces = len(sizes)
    unit = None if pieces is None or width is None else state.refine(layout.segs[0].space, width // pieces, 1, pieces)
    if unit is None or width is None or pieces is None:
        state.unknown(node, "splits the pruned channels into pieces fprune cannot keep equal "
                      "(supported: chunk(k) or split(size) into equal pieces of one producer's channels)")
        return None
    if split:  # the piece size is a constant in the graph: it follows the kept count
        paths = [(1, i) for i in range(len(sizes))] if sizes else [(1,)]
        if node.op == "call_function" and "split_size_or_sections" in node.kwargs:
            state.unknown(node, "split with keyword sizes; pass them positionally")
            return None
        state.edits.extend(Edit(node.name, path, "count", unit) for path in paths)
    state.block_spaces([unit], "fold", node, "a split of the channels lies between producer and consumer")
    return Unbound(Layout(layout.dim, (Seg(unit, width // pieces),), rank=rank, spatial=layout.spatial))


def _matmul(state: _State, node: Node) -> Value:
    """Batched matmul: channels on a batch dim (heads) couple the operands and pass through."""
    operands = [state.values.get(a) if isinstance(a, Node) else None for a in node.args[:2]]
    a, b = operands
    if isinstance(a, Layout) and isinstance(b, Layout) and a.dim == b.dim <= -3 and \
            [x.size for x in a.segs] == [x.size for x in b.segs]:
        for x, y in zip(a.segs, b.segs):
            if not state.union(x.space, y.space):
                state.unknown(node, "multiplies heads split differently")
                return None
        rank = max(a.rank or 0, b.rank or 0) or None
        return Layout(a.dim, a.segs, rank=rank, spatial=None)
    state.unknown(node, "multiplies pruned channels as a matrix (only batched heads are understood)")
    return None


def _softmax(state: _State, node: Node) -> Value:
    layout, others = _first_tracked(state, node)
    dim = _arg(node, 1, "dim", None)
    if layout is None or others or type(dim) is not int:
        state.unknown(node)
        return None
    if dim >= 0:
        if layout.rank is None:
            state.unknown(node, "normalises a dim of a tensor of unknown rank")
            return None
        dim -= layout.rank
    if dim == layout.dim:
        state.unknown(node, "normalises over the pruned channels")
        return None
    state.block(layout, "fold", node, "a softmax lies between producer and consumer")
    return layout


def _defaults_to_constant(node: Node) -> bool:
    """A model input that defaults to None or a bool (timm's ``attn_mask=None, is_causal=False``).

    The analysis assumes the model is called without it, as its default says; a per-head mask
    passed later fails on its shape rather than silently.
    """
    return node.op == "placeholder" and len(node.args) == 1 and (node.args[0] is None or type(node.args[0]) is bool)


def _attention(state: _State, node: Node) -> Value:
    """scaled_dot_product_attention(q, k, v): heads on a batch dim couple q, k and v."""
    values = [state.values.get(a) if isinstance(a, Node) else None for a in node.args[:3]]
    extra = [a for a in list(node.args[3:]) + list(node.kwargs.values())
             if isinstance(a, Node) and not _defaults_to_constant(a)]
    if extra or not all(isinstance(v, Layout) for v in values):
        state.unknown(node, "attention with a mask tensor or untracked q/k/v")
        return None
    q, k, v = values
    assert isinstance(q, Layout) and isinstance(k, Layout) and isinstance(v, Layout)
    if not (q.dim == k.dim == v.dim <= -3) or not ([s.size for s in q.segs] == [s.size for s in k.segs]
                                                   == [s.size for s in v.segs]):
        state.unknown(node, "attention whose q, k, v heads are not on the same batch dim")
        return None
    for other in (k, v):
        for x, y in zip(q.segs, other.segs):
            if not state.union(x.space, y.space):
                state.unknown(node, "attention over heads split differently")
                return None
    return replace(q, spatial=None)


def _reduce(state: _State, node: Node) -> Value:
    """mean/sum/amax over dims other than the channel dim."""
    layout = _sole_layout(state, node)
    if layout is None:
        return None
    dims, keepdim = _arg(node, 1, "dim", None), _arg(node, 2, "keepdim", False)
    dims = (dims,) if isinstance(dims, int) else dims
    rank = layout.rank
    if rank is None or not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims):
        state.unknown(node, "reduces dims that cannot be told apart from the pruned channels")
        return None
    p, reduced = rank + layout.dim, {d % rank for d in dims}
    if p in reduced:
        state.unknown(node, "reduces over the pruned channels")
        return None
    spatial = 1 if set(range(p + 1, rank)) <= reduced else None
    if keepdim:
        return replace(layout, spatial=spatial)
    new_rank = rank - len(reduced)
    new_p = p - sum(1 for d in reduced if d < p)
    return replace(layout, dim=new_p - new_rank, rank=new_rank, spatial=spatial)


def _getattr(state: _State, node: Node) -> Value:
    """getattr(x, "shape" | "ndim" | "dtype" | "device"): metadata, not channel values."""
    source = node.args[0]
    value = state.values.get(source) if isinstance(source, Node) else None
    if node.args[1:2] and node.args[1] in ("ndim", "dtype", "device", "is_cuda"):
        return None
    if node.args[1:2] == ("shape",):
        return ShapeOf(value) if isinstance(value, Layout) else None
    state.unknown(node)
    return None


def _shape_query(state: _State, node: Node) -> Value:
    """x.size(), x.size(d), x.dim(): the size of the channel dim shrinks with pruning."""
    source = node.args[0]
    value = state.values.get(source) if isinstance(source, Node) else None
    if not isinstance(value, Layout) or node.target == "dim":
        return None
    dim = _arg(node, 1, "dim", None)
    if dim is None:
        return ShapeOf(value)
    return ChannelSize(value) if _may_be_channel(value, dim) else None


def _may_be_channel(layout: Layout, index: Any) -> bool:
    """Whether ``shape[index]`` may be the channel count (unknown rank: any index but 0)."""
    if type(index) is not int:
        return True
    if layout.rank is not None:
        return index % layout.rank == layout.rank + layout.dim
    return index < 0 and index == layout.dim or index > 0


def _check_channel_sizes(state: _State) -> None:
    """A channel count read at run time may only feed reshape sizes the rewrite replaces with -1."""
    replaced = {(e.node, e.path) for e in state.edits if e.kind == "minus_one"}
    for node, value in state.values.items():
        if not isinstance(value, ChannelSize):
            continue
        for user in node.users:
            ok = any(
                (user.name, path) in replaced and _arg_at(user, path) is node for path in _arg_paths(user)
            )
            if not ok:
                state.block(value, "unknown", user, "uses the number of pruned channels, which changes "
                            "after pruning; compute it from the model's configuration, or leave the "
                            "producing module out of the masks")


def _arg_paths(node: Node) -> list[tuple[int, ...]]:
    paths: list[tuple[int, ...]] = []
    for i, arg in enumerate(node.args):
        paths.append((i,))
        if isinstance(arg, (tuple, list)):
            paths.extend((i, j) for j in range(len(arg)))
    return paths


def _arg_at(node: Node, path: tuple[int, ...]) -> Any:
    arg: Any = node.args[path[0]]
    return arg[path[1]] if len(path) > 1 else arg


def _output(state: _State, node: Node) -> Value:
    for value in state.tracked_inputs(node):
        state.block(value, "output", node, "these channels reach the model output, so removing them changes "
                    "its shape; pass prune_outputs=True to prune them anyway")
    return None


_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.ELU, nn.CELU, nn.SELU, nn.Hardshrink, nn.LeakyReLU, nn.LogSigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.GELU, nn.Softshrink, nn.Threshold,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_ACTIVATION_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu, F.rrelu, F.hardtanh, F.relu6, F.sigmoid, F.hardsigmoid, F.tanh, F.silu, F.mish,
    F.hardswish, F.elu, F.celu, F.selu, F.hardshrink, F.leaky_relu, F.logsigmoid, F.softplus,
    F.softsign, F.tanhshrink, F.gelu, F.softshrink, F.dropout, F.relu_, F.elu_, F.leaky_relu_,
    torch.relu, torch.sigmoid, torch.tanh, torch.nn.functional.threshold,
    operator.neg, torch.neg, operator.pos, torch.abs, operator.abs, torch.exp, torch.square,
)
_ACTIVATION_METHODS = (
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "neg", "abs", "exp", "square",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "type_as",
)
_BINARY = (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
           operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div)
_BINARY_METHODS = ("add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_")


def _prelu(state: _State, node: Node) -> Value:
    module = state.module(node)
    assert isinstance(module, nn.PReLU)
    if module.num_parameters == 1:
        return _elementwise(state, node)
    layout, others = _first_tracked(state, node)
    if layout is not None and not others and layout.rank is not None and layout.dim == 1 - layout.rank:
        resolved = _resolve(state, node, layout, module.num_parameters)
        if resolved is not None and state.add_role(node, resolved, None):
            state.block(resolved, "fold", node, "a per-channel PReLU lies between producer and consumer")
            return _with_path(resolved, node)
        return None
    state.unknown(node, "per-channel PReLU on a tensor whose channel dim is not known to be dim 1")
    return None


def _functional_batch_norm(state: _State, node: Node) -> Value:
    """F.batch_norm(x, running_mean, running_var, weight, bias, ...) on the model's own tensors.

    What a BatchNorm subclass traced through (timm's BatchNormAct2d) leaves in the graph: the
    statistics and affine parameters are get_attr tensors, sliced along dim 0 like BatchNorm's.
    """
    x = _arg(node, 0, "input", None)
    layout = state.values.get(x) if isinstance(x, Node) else None
    tensors = [_arg(node, i, name, None) for i, name in
               ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    reads = [t for t in tensors if t is not None]
    if not isinstance(layout, Layout):
        state.unknown(node)
        return None
    if not reads or not all(isinstance(t, Node) and t.op == "get_attr" for t in reads):
        state.unknown(node, "batch_norm with statistics or parameters that are not the model's own tensors")
        return None
    if layout.rank is None or layout.rank + layout.dim != 1:
        state.unknown(node, f"normalises dim 1 but the pruned channels are on dim {layout.dim}")
        return None
    width = attribute(state.gm, str(reads[0].target)).shape[0]
    resolved = _resolve(state, node, layout, int(width))
    if resolved is None:
        return None
    for tensor in reads:
        _add_tensor_role(state, node, tensor, replace(resolved, dim=-1, rank=1, spatial=1))
    state.block(resolved, "fold", node, "a normalisation layer lies between producer and consumer")
    return resolved


def _functional_prelu(state: _State, node: Node) -> Value:
    """F.prelu(x, weight): a single slope acts elementwise; a per-channel weight cannot be sliced."""
    source, weight = _arg(node, 0, "input", None), _arg(node, 1, "weight", None)
    layout = state.values.get(source) if isinstance(source, Node) else None
    slope = attribute(state.gm, str(weight.target)) if isinstance(weight, Node) and weight.op == "get_attr" else None
    if isinstance(layout, Layout) and isinstance(slope, torch.Tensor) and slope.numel() == 1:
        return _with_path(layout, node)
    state.unknown(node, "F.prelu with a weight that is not a single slope read from the model cannot be "
                  "sliced; use nn.PReLU(num_parameters) or leave the producing module out of the masks")
    return None


@dataclass(frozen=True)
class _Index:
    """The rule index: one dict per node kind, built once per process on first use."""

    modules: Mapping[type, Rule]
    functions: Mapping[Any, Rule]
    methods: Mapping[str, Rule]


def _build_index() -> _Index:
    modules: dict[type, Rule] = {t: _linear_or_conv(t) for t in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)}
    modules.update({nn.LSTM: _lstm, nn.GRU: _lstm, nn.RNN: _lstm})
    modules[nn.Embedding] = _embedding
    modules.update({nn.ConvTranspose1d: _conv_transpose(1), nn.ConvTranspose2d: _conv_transpose(2),
                    nn.ConvTranspose3d: _conv_transpose(3)})
    modules.update({t: _elementwise for t in _ACTIVATION_MODULES})
    modules[nn.PReLU] = _prelu
    modules.update({nn.BatchNorm1d: _channelwise(None), nn.BatchNorm2d: _channelwise(2),
                    nn.BatchNorm3d: _channelwise(3), nn.InstanceNorm1d: _channelwise(None),
                    nn.InstanceNorm2d: _channelwise(2), nn.InstanceNorm3d: _channelwise(3)})
    modules[nn.LayerNorm] = _layer_norm
    modules[nn.GroupNorm] = _group_norm
    modules[nn.MultiheadAttention] = _multihead_attention
    modules[PrunedMultiheadAttention] = _multihead_attention
    modules[nn.Flatten] = _flatten
    for k, (mx, avg, amx, aavg) in {
        1: (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d),
        2: (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d),
        3: (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d),
    }.items():
        modules.update({mx: _pool(k, False), avg: _pool(k, False), amx: _pool(k, True), aavg: _pool(k, True)})
    functions: dict[Any, Rule] = {f: _elementwise for f in _ACTIVATION_FUNCTIONS}
    functions.update({f: _binary for f in _BINARY})
    functions[F.prelu] = _functional_prelu
    functions[F.batch_norm] = _functional_batch_norm
    functions.update({torch.chunk: _chunk, torch.split: _chunk})
    functions.update({torch.permute: _permute, torch.transpose: _transpose, torch.unbind: _unbind,
                      operator.matmul: _matmul, torch.matmul: _matmul, torch.bmm: _matmul,
                      F.softmax: _softmax, torch.softmax: _softmax, F.log_softmax: _softmax,
                      F.scaled_dot_product_attention: _attention})
    functions.update({getattr: _getattr, torch.flatten: _flatten, operator.getitem: _getitem, torch.cat: _cat, torch.concat: _cat,
                      torch.reshape: _reshape, torch.mean: _reduce, torch.sum: _reduce, torch.amax: _reduce})
    pools: dict[int, tuple[Any, ...]] = {
        1: (F.max_pool1d, F.avg_pool1d, F.adaptive_max_pool1d, F.adaptive_avg_pool1d),
        2: (F.max_pool2d, F.avg_pool2d, F.adaptive_max_pool2d, F.adaptive_avg_pool2d),
        3: (F.max_pool3d, F.avg_pool3d, F.adaptive_max_pool3d, F.adaptive_avg_pool3d),
    }
    for k, (mx, avg, amx, aavg) in pools.items():
        functions.update({mx: _pool(k, False), avg: _pool(k, False), amx: _pool(k, True), aavg: _pool(k, True)})
    methods: dict[str, Rule] = {m: _elementwise for m in _ACTIVATION_METHODS}
    methods.update({m: _binary for m in _BINARY_METHODS})
    methods.update({"chunk": _chunk, "split": _chunk})
    methods.update({"permute": _permute, "transpose": _transpose, "unbind": _unbind, "matmul": _matmul,
                    "softmax": _softmax, "log_softmax": _softmax})
    methods.update({"size": _shape_query, "dim": _shape_query, "flatten": _flatten, "view": _reshape, "reshape": _reshape, "mean": _reduce,
                    "sum": _reduce, "amax": _reduce})
    return _Index(MappingProxyType(modules), MappingProxyType(functions), MappingProxyType(methods))


_INDEX = _build_index()  # immutable: mappingproxies of rules


def _rule_for(state: _State, node: Node) -> Rule | None:
    if node.op == "call_module":
        module_type = parametrize.type_before_parametrizations(state.module(node))
        return _INDEX.modules.get(module_type)
    if node.op == "call_function":
        try:
            return _INDEX.functions.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return _INDEX.methods.get(str(node.target))
    if node.op == "output":
        return _output
    return None


def analyze(model: nn.Module | Any) -> Analysis:
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
    from fprune.frontends import read

    gm, source = read(model)
    state = _State(gm)
    for node in gm.graph.nodes:
        rule = _rule_for(state, node)
        if rule is not None:
            state.values[node] = rule(state, node)
        elif node.op not in ("placeholder", "get_attr"):
            state.unknown(node, node.meta.get("fprune_reason"))
            state.values[node] = None
    _block_shared_parameters(state)
    _check_channel_sizes(state)
    return replace(_finish(state), source=source)


def _block_shared_parameters(state: _State) -> None:
    """Parameters read outside their module (get_attr, weight tying) must not be sliced."""
    owners: dict[int, int] = {}
    for module in state.modules.values():
        for p in module._parameters.values():
            if p is None:
                continue
            owners[id(p)] = owners.get(id(p), 0) + 1
    read_by: dict[str, Node] = {}
    for node in state.gm.graph.nodes:
        if node.op == "get_attr":
            read_by.setdefault(str(node.target).rpartition(".")[0], node)
    for name, role in state.roles.items():
        params = list(state.modules[name].parameters(recurse=False))
        culprit = read_by.get(name)
        if culprit is None and not any(owners[id(p)] > 1 for p in params):
            continue
        why = (f"a parameter of module '{name}' is shared with another module or read directly "
               "by the graph, so it cannot be sliced; leave this group out of the masks")
        spaces = [s.space for s in (role.in_layout.segs if role.in_layout else ())]
        if role.out_space is not None:
            spaces.append(role.out_space)
        if culprit is None:  # rare: find the calling node for the message
            culprit = next(n for n in state.gm.graph.nodes if n.name == role.node)
        state.block_spaces(spaces, "unknown", culprit, why)
    tensors = dict(state.gm.named_parameters(remove_duplicate=False)) if state.tensor_roles else {}
    for node in state.gm.graph.nodes:
        target = str(node.target)
        if node.op != "get_attr" or target not in state.tensor_roles:
            continue
        param = tensors.get(target)
        strangers = [u for u in node.users if u.name not in state.tensor_readers[target]]
        if strangers or (param is not None and owners.get(id(param), 0) > 1):
            culprit = strangers[0] if strangers else node
            state.block(state.tensor_roles[target], "unknown", culprit,
                        f"tensor '{target}' is also read or shared elsewhere, so it cannot be sliced")


def _finish(state: _State) -> Analysis:
    roots: dict[int, int] = {}
    order: list[int] = []
    for space in range(len(state.parent)):
        root = state.resolve(space)[0]
        if root not in roots:
            roots[root] = len(order)
            order.append(root)
    members: list[list[str]] = [[] for _ in order]
    for name, role in state.roles.items():
        spaces = {state.resolve(s.space)[0] for s in (role.in_layout.segs if role.in_layout else ())}
        if role.out_space is not None:
            spaces.add(state.resolve(role.out_space)[0])
        for root in spaces:
            members[roots[root]].append(name)
    for target, layout in state.tensor_roles.items():
        owner = target.rpartition(".")[0]
        for root in {state.resolve(s.space)[0] for s in layout.segs}:
            if owner not in members[roots[root]]:
                members[roots[root]].append(owner)
    groups = tuple(
        ChannelGroup(
            name=state.space_producers[root][0],
            size=state.size[root],
            producers=tuple(dict.fromkeys(state.space_producers[root])),
            members=tuple(members[i]),
            blocks=tuple(state.blocks[root]),
        )
        for i, root in enumerate(order)
    )
    by_producer = {p: i for i, g in enumerate(groups) for p in g.producers}
    resolved = [state.resolve(s) for s in range(len(state.parent))]
    return Analysis(
        state.gm,
        groups,
        MappingProxyType(dict(state.roles)),
        tuple(roots[root] for root, _ in resolved),
        MappingProxyType(by_producer),
        tuple(stages for _, stages in resolved),
        tuple(state.edits),
        MappingProxyType(dict(state.tensor_roles)),
    )
