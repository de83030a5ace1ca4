"""Hugging Face models end to end: trace, choose uniform widths, get the same class back.

The extra ``fprune[hf]`` (transformers >= 5, safetensors); transformers is imported only when a
function here needs it.  The stages compose like the core ones::

    program = fprune.hf.trace(model)                    # torch.export with dummy inputs from the config
    plan = fprune.hf.widths(kv_heads=0.5, mlp=0.3)(score_l1(program))
    small = fprune.hf.apply(plan)                       # type(small) is type(model), config updated
    small.save_pretrained(out)                          # anyone can from_pretrained(out)

:func:`widths` keeps the same count in every layer, which is what a standard class can hold; what
each family calls its widths is data (:data:`fprune.hf.families.FAMILIES`).  The pruned model is
built on the meta device and filled with ``load_state_dict(assign=True)``: no second full-size
copy, and the original model is not modified.

Example:
    >>> from fprune import hf
    >>> hf.widths(kv_heads=0.5, mlp=0.25)
    widths(kv_heads=0.5, mlp=0.25)
    >>> sorted(hf.FAMILIES)[:3]
    ['bert', 'distilbert', 'gemma']
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram

from fprune.analysis import ChannelGroup
from fprune.errors import FpruneWarning, InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from fprune.frontends import export
from fprune.hf._extra import check_model as _check_model
from fprune.hf.config import config_accepts, edit_config, head_counts, kept_widths, matching, width_pattern
from fprune.hf.families import FAMILIES, Family
from fprune.hf.storage import load, save, set_parameter, tied_names
from fprune.masks import _prune_lowest, global_topk_mask, topk_mask
from fprune.plan import Plan, Scored, plan_from_scored

__all__ = ["FAMILIES", "Family", "Widths", "apply", "family", "load", "save", "trace", "widths"]

_KINDS = ("heads", "kv_heads", "mlp", "hidden")


@dataclass(frozen=True, eq=False)
class _Source:
    model: nn.Module
    kwargs: Mapping[str, Any]


# The programs trace() made, and the model and inputs each came from: apply() rebuilds that model's
# class.  Weak keys: an entry lives as long as its program (which already holds the model's tensors).
_SOURCES: weakref.WeakKeyDictionary[ExportedProgram, _Source] = weakref.WeakKeyDictionary()


def family(model: Any) -> Family:
    """The :class:`Family` of a transformers model or config (by ``config.model_type``).

    Raises:
        UnsupportedModelError: the family is not in the table; the message lists those that are.

    Example:
        >>> from types import SimpleNamespace
        >>> family(SimpleNamespace(model_type="qwen2")).mlp
        'intermediate_size'
    """
    config = getattr(model, "config", model)
    kind = str(getattr(config, "model_type", None))
    if kind not in FAMILIES:
        raise UnsupportedModelError(
            f"fprune.hf knows no family {kind!r}; supported: {', '.join(sorted(FAMILIES))}. The generic "
            "path still works on any model torch.export captures: fprune.export(model, kwargs=...), then "
            "score, mask and apply_patterns (an ExportedProgram back, not the model's class)")
    return FAMILIES[kind]


def trace(model: nn.Module, *, seq_len: int = 8, batch: int = 1) -> ExportedProgram:
    """Exports a transformers model on dummy token ids built from its config (``use_cache=False``).

    Vision families (``Family.inputs == "pixels"``, e.g. ViT) get ``batch`` seeded random images
    of ``config.image_size`` instead (`seq_len` unused); encoder-decoder ones (T5) the same ids as
    ``decoder_input_ids``.

    Works on the meta device (the ids are made there too).  The model is not modified; the
    program returned is remembered with it, for :func:`apply`.

    Raises:
        InvalidTypeError: `model` is not a transformers ``PreTrainedModel``.
        UnsupportedModelError: an unknown family.
        TraceError: torch.export failed.
    """
    _check_model(model)
    family(model)
    for name, value in (("seq_len", seq_len), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"fprune.hf.trace expects a positive int {name}, got {value!r}")
    config = model.config
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    kwargs: dict[str, Any] = {}
    if family(model).inputs == "pixels":
        size = getattr(config, "image_size", None)
        sides = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if len(sides) != 2 or not all(isinstance(x, int) and x > 0 for x in sides):
            raise UnsupportedModelError(f"fprune.hf.trace builds images from config.image_size; "
                                        f"{type(model).__name__}'s is {size!r}, not a positive int or (height, width)")
        channels = int(getattr(config, "num_channels", 3) or 3)
        images = torch.randn(batch, channels, *sides, generator=torch.Generator().manual_seed(0))
        kwargs["pixel_values"] = images.to(device=device, dtype=first.dtype if first is not None else None)
    else:
        vocab = int(getattr(config, "vocab_size", 0) or 0)
        if vocab < 1:
            raise UnsupportedModelError(f"fprune.hf.trace builds token ids from config.vocab_size; "
                                        f"{type(model).__name__}'s config has none (a vision or audio model)")
        kwargs["input_ids"] = (torch.arange(batch * seq_len) % vocab).reshape(batch, seq_len).to(device)
        if family(model).inputs == "seq2seq":
            kwargs["decoder_input_ids"] = kwargs["input_ids"]
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    program = export(model, kwargs=kwargs)
    _SOURCES[program] = _Source(model, kwargs)
    return program


@dataclass(frozen=True)
class Widths:
    """The mask stage :func:`widths` returns: ``Widths(...)(scored) -> Plan``."""

    heads: float = 0.0
    kv_heads: float = 0.0
    mlp: float = 0.0
    hidden: float = 0.0
    uniform: bool = True
    valid_config: bool = True

    def __repr__(self) -> str:
        given = [f"{k}={getattr(self, k)!r}" for k in _KINDS if getattr(self, k)]
        given += [] if self.uniform else ["uniform=False"]
        given += [] if self.valid_config else ["valid_config=False"]
        return f"widths({', '.join(given)})"

    def __call__(self, scored: Scored) -> Plan:
        if not isinstance(scored, Scored):
            raise InvalidTypeError(f"{self!r} expects scores of a traced model, e.g. "
                                   f"{self!r}(score_l1(fprune.hf.trace(model))); got {type(scored).__name__}")
        source = _source(scored.analysis.source, None)
        fam = family(source.model)
        config = source.model.config
        if fam.norm == "layer" and scored.options.approximate and (self.heads or self.kv_heads or self.hidden):
            return self._tied_heads(scored, fam, config)
        heads, kv = head_counts(fam, config) if fam.attention is not None else (0, 0)
        grouped = heads != kv  # query heads within key/value heads: removed per group, below
        if self.heads and self.kv_heads and not grouped and fam.attention is not None:
            raise InvalidArgumentError(
                f"{self!r}: {type(source.model).__name__} has one key/value head per query head, so heads and "
                "kv_heads name the same width; give one of them")
        if self.heads and grouped and not self.uniform:
            raise InvalidArgumentError(
                f"{self!r}: with uniform=False query heads are removed only with their key/value heads: use "
                "kv_heads=, or keep uniform=True to remove query heads evenly within each key/value head")
        per_module: dict[str, float] = {}
        for kind in _KINDS:
            fraction = getattr(self, kind)
            if not fraction:
                continue
            pattern = width_pattern(fam, kind, config)
            groups = matching(scored.analysis.groups, pattern)
            blocked = [g for g in groups if g.name not in scored.scores]
            if not groups or blocked:
                why = blocked[0].why_not(scored.options) if blocked else "no channel group matches " + pattern
                raise UnsupportedModelError(
                    f"{self!r}: the {kind} of this {type(source.model).__name__} cannot be pruned exactly: {why}")
            if kind == "heads" and grouped:
                whole = [g.name for g in groups if g.subunits == 1 or g.name not in scored.subunit_scores]
                if whole:
                    raise UnsupportedModelError(
                        f"{self!r}: the query heads of {whole[0]!r} ({heads} over {kv} key/value heads) can only be "
                        "removed with their key/value head here (the analysis found no repeat_kv it can rewrite); "
                        "use kv_heads=")
                continue
            per_module[pattern] = fraction
        if not self.uniform:
            plan = _ranked_across_layers(scored, per_module)
        else:
            plan = plan_from_scored(topk_mask(0.0, per_module=per_module) if per_module else topk_mask(0.0), scored)
        if self.heads and grouped:
            plan = _within_groups(plan, scored, fam, heads // kv - int(heads // kv * self.heads), self)
        return _valid_counts(plan, scored, fam, config) if self.valid_config else plan

    def _tied_heads(self, scored: Scored, fam: Family, config: Any) -> Plan:
        """LayerNorm families, approximate: heads and hidden pruned together, hidden = heads x head size."""
        name = config.model_type
        if fam.attention is None:
            raise UnsupportedModelError(f"{name}'s heads are not pruned by fprune.hf yet (a fused projection whose "
                                        "per-head slices are refused), and its class ties hidden to heads; prune mlp")
        if not self.uniform:
            raise InvalidArgumentError(f"{self!r}: on {name} heads and hidden are pruned together, the same in every "
                                       "layer; uniform=False is for mlp, kv_heads and RMSNorm families")
        heads = int(getattr(config, fam.heads))
        hidden = int(getattr(config, fam.hidden))
        size = hidden // heads
        fraction = self.heads or self.kv_heads
        if fraction and self.hidden:
            raise InvalidArgumentError(
                f"{self!r}: {name}'s class ties hidden = heads x head size ({hidden} = {heads} x {size}), so the "
                "hidden width follows the heads kept: give heads= or hidden=, not both")
        keep = heads - int(heads * fraction) if fraction else max(1, math.ceil((hidden - int(hidden * self.hidden)) / size))
        kinds = {"attention": (fam.attention, keep), "hidden": (fam.embed, keep * size)}
        masks = {n: torch.ones_like(v, dtype=torch.bool) for n, v in scored.scores.items()}
        for kind, (pattern, kept) in kinds.items():
            groups = matching(scored.analysis.groups, pattern)
            blocked = [g for g in groups if g.name not in scored.scores]
            if not groups or blocked:
                why = blocked[0].why_not(scored.options) if blocked else "no channel group matches " + pattern
                raise UnsupportedModelError(f"{self!r}: the {kind} of this {name} cannot be pruned: {why}")
            for g in groups:
                masks[g.name] = _prune_lowest(scored.scores[g.name], g.size - kept)
        for pattern in fam.hidden_like:  # as wide as hidden in the class: as many kept, by their own scores
            for g in matching(scored.analysis.groups, pattern):
                if g.name not in scored.scores:
                    raise UnsupportedModelError(f"{self!r}: {g.name!r}, which {name}'s class builds as wide as the "
                                                f"hidden width, cannot be pruned: {g.why_not(scored.options)}")
                masks[g.name] = _prune_lowest(scored.scores[g.name], g.size - keep * size)
        if self.mlp:
            for g in matching(scored.analysis.groups, fam.mlp_in):
                if g.name in scored.scores:
                    masks[g.name] = _prune_lowest(scored.scores[g.name], int(g.size * self.mlp))
        return Plan(scored.analysis, MappingProxyType(masks), scored.options)


def _within_groups(plan: Plan, scored: Scored, fam: Family, rep: int, stage: Widths) -> Plan:
    """Each attention group's mask over its query heads: `rep` kept in every key/value head kept."""
    assert fam.attention is not None
    masks = dict(plan.masks)
    for group in matching(scored.analysis.groups, fam.attention):
        if rep == group.subunits:
            warnings.warn(FpruneWarning(
                f"{stage!r} removes no query head: each key/value head has {group.subunits} query heads, and "
                f"int({group.subunits} * {stage.heads}) = 0; give a larger fraction"), stacklevel=4)
            return plan
        units = masks.get(group.name, torch.ones(group.size, dtype=torch.bool))
        masks[group.name] = _per_unit(scored, group, units, rep)
    return Plan(plan.analysis, MappingProxyType(masks), plan.options)


def _per_unit(scored: Scored, group: ChannelGroup, units: Tensor, rep: int) -> Tensor:
    """A mask over `group`'s query heads: in each key/value head that `units` keeps, its `rep` best."""
    fine = scored.subunit_scores[group.name].reshape(group.size, group.subunits)
    keep = torch.stack([_prune_lowest(row, group.subunits - rep) for row in fine])
    return (keep & units[:, None]).reshape(-1)


def _valid_counts(plan: Plan, scored: Scored, fam: Family, config: Any) -> Plan:
    """Keeps more heads, then more hidden channels, where the config's own checks refuse a count.

    transformers validates a config when it is saved or loaded (Llama's: ``hidden_size`` a multiple
    of ``num_attention_heads``, even with an explicit ``head_dim``): each layer's kept count of a
    width is raised to the next one the config accepts (the unpruned count always is).  A head
    count is accepted with the hidden width the plan keeps, or else with the full one, the hidden
    width then raised in its turn.
    """
    masks = dict(plan.masks)
    raised: dict[str, list[str]] = {}
    hidden = [int(m.sum()) for g in matching(scored.analysis.groups, fam.embed)
              if (m := masks.get(g.name)) is not None and not bool(m.all())]
    planned = {"hidden": max(hidden)} if hidden else {}  # the hidden width the plan keeps
    chosen: dict[str, int] = {}
    for kind, pattern in (("attention", fam.attention), ("hidden", fam.embed)):
        if pattern is None:
            continue
        for group in matching(scored.analysis.groups, pattern):
            mask = masks.get(group.name)
            if mask is None or bool(mask.all()):
                continue
            if group.subunits > 1 and mask.numel() > group.size:  # query heads within key/value heads
                _valid_subunits(masks, scored, group, fam, config, chosen, raised, planned)
                continue
            keep = int(mask.sum())
            while keep < group.size and not _accepts(config, fam, {**chosen, kind: keep}, planned):
                keep += 1
            if keep != int(mask.sum()):
                raised.setdefault(kind, []).append(f"{group.name}: {int(mask.sum())} -> {keep}")
                masks[group.name] = _prune_lowest(scored.scores[group.name], group.size - keep)
            chosen[kind] = max(chosen.get(kind, 0), keep)
    if not raised:
        return plan
    for kind, changes in raised.items():
        warnings.warn(FpruneWarning(
            f"fprune.hf.widths kept more {kind} units than asked, so that {type(config).__name__} accepts the "
            f"result (its validation, e.g. hidden_size a multiple of num_attention_heads): {'; '.join(changes)}"),
            stacklevel=3)
    return Plan(plan.analysis, MappingProxyType(masks), plan.options)


def _accepts(config: Any, fam: Family, counts: Mapping[str, int], planned: Mapping[str, int]) -> bool:
    """Whether the config takes these head counts with the hidden width the plan keeps (3072 of 4096
    takes 24 heads), or with the full one (the hidden width is then raised to fit, after)."""
    return config_accepts(config, fam, {**planned, **counts}) or config_accepts(config, fam, counts)


def _valid_subunits(masks: dict[str, Tensor], scored: Scored, group: ChannelGroup, fam: Family, config: Any,
                    chosen: dict[str, int], raised: dict[str, list[str]], planned: Mapping[str, int]) -> None:
    """_valid_counts for a mask over query heads: more query heads per key/value head until accepted."""
    per = masks[group.name].reshape(group.size, group.subunits)
    units, rep = per.any(1), int(per.sum(1).max())
    kept = rep
    while kept < group.subunits and not _accepts(
            config, fam, {**chosen, "attention": int(units.sum()), "query": int(units.sum()) * kept}, planned):
        kept += 1
    if kept != rep:
        raised.setdefault("query head", []).append(f"{group.name}: {rep} -> {kept} per key/value head")
        masks[group.name] = _per_unit(scored, group, units, kept)
    chosen["attention"] = max(chosen.get("attention", 0), int(units.sum()))
    chosen["query"] = max(chosen.get("query", 0), int(units.sum()) * kept)


def _ranked_across_layers(scored: Scored, per_module: Mapping[str, float]) -> Plan:
    """Each width's groups (one per layer) ranked jointly: the fraction is of that width in all layers."""
    masks = {name: torch.ones_like(s, dtype=torch.bool) for name, s in scored.scores.items()}
    for pattern, fraction in per_module.items():
        names = [g.name for g in matching(scored.analysis.groups, pattern)]
        masks |= global_topk_mask(fraction).select_many({n: scored.scores[n] for n in names})
    return Plan(scored.analysis, MappingProxyType(masks), scored.options)


def widths(heads: float = 0.0, kv_heads: float = 0.0, mlp: float = 0.0, hidden: float = 0.0, *,
           uniform: bool = True, valid_config: bool = True) -> Widths:
    """A mask stage removing the same fraction of each width in every layer (the lowest scores).

    ``kv_heads`` removes whole key/value heads, with the query heads that read them (grouped-query
    attention); on a model with one key/value head per query head, ``heads`` and ``kv_heads``
    name the same width.  On grouped-query attention ``heads`` removes query heads evenly within
    each key/value head: each keeps ``r - int(r * heads)`` of its ``r`` query heads (the lowest
    of ``Scored.subunit_scores`` go), so the class still repeats every key/value head alike; with
    ``kv_heads`` too, the key/value heads are chosen first and ``heads`` applies to those kept.
    ``mlp`` is the intermediate width, ``hidden`` the residual stream
    (exact on RMSNorm families).  Every layer has the same widths, so each keeps the same count
    (``n - int(n * fraction)``, at least one), and the model's standard class can hold the result.

    With ``uniform=False`` each width is ranked across all layers at once
    (:func:`~fprune.masks.global_topk_mask`, scores divided by each layer's mean): the fraction is
    of that width summed over the layers, and each layer keeps its own count (at least one).  The
    standard class cannot hold such a model: :func:`apply` needs ``uniform=False`` too, and
    :func:`fprune.hf.save` / :func:`fprune.hf.load` store and rebuild it (plain
    ``from_pretrained`` refuses its mismatched shapes).

    Counts the config's own validation refuses (Llama's ``hidden_size`` a multiple of the head
    count) are raised to the next it accepts, with a warning.  ``valid_config=False`` keeps the
    counts asked for: the plan is then for :func:`fprune.apply_patterns` (an ExportedProgram that
    computes the pruned function), not for :func:`apply`.

    Raises:
        InvalidArgumentError: a fraction outside ``[0, 1)``; when the stage runs, ``heads`` and
            ``kv_heads`` both given for a model with a key/value head per query head, or query heads
            within key/value heads with ``uniform=False``.
        UnsupportedModelError: when the stage runs, a width asked for that this family's graph keeps
            whole (the reason is the analysis's).

    Example:
        >>> widths(mlp=0.5)
        widths(mlp=0.5)
    """
    values = {"heads": heads, "kv_heads": kv_heads, "mlp": mlp, "hidden": hidden}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise InvalidArgumentError(
                f"fprune.hf.widths expects {name} as a fraction to remove in [0, 1), got {value!r}; "
                "0 keeps the width, 0.5 removes half of it (at least one is always kept)")
    for name, flag in (("uniform", uniform), ("valid_config", valid_config)):
        if not isinstance(flag, bool):
            raise InvalidTypeError(f"fprune.hf.widths expects {name} as a bool, got {flag!r}")
    return Widths(float(heads), float(kv_heads), float(mlp), float(hidden), uniform, valid_config)


def apply(plan: Plan, model: nn.Module | None = None, *, check: bool = True, uniform: bool = True) -> nn.Module:
    """The pruned model in its own class, with its config updated; `model` is not modified.

    The plan must keep the same widths in every layer (:func:`widths` does), unless `uniform` is
    False: then the config holds each width's largest count, ``config.fprune_layer_widths`` lists
    every layer's own (one dict of config fields per layer), and each layer's tensors have its
    shapes; save it with :func:`fprune.hf.save` and read it back with :func:`fprune.hf.load`.  The
    new model is built on the meta device and filled with the pruned tensors
    (``load_state_dict(assign=True)``);
    tensors the plan leaves whole are copied, so the two models share no storage.  With `check`
    (and real weights), the new model is run on the tracing inputs and compared with the pruned
    program, which is exact by construction: a family entry that does not describe the class
    raises rather than returning a different function.

    Args:
        plan: a plan for a program from :func:`trace` (or an ExportedProgram of `model`).
        model: the model the program was exported from; found by itself for :func:`trace`'s programs.
        check: compare the rebuilt model's output with the pruned program's.
        uniform: refuse per-layer widths (a plan of ``widths(..., uniform=False)`` needs False).

    Raises:
        InvalidTypeError: `plan` is not a Plan of an ExportedProgram.
        UnsupportedModelError: per-layer widths differ, a width the config cannot express is pruned,
            or the rebuilt model's output differs from the pruned program's.
    """
    from fprune.rewrite import apply_patterns

    if not isinstance(plan, Plan):
        raise InvalidTypeError(f"fprune.hf.apply expects a Plan (e.g. fprune.hf.widths(mlp=0.5)(score_l1(program))), "
                               f"got {type(plan).__name__}")
    source = _source(plan.analysis.source, model)
    model = source.model
    fam = family(model)
    config = copy.deepcopy(model.config)
    if not isinstance(uniform, bool):
        raise InvalidTypeError(f"fprune.hf.apply expects uniform as a bool, got {uniform!r}")
    kept, per_layer = kept_widths(plan, fam, model.config, uniform)
    if not config_accepts(model.config, fam, kept):
        raise UnsupportedModelError(
            f"the widths this plan keeps ({kept}) make a {type(model.config).__name__} that its own validation "
            "refuses (so save_pretrained and from_pretrained would fail); fprune.hf.widths rounds counts to "
            "valid ones: use it, or keep e.g. a head count that divides hidden_size")
    edit_config(config, fam, model.config, kept, per_layer)
    small = apply_patterns(plan)
    assert isinstance(small, ExportedProgram)
    rebuilt = _rebuild(model, config, small, reshape=bool(per_layer))
    if check and not any(p.is_meta for p in rebuilt.parameters()):
        _check_same(rebuilt, small, source.kwargs)
    return rebuilt


# --------------------------------------------------------------------------------------


def _source(lifted: Any, model: nn.Module | None) -> _Source:
    program = getattr(lifted, "program", None)
    if not isinstance(program, ExportedProgram):
        raise InvalidTypeError("fprune.hf works on programs from fprune.hf.trace(model); these scores or this plan "
                               "come from a torch.fx trace")
    if model is not None:
        _check_model(model)
        known = _SOURCES.get(program)
        return _Source(model, known.kwargs if known is not None else {})
    found = _SOURCES.get(program)
    if found is None:
        raise InvalidArgumentError("fprune.hf cannot tell which model this program was exported from: trace it with "
                                   "fprune.hf.trace(model), or pass the model: fprune.hf.apply(plan, model)")
    return found


def _rebuild(model: nn.Module, config: Any, small: ExportedProgram, *, reshape: bool = False) -> nn.Module:
    read = {n.name for n in small.graph.nodes if n.op == "placeholder" and n.users}
    used = {spec.target for spec in small.graph_signature.input_specs if spec.target and spec.arg.name in read}
    state = {k: v for k, v in small.state_dict.items() if k in used}
    # a tied tensor has one name in the program: its other names (the embedding's) take the same value
    for aliases in tied_names(model):
        known = next((n for n in aliases if n in state), None)
        for n in aliases:
            if known is not None and n not in state:
                state[n] = state[known]
    originals = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers()) if not t.is_meta}
    for name, t in state.items():  # no storage shared with the original model
        if not t.is_meta and t.data_ptr() in originals:
            state[name] = nn.Parameter(t.detach().clone(), t.requires_grad) if isinstance(t, nn.Parameter) \
                else t.detach().clone()
    with torch.device("meta"):
        new = type(model)(config)
    _fit_shapes(new, state, reshape)
    missing, unexpected = new.load_state_dict(state, strict=False, assign=True)
    tie = getattr(new, "tie_weights", None)
    if callable(tie):
        tie()
    still = [n for n, p in new.named_parameters() if p.is_meta and n in missing]
    if unexpected or still:
        raise UnsupportedModelError(
            f"the pruned tensors do not fit a {type(model).__name__} built from the new config: missing "
            f"{still}, unexpected {unexpected}")
    old_buffers = dict(model.named_buffers())
    for name, buf in list(new.named_buffers()):
        if not buf.is_meta:
            continue
        old = small.constants.get(name, old_buffers.get(name))
        if not isinstance(old, Tensor) or old.shape != buf.shape:
            raise UnsupportedModelError(f"the buffer {name!r} of the rebuilt model has no value of shape "
                                        f"{tuple(buf.shape)} to take from the original")
        owner, _, leaf = name.rpartition(".")
        module = new.get_submodule(owner)
        persistent = leaf not in module._non_persistent_buffers_set
        module.register_buffer(leaf, old.detach().clone(), persistent=persistent)
    new.train(model.training)
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    return new


def _fit_shapes(new: nn.Module, state: Mapping[str, Tensor], reshape: bool) -> None:
    """Gives `new`'s parameters the shapes of `state` (per-layer widths), or raises on a mismatch."""
    for name, param in list(new.named_parameters()):
        value = state.get(name)
        if value is None or value.shape == param.shape:
            continue
        if not reshape:
            raise UnsupportedModelError(
                f"the pruned {name!r} has shape {tuple(value.shape)} but a {type(new).__name__} built from the new "
                f"config expects {tuple(param.shape)}: fprune.hf's table does not describe this class; please "
                "report it, and use the pruned ExportedProgram (apply_patterns) meanwhile")
        set_parameter(new, name, nn.Parameter(torch.empty(value.shape, dtype=param.dtype, device="meta"),
                                              param.requires_grad))


def _main(out: Any) -> Tensor:
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if isinstance(value, Tensor):
            return value
    first = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(first, Tensor):
        raise UnsupportedModelError(f"cannot read a tensor output from {type(out).__name__}")
    return first


def _check_same(new: nn.Module, small: ExportedProgram, kwargs: Mapping[str, Any]) -> None:
    if not kwargs:
        return
    with torch.no_grad():
        got, expected = _main(new(**kwargs)), _main(small.module()(**kwargs))
    eps = torch.finfo(expected.dtype).eps if expected.is_floating_point() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((got - expected).abs().max()) if expected.numel() else 0.0
    if got.shape != expected.shape or not math.isfinite(error) or error > 1e3 * eps * max(scale, 1.0):
        raise UnsupportedModelError(
            f"the rebuilt {type(new).__name__} does not compute the pruned program's function (max abs "
            f"difference {error:.3g} on the tracing input, shapes {tuple(got.shape)} vs {tuple(expected.shape)}): "
            "fprune.hf's table does not describe this class; please report it, and use the pruned "
            "ExportedProgram (apply_patterns) meanwhile")
