"""What a plan's widths mean for a transformers config: kept counts, config edits, validation.

A family's config names its widths (:class:`~fprune.hf.families.Family`); these functions read the
counts a plan keeps per kind (``attention`` = key/value heads, ``query`` = query heads where they
are removed within key/value heads, ``mlp``, ``hidden``), write them into a config, and ask the
config's own validation whether it accepts them.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping
from typing import Any

from fprune.analysis import ChannelGroup
from fprune.errors import UnsupportedModelError
from fprune.hf.families import Family
from fprune.plan import Plan

__all__ = ["config_accepts", "edit_config", "head_counts", "kept_widths", "layer", "matching", "units", "width_pattern"]


def config_accepts(config: Any, fam: Family, kept: Mapping[str, int]) -> bool:
    """Whether the config, with these widths, passes its own validation (where it has one)."""
    validate = getattr(config, "validate", None)
    if not callable(validate):
        return True
    try:  # huggingface_hub, a dependency of transformers, wraps what a validator raises
        from huggingface_hub.errors import StrictDataclassError
        refused: tuple[type[Exception], ...] = (StrictDataclassError, ValueError, TypeError)
    except ImportError:  # pragma: no cover - an older huggingface_hub
        refused = (ValueError, TypeError)
    trial = copy.deepcopy(config)
    edit_config(trial, fam, config, kept)
    try:
        trial.validate()
    except refused:
        return False
    return True


def width_pattern(fam: Family, kind: str, config: Any) -> str:
    if kind == "mlp":
        return fam.mlp_in
    if kind == "hidden":
        if fam.norm == "layer":
            raise UnsupportedModelError(
                f"the hidden width of a LayerNorm family ({config.model_type}) is not exact in its standard class "
                "(nn.LayerNorm averages over the kept channels only); prune mlp, or score with "
                "score_with(scorer, approximate=True) to prune heads and hidden together, inexactly (the class "
                "ties hidden = heads x head size), or use fprune.export and apply_patterns, whose "
                "PrunedLayerNorm keeps it exact")
        if fam.head_norms:
            raise UnsupportedModelError(
                f"{config.model_type}'s config has one {fam.eps} for the hidden-width norms, whose eps must scale "
                "by d/d' when the hidden width shrinks, and for the per-head q/k norms, whose must not: the "
                "standard class cannot hold both; prune heads, kv_heads and mlp")
        return fam.embed
    if fam.attention is None:
        raise UnsupportedModelError(f"{config.model_type}'s heads are not pruned by fprune.hf yet (a fused "
                                    "projection whose per-head slices are refused); prune mlp or hidden")
    if fam.norm == "layer":
        raise UnsupportedModelError(
            f"{config.model_type}'s standard class ties the head size to hidden / heads, so removing heads "
            "without the hidden width is a model it cannot hold, and the hidden width is not exact under "
            "nn.LayerNorm; prune mlp, or score with score_with(scorer, approximate=True) to prune heads and "
            "hidden together, inexactly")
    return fam.attention


def head_counts(fam: Family, config: Any) -> tuple[int, int]:
    heads = int(getattr(config, fam.heads))
    kv = getattr(config, fam.kv_heads, None) if fam.kv_heads else None
    return heads, int(kv) if kv is not None else heads


def matching(groups: tuple[ChannelGroup, ...], pattern: str) -> list[ChannelGroup]:
    return [g for g in groups if any(fnmatch.fnmatchcase(p, pattern) for p in g.producers)]


def kept_widths(plan: Plan, fam: Family, config: Any,
                 uniform: bool = True) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Kind -> the most units a layer keeps, and kind -> each layer's count where layers differ.

    Raises on per-layer differences when `uniform`, and on pruned groups no config field describes.
    """
    patterns = {"mlp": fam.mlp_in, "hidden": fam.embed}
    if fam.attention is not None:
        patterns["attention"] = fam.attention
    patterns |= {f"hidden_like:{p}": p for p in fam.hidden_like}
    pruned = {k for k, m in plan.masks.items() if not bool(m.all())}
    kept: dict[str, int] = {}
    per_layer: dict[str, list[int]] = {}
    for kind, pattern in patterns.items():
        groups = sorted(matching(plan.analysis.groups, pattern), key=lambda g: layer(g, pattern))
        counts = {g.name: units(plan, g) for g in groups}
        if kind == "attention":
            query_heads(plan, groups, config, uniform, kept)
        pruned -= set(counts)
        if len(set(counts.values())) > 1:
            if uniform or kind == "hidden":
                raise UnsupportedModelError(
                    f"the plan keeps different {kind} widths per layer ({counts}); a standard "
                    f"{type(config).__name__} holds one width for every layer. Use fprune.hf.widths, which keeps "
                    "the same count in each layer, or widths(..., uniform=False) with apply(plan, uniform=False) "
                    "and fprune.hf.save / fprune.hf.load")
            per_layer[kind] = list(counts.values())
        if counts and max(counts.values()) < next(g.size for g in groups):
            kept[kind] = max(counts.values())
        elif kind in per_layer:
            kept[kind] = max(counts.values())
    if pruned:
        raise UnsupportedModelError(
            f"the plan prunes {sorted(pruned)}, which no field of {type(config).__name__} describes; prune only "
            "heads, KV heads, MLP and hidden widths (fprune.hf.widths)")
    for pattern in fam.hidden_like:  # checked against the hidden width, then not a config field of its own
        width = kept.pop(f"hidden_like:{pattern}", None)
        if width is not None and width != kept.get("hidden"):
            raise UnsupportedModelError(
                f"the plan keeps {width} channels of {pattern}, which {type(config).__name__} builds as wide as the "
                f"hidden width ({kept.get('hidden', getattr(config, fam.hidden))} kept); use fprune.hf.widths")
    if fam.norm == "layer" and ("hidden" in kept or "attention" in kept):
        heads, hidden = int(getattr(config, fam.heads)), int(getattr(config, fam.hidden))
        tied = kept.get("hidden", hidden) == kept.get("attention", heads) * (hidden // heads)
        if not (plan.options.approximate and tied):
            width_pattern(fam, "hidden" if "hidden" in kept else "heads", config)  # raises with the reason
    elif "hidden" in kept and fam.head_norms:
        width_pattern(fam, "hidden", config)  # raises with the reason
    return kept, per_layer


def units(plan: Plan, group: ChannelGroup) -> int:
    """The channels (key/value heads, for attention) a group keeps, whether its mask is over them or
    over their query heads."""
    mask = plan.masks.get(group.name)
    if mask is None:
        return group.size
    if plan.analysis.is_fine(plan.analysis.by_producer[group.name], mask):
        return int(mask.reshape(group.size, group.subunits).any(1).sum())
    return int(mask.sum())


def query_heads(plan: Plan, groups: list[ChannelGroup], config: Any, uniform: bool, kept: dict[str, int]) -> None:
    """Records ``kept["query"]``, the query heads each layer keeps, where masks remove them within their
    key/value heads (each layer must keep the same number: the config has one head count)."""
    fine = [g for g in groups if g.name in plan.masks and plan.analysis.is_fine(plan.analysis.by_producer[g.name],
                                                                                 plan.masks[g.name])]
    if not fine:
        return
    counts = {g.name: int(plan.masks[g.name].sum()) if g in fine else units(plan, g) * g.subunits for g in groups}
    if len(set(counts.values())) > 1:
        layers = "uniform=False keeps whole key/value heads" if not uniform else "use fprune.hf.widths(heads=...)"
        raise UnsupportedModelError(
            f"the plan keeps different query-head counts per layer ({counts}); a {type(config).__name__} holds one "
            f"head count for every layer ({layers})")
    kept["query"] = next(iter(counts.values()))


def layer(group: ChannelGroup, pattern: str) -> tuple[int, ...]:
    """The layer indices in the producer `pattern` matches (``model.layers.3.mlp...`` -> (3,))."""
    producer = next(p for p in group.producers if fnmatch.fnmatchcase(p, pattern))
    return tuple(int(part) for part in producer.split(".") if part.isdigit())


def edit_config(config: Any, fam: Family, old: Any, kept: Mapping[str, int],
                 per_layer: Mapping[str, list[int]] | None = None) -> None:
    hidden = int(getattr(old, fam.hidden))
    if per_layer:
        layers = [{} for _ in next(iter(per_layer.values()))]  # type: list[dict[str, int]]
        heads, kv = head_counts(fam, old)
        for kind, counts in per_layer.items():
            for fields, units in zip(layers, counts):
                if kind == "mlp":
                    fields[fam.mlp] = units
                else:
                    fields[fam.heads] = units * (heads // kv)
                    if fam.kv_heads:
                        fields[fam.kv_heads] = units
        config.fprune_layer_widths = layers
    if "attention" in kept or "query" in kept:
        heads, kv = head_counts(fam, old)
        head_dim = getattr(old, fam.head_dim, None) if fam.head_dim else None
        head_dim = int(head_dim) if head_dim else hidden // heads
        units = kept.get("attention", kv)
        setattr(config, fam.heads, kept.get("query", units * (heads // kv)))
        if fam.kv_heads:
            setattr(config, fam.kv_heads, units)
        if fam.head_dim:
            setattr(config, fam.head_dim, head_dim)
    if "mlp" in kept:
        setattr(config, fam.mlp, kept["mlp"])
    if "hidden" in kept:
        d_new = kept["hidden"]
        if fam.head_dim and not getattr(old, fam.head_dim, None):
            setattr(config, fam.head_dim, hidden // int(getattr(old, fam.heads)))
        setattr(config, fam.hidden, d_new)
        if fam.eps and fam.norm == "rms":  # exact RMSNorm over d' channels; a LayerNorm (approximate) keeps its eps
            setattr(config, fam.eps, float(getattr(old, fam.eps)) * hidden / d_new)
