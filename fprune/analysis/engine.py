"""The engine: one pass over a graph, in topological order, that owns the channel spaces.

Each tensor value carries a :class:`~fprune.analysis.values.Layout` saying which of its
dimensions indexes channels and how.  For each node the front-end names a canonical op
(:mod:`fprune.analysis.ops`) and the engine calls that op's rule
(:data:`fprune.analysis.rules.RULES`) with a :class:`~fprune.analysis.context.RuleContext`.
Coupled producers (residual adds, multiplicative gates) are merged in a union-find that only the
engine sees.

Soundness does not depend on the rules being complete: a node the front-end cannot name, or whose
op has no rule, makes every group it reads unprunable (a ``"unknown"`` block naming the node); so
does a parameter shared or read directly, and a channel count read at run time that feeds anything
but a size the rewrite replaces.  The engine keeps
no module-level mutable state: everything lives in one :class:`Engine` per analysis.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.analysis.engine import run
    >>> from fprune.frontends.fx_symbolic import canonical_op
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> [(g.name, g.size, g.members) for g in run(gm, canonical_op).groups]
    [('0', 8, ('0', '2')), ('2', 2, ('2',))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from torch import nn
from torch.fx import GraphModule, Node

from fprune.analysis.context import RuleContext, node_args
from fprune.analysis.patterns import find_patterns
from fprune.analysis.rules import RULES
from fprune.analysis.values import (
    Analysis,
    Block,
    BlockKind,
    ChannelGroup,
    ChannelSize,
    Edit,
    Layout,
    NormSite,
    Role,
    Value,
    segs_of,
)

__all__ = ["Engine", "run", "describe"]

Classify = Callable[[Node, Mapping[str, Any]], "str | None"]


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


class Engine:
    """The propagation state of one analysis: channel spaces, values, roles, blocks, edits."""

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
        self.norms: list[NormSite] = []  # normalisations over tracked channels, kept exact
        self.patterns: dict[Node, Any] = {}  # node -> what a multi-node pattern found there
        self.notes: dict[Any, Any] = {}  # findings a rule leaves for a later node's rule
        self.fine: dict[int, int] = {}  # root of a query-head space tiled into key/value heads -> n_rep

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
                if self.find(a) in self.fine:
                    self.fine[fb] = self.fine[self.find(a)]
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
        if rb in self.fine:
            self.fine.setdefault(ra, self.fine[rb])
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

    def mark_subunits(self, space: int, n_rep: int) -> None:
        """Records that `space`, tiled into units of `n_rep` channels (query heads over key/value
        heads), may also lose single channels within its units (see ChannelGroup.subunits)."""
        self.fine[self.find(space)] = n_rep

    def fine_level(self, space: int) -> tuple[int, int] | None:
        """(stages down to the sub-unit level, n_rep) for a space passing through a marked level,
        whose units are its group's own channels; None otherwise."""
        root, level = self.find(space), 0
        while root in self.tiles:
            unit, inner, outer = self.tiles[root]
            if root in self.fine:
                ok = (inner, outer) == (self.fine[root], 1) and self.find(unit) not in self.tiles
                return (level, inner) if ok else None
            level += 1
            root = self.find(unit)
        return None

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
        self.block_spaces([seg.space for seg in segs_of(value)], kind, node, why)

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
        for arg in node_args(node):
            value = self.values.get(arg)
            if value is not None:
                yield value


def _check_channel_sizes(state: Engine) -> None:
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


def _block_shared_parameters(state: Engine) -> None:
    """Parameters read outside their module (get_attr, weight tying) must not be sliced."""
    owners: dict[int, int] = {}
    for module in state.modules.values():
        for p in module._parameters.values():
            if p is None:
                continue
            owners[id(p)] = owners.get(id(p), 0) + 1
    read_by: dict[str, Node] = {}
    for node in state.gm.graph.nodes:
        if node.op == "get_attr":  # one of a module's own tensors, read directly
            owner, _, attr = str(node.target).rpartition(".")
            holder = state.modules.get(owner)
            if holder is not None and (attr in holder._parameters or attr in holder._buffers):
                read_by.setdefault(owner, node)
    tied = _tied_embeddings(state, owners)
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
        if culprit is None and name in tied:  # the hidden width slices both alike: only the vocabulary stays
            spaces = [role.out_space] if isinstance(state.modules[name], nn.Linear) and role.out_space is not None \
                else []
            why = (f"module '{name}' shares its weight with the token embedding (tied embeddings): its "
                   "vocabulary rows are the embedding's, which every token id indexes, so they are kept")
            if not spaces:
                continue
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


def _tied_embeddings(state: Engine, owners: Mapping[int, int]) -> set[str]:
    """An nn.Embedding and an nn.Linear sharing one weight (a tied ``lm_head``), the Linear reading
    the very channels the embedding produces: both slice the weight's dim 1 by that one group, so the
    hidden width may be pruned; the Linear's output (the vocabulary) may not."""
    tied: set[str] = set()
    modules = state.modules
    for name, role in state.roles.items():
        linear = modules[name]
        if not isinstance(linear, nn.Linear) or owners.get(id(linear.weight), 0) != 2 or role.in_layout is None:
            continue
        embeds = [n for n, m in modules.items() if isinstance(m, nn.Embedding) and m.weight is linear.weight]
        source = state.roles.get(embeds[0]) if len(embeds) == 1 else None
        layout = role.in_layout
        if source is None or source.out_space is None or source.in_layout is not None or \
                len(layout.segs) != 1 or layout.factor != 1:
            continue
        if state.resolve(layout.segs[0].space)[0] == state.resolve(source.out_space)[0] and \
                not state.resolve(source.out_space)[1] and layout.segs[0].size == linear.in_features:
            tied.update((name, embeds[0]))
    return tied


def _finish(state: Engine) -> Analysis:
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
    levels, subunits = _subunits(state)
    groups = tuple(
        ChannelGroup(
            name=state.space_producers[root][0],
            size=state.size[root],
            producers=tuple(dict.fromkeys(state.space_producers[root])),
            members=tuple(members[i]),
            blocks=tuple(state.blocks[root]),
            subunits=subunits.get(root, 1),
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
        tuple(state.norms),
        space_fine=levels,
    )


def _subunits(state: Engine) -> tuple[tuple[int | None, ...], dict[int, int]]:
    """Each raw space's stages down to its group's sub-unit level, and each group root's subunits.

    A group may be pruned within its units (query heads within key/value heads) only when every
    marked level agrees on n_rep and the graph's ``repeat_kv`` count is an edit the rewrite makes.
    """
    found = [state.fine_level(s) for s in range(len(state.parent))]
    reps: dict[int, set[int]] = {}
    for space, level in enumerate(found):
        if level is not None:
            reps.setdefault(state.resolve(space)[0], set()).add(level[1])
    nodes = {n.name: n for n in state.gm.graph.nodes}
    edited: dict[int, set[Any]] = {}
    for e in state.edits:
        if e.kind == "rep":
            edited.setdefault(state.resolve(e.space)[0], set()).add(_arg_at(nodes[e.node], e.path))
    subunits = {root: next(iter(n)) for root, n in reps.items() if len(n) == 1 and edited.get(root) == n}
    levels = tuple(None if level is None or state.resolve(s)[0] not in subunits else level[0]
                   for s, level in enumerate(found))
    return levels, subunits


def run(gm: GraphModule, classify: Classify, source: Any = None) -> Analysis:
    """Analyses `gm`, naming each node's op with a front-end's `classify` (does not modify `gm`).

    `source` is the front-end's way back to what it read (kept on the Analysis for the rewrite).
    """
    engine = Engine(gm)
    ops: dict[Node, str | None] = {node: classify(node, engine.modules) for node in gm.graph.nodes}
    for node, (name, found) in find_patterns(gm, ops).items():
        ops[node] = name
        engine.patterns[node] = found
    for node in gm.graph.nodes:
        op = ops[node]
        rule = RULES.get(op) if op is not None else None
        if rule is not None:
            value = rule(RuleContext(engine, node))
            if isinstance(value, Layout) and value.rank is None:  # a front-end that records shapes tells the rank
                shape = getattr(node.meta.get("val"), "shape", None)
                value = value if shape is None else replace(value, rank=len(shape))
            engine.values[node] = value
        elif node.op not in ("placeholder", "get_attr"):
            engine.unknown(node, node.meta.get("fprune_reason"))
            engine.values[node] = None
    _block_shared_parameters(engine)
    _check_channel_sizes(engine)
    return replace(_finish(engine), source=source)
