"""The values the analysis computes: channel layouts, groups, blocks, and the finished Analysis.

Plain frozen dataclasses, shared by the engine, the rules and every later stage (scores, masks,
the rewrite).  Nothing here knows a graph library: an :class:`Analysis` holds the graph it read
as an opaque value, and names nodes and modules by string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from torch import Tensor
from typing_extensions import TypeAlias

if TYPE_CHECKING:
    from torch.fx import GraphModule

__all__ = [
    "ArgPath",
    "BlockKind",
    "Seg",
    "Layout",
    "LSTMOut",
    "AttnOut",
    "Unbound",
    "ShapeOf",
    "ChannelSize",
    "Value",
    "Role",
    "Block",
    "Options",
    "DEFAULT_OPTIONS",
    "ChannelGroup",
    "Edit",
    "NormSite",
    "Analysis",
    "segs_of",
    "layout_key",
]

BlockKind: TypeAlias = Literal["unknown", "inexact", "output", "fold"]
ArgPath: TypeAlias = "tuple[int | str, ...]"  # a node argument: positional index or keyword name, then indices inside


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
    # Each channel (a key/value head of grouped-query attention) holds this many sub-channels (the
    # query heads that read it) which a mask may remove one by one: such a group takes a mask of
    # ``size`` entries (whole units) or of ``size * subunits`` (query heads; a unit stays while any
    # of its query heads does, and every unit kept keeps the same number of them).
    subunits: int = 1

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
    # the kept count of the group, -1 (inferred), or the query heads kept per unit of a group
    # pruned within its units (``repeat_kv``'s n_rep; see ChannelGroup.subunits)
    kind: Literal["count", "minus_one", "rep"]
    space: int  # raw space of the group


@dataclass(frozen=True)
class NormSite:
    """A normalisation over pruned channels that the rewrite keeps exact.

    With the removed channels zero, statistics over the ``d'`` kept of ``d`` channels differ from
    the original's by known factors.  An RMSNorm stays its own class: its weight is scaled by
    ``sqrt(d/d')`` (stored as ``offset + weight``: Gemma's ``1 + w`` has offset 1) and its eps by
    ``d/d'``.  A LayerNorm computes its statistics over the original width, ``full_width`` (see
    :class:`fprune.modules.PrunedLayerNorm`), unless ``approximate=True``.
    """

    node: str  # the node normalising (the module call, F.layer_norm, a decomposed RMSNorm's weight product)
    kind: Literal["layer", "rms"]
    layout: Layout  # the channels normalised over
    module: str | None = None  # the module called (nn.LayerNorm, nn.RMSNorm); None for a functional form
    weight: str | None = None  # functional forms: the get_attr target of the weight (None: no weight)
    offset: float = 0.0  # the weight is applied as ``offset + weight``
    eps: tuple[str, ArgPath, float] | None = None  # functional forms: (node, argument path, value)
    shape: ArgPath | None = None  # F.layer_norm / F.rms_norm: where normalized_shape is
    full_width: int | None = None  # a layer_norm_full already pruned: the original width


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
    norms: tuple[NormSite, ...] = ()  # normalisations over tracked channels, kept exact by the rewrite
    source: Any = None  # the front-end's way back to the model read: a Lifted for an ExportedProgram, else None
    # raw space -> how many of its stages lead down to its group's sub-unit level (query heads), or
    # None for a space at the unit level (key/value heads); only groups with subunits > 1 use it
    space_fine: tuple[int | None, ...] = ()

    def public_name(self, fqn: str) -> str:
        """The name the model's user knows a tensor of `graph` by (a lifted program's own state name)."""
        return fqn if self.source is None else self.source.tensors.get(fqn, fqn)

    def space_mask(self, space: int, masks: Mapping[int, Tensor]) -> Tensor | None:
        """The keep-mask over a raw space's own channels, or None when its group is not pruned.

        A mask over a group's sub-units (query heads, see :attr:`ChannelGroup.subunits`) applies as
        given to spaces at that level and, reduced (a unit is kept while any of its sub-units is),
        to spaces at the unit level (key/value heads).
        """
        index = self.space_group[space]
        mask = masks.get(index)
        if mask is None:
            return None
        stages = self.space_stages[space] if self.space_stages else ()
        if self.is_fine(index, mask):
            level = self.space_fine[space] if self.space_fine else None
            if level is None:
                mask = mask.reshape(-1, self.groups[index].subunits).any(1)
            else:
                stages = stages[:level]
        for inner, outer in reversed(stages):
            mask = mask.repeat_interleave(inner).repeat(outer)
        return mask

    def is_fine(self, index: int, mask: Tensor) -> bool:
        """Whether `mask` for group `index` is over its sub-units (query heads) rather than its units."""
        group = self.groups[index]
        return group.subunits > 1 and mask.numel() == group.size * group.subunits

    def group(self, producer: str) -> ChannelGroup:
        """The group produced by the module named `producer`."""
        return self.groups[self.by_producer[producer]]

    def group_of(self, seg: Seg) -> ChannelGroup:
        """The group a layout segment belongs to."""
        return self.groups[self.space_group[seg.space]]


def segs_of(value: Value) -> tuple[Seg, ...]:
    """Every channel segment a value carries (a layout's, or the one inside a tuple-like value)."""
    if isinstance(value, Layout):
        return value.segs
    if isinstance(value, AttnOut):
        return value.layout.segs + (value.heads,)
    if isinstance(value, (LSTMOut, Unbound, ShapeOf, ChannelSize)):
        return value.layout.segs
    return ()


def layout_key(layout: Layout | None) -> object:
    """What two layouts must share to slice one tensor the same way."""
    if layout is None:
        return None
    return (layout.dim, tuple((s.space, s.size) for s in layout.segs), layout.factor)

