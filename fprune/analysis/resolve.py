"""Resolving masks: keep-masks over groups -> every tensor's kept indices and every graph constant.

The one plan computation both rewrite back-ends read.  :func:`group_masks` validates user masks
keyed by producer; :func:`plan_rewrite` resolves, once, the new tensors and sizes of every module
(sliced, or folded under ``fold_bias``) and the graph constants to edit (head counts, inferred
sizes), as a :class:`Rewrite`.  Nothing here builds a model or modifies one.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.analysis import Options, analyze
    >>> from fprune.analysis.resolve import plan_rewrite
    >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> change = plan_rewrite(analyze(net), {0: torch.tensor([True, False, True, True])}, Options())
    >>> change.attrs["0"]["out_features"], net[0].out_features  # the model is untouched
    (3, 4)
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Node
from torch.nn.utils import parametrize

from fprune.analysis.values import Analysis, ArgPath, Edit, Layout, Options
from fprune.errors import FpruneWarning, InvalidMaskError, InvalidTypeError, UnprunableError, UnsupportedModelError
from fprune.slicing import IndexMap, slice_tensor, spec_for
from fprune.trace import attribute

__all__ = ["group_masks", "check_subunits", "expand", "index_maps", "applied_masks", "plan_rewrite", "plain_slices",
           "module_tensors", "Rewrite"]


def group_masks(analysis: Analysis, masks: Mapping[str, Tensor], options: Options) -> dict[int, Tensor]:
    """Validates user masks keyed by producer name; returns masks keyed by group index.

    Raises:
        InvalidTypeError: `masks` is not a mapping of str to bool tensors.
        InvalidMaskError: a key names no producer, a mask has the wrong length or keeps nothing,
            or two producers of one group were given different masks.
        UnprunableError: the group cannot be pruned under `options`.
    """
    if not isinstance(masks, Mapping):
        raise InvalidTypeError(
            f"masks must map producing-module names to bool tensors, got {type(masks).__name__}; "
            "e.g. {'features.0': torch.tensor([True, False, ...])}"
        )
    out: dict[int, Tensor] = {}
    seen: dict[int, Tensor] = {}  # every mask given, all-True ones included, to compare coupled producers
    given_by: dict[int, str] = {}
    modules = dict(analysis.graph.named_modules())
    producers = list(analysis.by_producer)
    for name, mask in masks.items():
        if name not in analysis.by_producer:
            what = "is not a module of the model" if name not in modules else (
                "is not a producing module (Linear, Conv, LSTM) reached by the graph")
            raise InvalidMaskError(
                f"mask key {name!r} {what}; key masks by the fully-qualified name of the module "
                f"that produces the channels (as in model.named_modules()), one of: {_some(producers)}"
            )
        group_index = analysis.by_producer[name]
        group = analysis.groups[group_index]
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = f"a {mask.dtype} tensor" if isinstance(mask, Tensor) else type(mask).__name__
            raise InvalidTypeError(
                f"mask for {name!r} must be a torch.bool tensor (True = keep), got {got}; "
                "convert with mask.bool() or build it with fprune.topk_mask"
            )
        fine = mask.dim() == 1 and analysis.is_fine(group_index, mask)
        if mask.dim() != 1 or (mask.numel() != group.size and not fine):
            out_space = analysis.roles[name].out_space
            tiled = out_space is not None and bool(analysis.space_stages and analysis.space_stages[out_space])
            unit = ("one per unit: this group removes whole attention heads, conv groups or norm groups"
                    if tiled else "one per output channel")
            if group.subunits > 1:
                unit = (f"one per key/value head, or {group.size * group.subunits}: one per query head, the "
                        "same number kept for every key/value head kept")
            raise InvalidMaskError(
                f"mask for {name!r} must be 1-D with {group.size} entries ({unit}), "
                f"got shape {tuple(mask.shape)}; build masks from the model's scores, e.g. "
                f"pipe(model, score_l1, topk_mask(0.5)), whose Plan has one mask per group"
            )
        if fine:
            mask = check_subunits(analysis, group_index, mask, f"mask for {name!r}")
        if not bool(mask.any()):
            raise InvalidMaskError(
                f"mask for {name!r} keeps no channel; keep at least one (a group cannot be removed whole)"
            )
        if group_index in seen:
            if not torch.equal(seen[group_index], mask.detach().cpu()):
                raise InvalidMaskError(
                    f"masks for {given_by[group_index]!r} and {name!r} differ, but their channels are "
                    f"coupled (group {group.name!r}: {', '.join(group.producers)}); give one mask for the group"
                )
            continue
        seen[group_index] = mask.detach().cpu().clone()
        given_by[group_index] = name
        if bool(mask.all()):
            continue
        if not group.prunable(options):
            raise UnprunableError(
                f"cannot prune {name!r} (group {group.name!r}): {group.why_not(options)}"
            )
        out[group_index] = seen[group_index]
    return out


def check_subunits(analysis: Analysis, index: int, mask: Tensor, where: str) -> Tensor:
    """A mask over group `index`'s query heads, checked; the key/value-head mask when it keeps whole units.

    Every key/value head kept must keep the same number of query heads: the pruned graph repeats
    each the same number of times (``repeat_kv``), as a standard attention class does.

    Raises:
        InvalidMaskError: the counts differ, or nothing is kept.
    """
    group = analysis.groups[index]
    counts = mask.reshape(group.size, group.subunits).sum(1)
    kept = counts[counts > 0]
    if kept.numel() == 0:
        raise InvalidMaskError(f"{where} keeps no query head; keep at least one")
    if bool((kept != kept[0]).any()):
        raise InvalidMaskError(
            f"{where} keeps {counts.tolist()} query heads per key/value head of group {group.name!r}; every "
            "key/value head kept must keep the same number (each is repeated that many times): remove query heads "
            "evenly, as fprune.hf.widths(heads=...) does, or whole key/value heads with a mask of "
            f"{group.size} entries")
    if int(kept[0]) == group.subunits:
        return counts > 0
    return mask


def _some(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


def expand(analysis: Analysis, layout: Layout | None, masks: Mapping[int, Tensor]) -> Tensor | None:
    """The keep-mask along a layout's dimension, or None when nothing in it is pruned."""
    if layout is None or not any(analysis.space_group[s.space] in masks for s in layout.segs):
        return None
    factor = layout.factor or 1
    parts = []
    for seg in layout.segs:
        mask = analysis.space_mask(seg.space, masks)
        if mask is None:
            mask = torch.ones(seg.size, dtype=torch.bool)
        parts.append(mask.repeat_interleave(factor) if factor != 1 else mask)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def index_maps(analysis: Analysis, masks: Mapping[int, Tensor]) -> dict[str, IndexMap]:
    """For every module touched by `masks` (keyed by group index): its tensors' keep-masks per dim."""
    modules = dict(analysis.graph.named_modules())
    out: dict[str, IndexMap] = {}
    for name, role in analysis.roles.items():
        in_keep = expand(analysis, role.in_layout, masks)
        out_keep = None if role.out_space is None else analysis.space_mask(role.out_space, masks)
        if in_keep is None and out_keep is None:
            continue
        module = modules[name]
        if parametrize.is_parametrized(module):
            raise UnsupportedModelError(
                f"module {name!r} is parametrized (torch.nn.utils.parametrize); remove its "
                "parametrizations first, or prune through fprune.compat"
            )
        index = spec_for(module).index(module, in_keep, out_keep)
        if index:
            out[name] = index
    for target, layout in analysis.tensor_roles.items():  # tensors read directly (functional BN, embeddings)
        keep = expand(analysis, layout, masks)
        if keep is not None:
            owner, _, tensor = target.rpartition(".")
            assert layout.rank is not None
            out.setdefault(owner, {})[tensor] = {layout.rank + layout.dim: keep}
    return out


@dataclass(frozen=True)
class Rewrite:
    """What pruning changes, as data: the new tensors and sizes of each module, and graph constants.

    Computed from the original tensors only; nothing is modified.  :func:`apply_patterns` builds a
    new model from it; :mod:`fprune.compat` applies it to the user's modules in place, as the API it
    reproduces requires.
    """

    masks: Mapping[int, Tensor]  # group index -> keep-mask actually applied (after bias folding)
    tensors: Mapping[str, Mapping[str, Tensor]]  # module -> tensor name -> new tensor (replaces, or adds a bias)
    attrs: Mapping[str, Mapping[str, Any]]  # module -> attribute -> new value (out_features, num_heads...)
    constants: tuple[tuple[str, tuple[int, ...], int], ...]  # (node, argument path, new value)
    args: tuple[tuple[str, ArgPath, Any], ...] = ()  # (node, argument path, value): a norm's eps, shape
    full_width: tuple[tuple[str, int], ...] = ()  # F.layer_norm nodes to compute over their original width


def applied_masks(analysis: Analysis, masks: Mapping[int, Tensor], options: Options) -> dict[int, Tensor]:
    """The masks a rewrite applies: under ``fold_bias``, without the groups the fold keeps whole."""
    if not (options.fold_bias and masks):
        return dict(masks)
    return _fold(analysis, dict(masks), dict(analysis.graph.named_modules()))[0]


def plan_rewrite(analysis: Analysis, masks: Mapping[int, Tensor], options: Options) -> Rewrite:
    """The data of a rewrite: masks keyed by group index, under `options` (see :class:`Rewrite`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fprune import Options, analyze, trace
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> change = plan_rewrite(analyze(trace(net)), {0: torch.tensor([True, False, True, True])}, Options())
        >>> {m: {t: tuple(v.shape) for t, v in sorted(ts.items())} for m, ts in sorted(change.tensors.items())}
        {'0': {'bias': (3,), 'weight': (3, 2)}, '2': {'weight': (1, 3)}}
        >>> change.attrs["0"]["out_features"], net[0].out_features  # the model is untouched
        (3, 4)
    """
    modules = dict(analysis.graph.named_modules())
    full: dict[str, dict[str, Tensor]] = {}  # full-size replacement tensors, before slicing
    masks = dict(masks)
    if options.fold_bias and masks:
        masks, full = _fold(analysis, masks, modules)
    tensors: dict[str, dict[str, Tensor]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for name, new_tensors in module_tensors(analysis, masks, modules, full):
        tensors[name] = new_tensors
        if name in analysis.roles:  # not the owner of tensors read directly (functional BN)
            attrs[name] = spec_for(modules[name]).attrs(_View(modules[name], new_tensors))
    for name, role in analysis.roles.items():  # sizes no tensor records (a LayerNorm without affine)
        width_attrs = spec_for(modules[name]).width_attrs
        in_keep = expand(analysis, role.in_layout, masks) if width_attrs is not None else None
        if width_attrs is not None and in_keep is not None:
            attrs.setdefault(name, {}).update(width_attrs(modules[name], int(in_keep.sum())))
    # A head count follows its group's mask; a merged size read from another tensor's shape
    # (``x.reshape(B, N, C)``) may change with any pruned group, and -1 is always equivalent.
    constants = tuple((e.node, e.path, _edit_value(analysis, e.kind, e.space, masks))
                      for e in analysis.edits if _edited(analysis, e, masks))
    args, full_width = _exact_norms(analysis, masks, options, modules, attrs)
    return Rewrite(MappingProxyType(masks), MappingProxyType(tensors), MappingProxyType(attrs), constants,
                   args, full_width)


def module_tensors(
    analysis: Analysis, masks: Mapping[int, Tensor], modules: Mapping[str, Any],
    full: Mapping[str, Mapping[str, Tensor]] | None = None, skip: Collection[str] = (),
) -> Iterator[tuple[str, dict[str, Tensor]]]:
    """Each changed module's new tensors, one module at a time, in the rewrite's order.

    The tensors are sliced by the masks, and an RMSNorm's weight over pruned channels scaled (see
    :func:`_exact_norms`); `full` holds full-size replacements made by bias folding.  A module is
    read only when its turn comes, so `modules` may load tensors lazily (a checkpoint streamed
    tensor by tensor gives the same values, bit for bit, as the whole model in memory).  Modules
    named in `skip` are left out (a caller that slices their tensors itself, a block at a time:
    :func:`plain_slices` says which may be).
    """
    full = full or {}
    maps = index_maps(analysis, masks)
    scales = _rms_scales(analysis, masks)
    positions: dict[int, Tensor] = {}  # id(keep-mask) -> its kept indices, computed once per mask
    with torch.no_grad():
        for name in dict.fromkeys([*maps, *full]):  # ordered: the rewrite is deterministic
            if name in skip:
                continue
            module = modules[name]
            index, edits = maps.get(name, {}), full.get(name, {})
            new_tensors: dict[str, Tensor] = {}
            for tname in dict.fromkeys([*index, *edits]):
                original = getattr(module, tname)
                dims = {d: _positions(keep, positions) for d, keep in index.get(tname, {}).items()}
                new = slice_tensor(edits[tname] if tname in edits else original, dims)
                if original is None:  # a bias added by folding: sliced like the output rows
                    role = analysis.roles[name]
                    out_keep = None if role.out_space is None else analysis.space_mask(role.out_space, masks)
                    new = new if out_keep is None else slice_tensor(new, {0: out_keep})
                if (name, tname) in scales:  # offset + w' = (offset + w) * sqrt(d/d')
                    ratio, offset = scales[name, tname]
                    new = ((new.double() + offset) * ratio**0.5 - offset).to(new.dtype)
                new_tensors[tname] = new
            yield name, new_tensors


def plain_slices(analysis: Analysis, masks: Mapping[int, Tensor]) -> dict[str, IndexMap]:
    """The modules whose new tensors :func:`module_tensors` makes by slicing alone (no RMSNorm scale),
    with each tensor's keep-masks per dim: what may be sliced elsewhere, e.g. a block of rows at a time.
    Masks given to it must be :func:`applied_masks` without bias folding."""
    scaled = {owner for owner, _ in _rms_scales(analysis, masks)}
    return {name: index for name, index in index_maps(analysis, masks).items() if name not in scaled}


def _rms_scales(analysis: Analysis, masks: Mapping[int, Tensor]) -> dict[tuple[str, str], tuple[float, float]]:
    """(owner, tensor) -> (d/d', offset) of every RMSNorm weight over pruned channels."""
    scales: dict[tuple[str, str], tuple[float, float]] = {}
    for site in analysis.norms:
        if site.kind != "rms":
            continue
        keep = expand(analysis, site.layout, masks)
        if keep is None or bool(keep.all()) or not bool(keep.any()):
            continue  # unchanged, or every channel removed (_exact_norms raises)
        owner, tname = site.module or "", "weight"
        if site.weight is not None:
            owner, _, tname = site.weight.rpartition(".")
        scales[owner, tname] = (keep.numel() / int(keep.sum()), site.offset)
    return scales


def _exact_norms(
    analysis: Analysis, masks: Mapping[int, Tensor], options: Options, modules: Mapping[str, Any],
    attrs: dict[str, dict[str, Any]],
) -> tuple[tuple[tuple[str, ArgPath, Any], ...], tuple[tuple[str, int], ...]]:
    """Keeps every norm over pruned channels exact (see :class:`~fprune.analysis.values.NormSite`).

    An RMSNorm over ``d'`` of ``d`` channels: ``offset + w' = (offset + w) * sqrt(d/d')`` and
    ``eps' = eps * d/d'`` (the weight is scaled by :func:`module_tensors`).  A LayerNorm: statistics
    over the original width (a PrunedLayerNorm, or ``layer_norm_full`` for F.layer_norm); under
    ``approximate`` over the kept channels.  Fills `attrs`; returns the graph arguments to write and the F.layer_norm nodes to widen.
    """
    args: list[tuple[str, ArgPath, Any]] = []
    widen: list[tuple[str, int]] = []
    for site in analysis.norms:
        keep = expand(analysis, site.layout, masks)
        if keep is None or bool(keep.all()):
            continue  # none of its channels removed: the norm is unchanged
        full, kept = keep.numel(), int(keep.sum())
        if kept == 0:
            raise InvalidMaskError(f"the masks remove every channel normalised by node {site.node!r}; keep at "
                                   "least one channel of each group")
        if site.shape is not None:
            args.append((site.node, site.shape, (kept,)))
        if site.kind == "layer":
            if site.module is not None:
                full = int(getattr(modules[site.module], "full_width", full))  # a PrunedLayerNorm pruned again
            elif site.full_width is not None:
                full = site.full_width  # a layer_norm_full pruned again
            if options.approximate:
                continue
            if site.module is not None:
                from fprune.modules import PrunedLayerNorm

                attrs.setdefault(site.module, {}).update({"__class__": PrunedLayerNorm, "full_width": full})
            else:
                widen.append((site.node, full))
            continue
        ratio = full / kept  # the weight was scaled by module_tensors
        if site.module is not None:
            eps = getattr(modules[site.module], "eps", None)
            if eps is not None:
                attrs.setdefault(site.module, {})["eps"] = eps * ratio
        elif site.eps is not None:
            args.append((site.eps[0], site.eps[1], site.eps[2] * ratio))
    return tuple(args), tuple(widen)


def _edited(analysis: Analysis, edit: Edit, masks: Mapping[int, Tensor]) -> bool:
    """Whether the rewrite changes this constant: -1 whenever anything is pruned, a head count when
    its group is, ``repeat_kv``'s count when its group's mask removes query heads within units."""
    if edit.kind == "minus_one":
        return bool(masks)
    index = analysis.space_group[edit.space]
    return index in masks and (edit.kind != "rep" or analysis.is_fine(index, masks[index]))


def _edit_value(analysis: Analysis, kind: str, space: int, masks: Mapping[int, Tensor]) -> int:
    """-1, a head count (the space's kept channels), or ``repeat_kv``'s: the query heads each unit keeps."""
    if kind == "minus_one":
        return -1
    if kind == "rep":
        index = analysis.space_group[space]
        where = f"the mask of group {analysis.groups[index].name!r}"
        check_subunits(analysis, index, masks[index], where)
        return int(masks[index].reshape(-1, analysis.groups[index].subunits).sum(1).max())
    mask = analysis.space_mask(space, masks)
    assert mask is not None
    return int(mask.sum())


class _View:
    """A module seen with some tensors replaced: what a SliceSpec's ``attrs`` reads sizes from."""

    def __init__(self, module: nn.Module, tensors: Mapping[str, Tensor]) -> None:
        self._module, self._tensors = module, tensors

    def __getattr__(self, name: str) -> Any:
        if name in self._tensors:
            return self._tensors[name]
        return getattr(self._module, name)


def _positions(keep: Tensor, cache: dict[int, Tensor]) -> Tensor:
    found = cache.get(id(keep))
    if found is None:
        found = cache[id(keep)] = keep.nonzero().squeeze(1)
    return found


def _fold(
    analysis: Analysis, masks: dict[int, Tensor], modules: Mapping[str, Any]
) -> tuple[dict[int, Tensor], dict[str, dict[str, Tensor]]]:
    """Splits pruned groups into folded ones and conservative ones; returns masks and full-size edits."""
    nodes = {n.name: n for n in analysis.graph.graph.nodes}
    consumers: dict[int, list[str]] = {}
    for name, role in analysis.roles.items():
        for seg in role.in_layout.segs if role.in_layout else ():
            consumers.setdefault(analysis.space_group[seg.space], []).append(name)
    kept_masks: dict[int, Tensor] = {}
    edits: dict[str, dict[str, Tensor]] = {}
    deltas: dict[str, Tensor] = {}
    zeroed: dict[str, Tensor] = {}  # producer kept at full size -> its keep-mask (removed rows zeroed)
    for index, mask in masks.items():
        group = analysis.groups[index]
        producer = modules[group.producers[0]]
        if isinstance(producer, nn.RNNBase):
            # With weights zeroed but biases kept a removed unit still emits a time-varying value,
            # so no constant can be folded: LSTM groups use the default semantics (biases dropped).
            warnings.warn(
                f"fold_bias: LSTM group {group.name!r} is pruned with the default semantics (its removed "
                "units' biases are dropped, not folded)",
                FpruneWarning,
                stacklevel=4,
            )
            kept_masks[index] = mask
            continue
        why = next((b.message for b in group.blocks if b.kind == "fold"), None)
        group_deltas: dict[str, Tensor] = {}
        if why is None:
            why = _group_deltas(analysis, index, mask, producer, dict.fromkeys(consumers.get(index, [])),
                                modules, nodes, group_deltas)
        if why is None:
            kept_masks[index] = mask
            for name, delta in group_deltas.items():
                deltas[name] = deltas[name] + delta if name in deltas else delta
            continue
        warnings.warn(
            f"fold_bias: group {group.name!r} is kept at full size with its removed rows zeroed "
            f"(the reference's conservative handling), because {why}",
            FpruneWarning,
            stacklevel=4,
        )
        for pname in group.producers:
            source = spec_for(modules[pname]).mask_source
            out_space = analysis.roles[pname].out_space
            assert source is not None and out_space is not None
            rows = analysis.space_mask(out_space, {index: mask})  # a mask over heads or conv groups: their rows
            assert rows is not None
            weight = getattr(modules[pname], source[0]).detach().clone()
            weight.transpose(0, source[1])[~rows.to(weight.device)] = 0  # channels on dim 1: Embedding, ConvTranspose
            edits.setdefault(pname, {})[source[0]] = weight
            zeroed[pname] = rows
    for name, delta in deltas.items():
        module = modules[name]
        bias = module.bias
        if name in zeroed:  # a zeroed row reads nothing, so nothing folds into its bias (as in the reference)
            delta = torch.where(zeroed[name].to(delta.device), delta, torch.zeros_like(delta))
        if bias is None and not bool(delta.ne(0).any()):
            continue  # nothing to fold: do not add a bias the reference would not add
        base = bias.detach() if bias is not None else torch.zeros_like(delta)
        edits.setdefault(name, {})["bias"] = base + delta
    return kept_masks, edits


def _group_deltas(
    analysis: Analysis,
    index: int,
    mask: Tensor,
    producer: Any,
    consumers: Mapping[str, None],
    modules: Mapping[str, Any],
    nodes: Mapping[str, Node],
    out: dict[str, Tensor],
) -> str | None:
    """Fills `out` with each consumer's bias change; returns why folding is not exact, or None."""
    removed = ~mask.to(producer.weight.device)
    bias = producer.bias
    with torch.no_grad():
        base = bias.detach()[removed] if bias is not None else producer.weight.new_zeros(int(removed.sum()))
        for name in consumers:
            module, layout = modules[name], analysis.roles[name].in_layout
            assert layout is not None
            if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or getattr(module, "groups", 1) != 1:
                return f"its channels are read by {name!r} ({type(module).__name__}), which has no bias to fold into"
            weight = module.weight.detach()
            delta = weight.new_zeros(weight.shape[0])
            offset = 0
            factor = layout.factor or 1
            for seg in layout.segs:
                width = seg.size * factor
                if analysis.space_group[seg.space] == index:
                    const = base
                    for node_name in seg.path:
                        const = _evaluate(nodes[node_name], const, modules)
                    k = factor
                    cols = offset + (removed.nonzero().squeeze(1) * k).repeat_interleave(k) + torch.arange(
                        k, device=weight.device).repeat(int(removed.sum()))
                    columns = weight.index_select(1, cols)
                    if columns.dim() > 2:
                        if bool(const.ne(0).any()) and _zero_padded(module):
                            return f"consumer {name!r} pads with zeros, so a constant channel is not constant at its borders"
                        columns = columns.sum(dim=tuple(range(2, columns.dim())))
                    delta = delta + columns @ const.repeat_interleave(k).to(columns.dtype)
                offset += width
            out[name] = delta
    return None


def _zero_padded(module: Any) -> bool:
    padding: Any = getattr(module, "padding", 0)
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return False
    if isinstance(padding, str):
        return padding == "same"
    return any(p != 0 for p in padding)


def _evaluate(node: Node, value: Tensor, modules: Mapping[str, Any]) -> Tensor:
    """Applies one unary node of the graph to the constants of removed channels."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, (nn.modules.dropout._DropoutNd, nn.Identity)):
            return value
        return module(value)  # type: ignore[no-any-return]
    if node.target in (torch.nn.functional.dropout,):
        return value
    def operand(a: Any) -> Any:  # the constant for the tracked input; a model tensor for a get_attr
        if not isinstance(a, Node):
            return a
        if a.op == "get_attr":
            return attribute(modules[""], str(a.target))
        return value

    args = [operand(a) for a in node.args]
    kwargs = {k: operand(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        if node.target in ("contiguous", "clone", "detach", "to", "float", "double", "half", "type_as"):
            return value
        return getattr(value, str(node.target))(*args[1:], **kwargs)  # type: ignore[no-any-return]
    return node.target(*args, **kwargs)  # type: ignore[operator, no-any-return]
