"""Scored and Plan values: a model's channel groups with their scores, then their keep-masks.

``score_l1(model)`` returns a :class:`Scored`; ``topk_mask(0.5)(scored)``
returns a :class:`Plan`; :func:`fprune.apply_patterns` consumes the Plan.
A Plan's portable form is JSON (``fprune.plan/1``), read back with
:func:`load_plan`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from toolz import pipe
    >>> from fprune import score_l1, topk_mask, load_plan
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> plan = pipe(net, score_l1, topk_mask(0.5))
    >>> plan
    Plan(pruned={'0': '3/6'})
    >>> load_plan(plan.to_json(), net).to_json() == plan.to_json()
    True
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fprune.errors import (
    FpruneWarning,
    InvalidMaskError,
    InvalidTypeError,
    PlanFormatError,
    PlanMismatchError,
    UnprunableError,
    UnsupportedModelError,
)
from fprune.analysis import DEFAULT_OPTIONS, Analysis, ChannelGroup, Options, analyze
from fprune.analysis.resolve import applied_masks, check_subunits, group_masks, index_maps
from fprune.planfile import FORMAT, VALUES, describe_dims, named_values, parse_plan, read_saved, reconstruction_of
from fprune.scores import _check_scorer, score_tensor, unit_rows
from fprune.slicing import GATES, spec_for
from fprune.types import Mask, MaskFn, Scorer, Scores, register_stage

if TYPE_CHECKING:
    from torch.export import ExportedProgram
    from torch.fx import GraphModule

__all__ = ["Scored", "Plan", "ScoreStage", "score_model", "score_with", "plan_from_scored", "load_plan", "FORMAT",
           "VALUES"]



@dataclass(frozen=True, eq=False)
class Scored:
    """Scores for every prunable channel group of one model."""

    analysis: Analysis  # the traced graph and its channel groups
    scores: Mapping[str, Scores]  # group name (its first producer's fqn) -> one score per channel
    scorer: Scorer | Callable[[Any], Scored]  # the rule that produced them (or a calibration scorer)
    options: Options = DEFAULT_OPTIONS  # what counted as prunable
    # group name -> one score per sub-unit, for groups that may lose single query heads within their
    # key/value heads (ChannelGroup.subunits > 1): what fprune.hf.widths(heads=...) ranks
    subunit_scores: Mapping[str, Scores] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def graph(self) -> GraphModule:
        """The traced model the scores belong to."""
        return self.analysis.graph

    def __repr__(self) -> str:
        return f"Scored(scorer={self.scorer!r}, groups={list(self.scores)})"


@dataclass(frozen=True, eq=False)
class Plan:
    """An immutable pruning plan: the model it was computed for, its groups and one keep-mask per group."""

    analysis: Analysis  # the traced graph and its channel groups
    masks: Mapping[str, Mask]  # group name -> keep-mask (True = keep); groups absent are kept whole
    options: Options = DEFAULT_OPTIONS  # semantics the rewrite uses
    # new values of tensors of the pruned model (public name -> tensor of the pruned shape), set by
    # fprune.reconstruct: the pruned model is then no longer the zeroed original
    values: Mapping[str, Tensor] = field(default_factory=lambda: MappingProxyType({}))
    # layer -> (relative output error on the calibration batches before, after re-solving it), set
    # by fprune.reconstruct and shown by fprune.summary
    reconstruction: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def model(self) -> GraphModule:
        """The traced model the plan was computed for."""
        return self.analysis.graph

    @property
    def groups(self) -> tuple[ChannelGroup, ...]:
        """Every channel group of the model, prunable or not."""
        return self.analysis.groups

    def __repr__(self) -> str:
        pruned = {k: f"{int(m.sum())}/{m.numel()}" for k, m in self.masks.items() if not bool(m.all())}
        values = f", values={len(self.values)}" if self.values else ""
        return f"Plan(pruned={pruned}{values})"

    def params(self) -> dict[str, list[dict[str, Any]]]:
        """Every parameter and buffer whose shape changes: fqn -> [{"dim", "keep"}], keep sorted."""
        by_group = {self.analysis.by_producer[k]: m.detach().cpu() for k, m in self.masks.items() if not bool(m.all())}
        for g, mask in by_group.items():
            if self.analysis.is_fine(g, mask):
                check_subunits(self.analysis, g, mask, f"the plan's mask for {self.analysis.groups[g].name!r}")
        by_group = applied_masks(self.analysis, by_group, self.options)  # fold_bias may keep groups whole
        found: list[tuple[tuple[int, int, str], str, list[dict[str, Any]]]] = []
        place = _first_reads(self.analysis)
        for module, index in index_maps(self.analysis, by_group).items():
            for tensor, dims in index.items():
                entries = [
                    {"dim": d, "keep": keep.nonzero().squeeze(1).tolist()}
                    for d, keep in sorted(dims.items())
                    if not bool(keep.all())
                ]
                if entries:  # root tensors: no prefix; a lifted program's tensors: the program's own names
                    fqn = f"{module}.{tensor}" if module else tensor
                    within = len(found) if module in self.analysis.roles else _TENSOR_ORDER.get(tensor, 2)
                    key = (_place(place, module), within, tensor if module not in self.analysis.roles else "")
                    found.append((key, self.analysis.public_name(fqn), entries))
        # One order whatever the front-end: modules by the first node that reads them; a module's
        # tensors in its slicing order, which tensors read directly follow (a BatchNorm is a module
        # call under torch.export, get_attr reads under torch.fx: weight, bias, then by name).
        return {name: entries for _, name, entries in sorted(found, key=lambda f: f[0])}

    def to_json(self) -> str:
        """The portable form: ``{"format": "fprune.plan/1", "params": {...}}``.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from fprune import apply_patterns, load_plan
            >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
            >>> plan = load_plan('{"format": "fprune.plan/1", "params": {"0.weight": [{"dim": 0, "keep": [0, 2]}],'
            ...                  ' "0.bias": [{"dim": 0, "keep": [0, 2]}], "2.weight": [{"dim": 1, "keep": [0, 2]}]}}', net)
            >>> apply_patterns(plan).get_submodule("2").in_features
            2
        """
        if self.values:
            raise PlanFormatError(
                f"this plan carries {len(self.values)} reconstructed tensors (fprune.reconstruct), which the JSON "
                "form does not hold: it would replay the masks only. Use plan.save(directory), which writes "
                "plan.json and values.safetensors, and load_plan(directory, model)")
        return json.dumps({"format": FORMAT, "params": self.params()})

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Writes ``plan.json`` (the JSON form) and, if the plan carries values, ``values.safetensors``.

        ``load_plan(directory, model)`` reads both back: applying that plan to a fresh copy of the
        model gives the same pruned model, bit for bit.  The directory is created if missing; each
        file is written beside its final name and renamed onto it.

        Example:
            >>> import tempfile
            >>> from torch import nn
            >>> from fprune import score_l1, topk_mask
            >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
            >>> folder = tempfile.mkdtemp()
            >>> topk_mask(0.5)(score_l1(net)).save(folder)
            >>> load_plan(folder, net)
            Plan(pruned={'0': '3/6'})
        """
        from fprune.tensorfile import save_tensors

        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": FORMAT, "params": self.params(),
                           **({"values": VALUES} if self.values else {}),
                           **({"reconstruction": dict(self.reconstruction)} if self.reconstruction else {})})
        tmp = root / f".plan.json.tmp-{os.getpid()}"
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(root / "plan.json")
        if self.values:
            save_tensors(root / VALUES, dict(self.values), {"format": FORMAT})
        elif (root / VALUES).exists():
            (root / VALUES).unlink()  # a stale file from an earlier save would not match this plan


@register_stage("score_model")
def score_model(scorer: Scorer, model: nn.Module | ExportedProgram, options: Options = DEFAULT_OPTIONS) -> Scored:
    """Lifts a scorer to a model: one score vector per prunable channel group.

    Groups that cannot be pruned under `options` are left out, with one
    :class:`fprune.errors.FpruneWarning` naming each and saying why; under
    ``Options(strict=True)`` a group left out because an op the analysis has
    no rule for reads its channels (a block of kind ``"unknown"``) is an
    error instead, while groups reaching the output or not removable exactly
    (kinds ``"output"``, ``"inexact"``) still only warn.  A group
    coupling several producers (a residual add) sums their scores.  An LSTM
    unit's score combines its rows in all four gates and every layer.  A
    ``source="norm"`` scorer reads the per-channel scale of the group's
    normalisation layers; groups without one are left out.  Does not modify
    the model.

    Example:
        >>> from torch import nn
        >>> from fprune import score_l2
        >>> from fprune.groups import Options
        >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> list(score_model(score_l2, net, Options(prune_outputs=True)).scores)
        ['0', '2']

    Raises:
        UnsupportedModelError: under ``strict``, an op without a rule reads the channels of
            some group; the message names every such group, node and op.
        InvalidTypeError, TraceError: `model` is not a module, or cannot be traced.
    """
    return score_analysis(scorer, analyze(model), options)


def score_analysis(scorer: Scorer, analysis: Analysis, options: Options = DEFAULT_OPTIONS,
                   modules: Mapping[str, nn.Module] | None = None) -> Scored:
    """:func:`score_model` on an analysis already made; `modules` may supply the modules read
    (by name), e.g. loaded one at a time from a checkpoint, in place of the analysed graph's."""
    if options.strict:
        _refuse_unknown(analysis)
    modules = dict(analysis.graph.named_modules()) if modules is None else modules
    scores: dict[str, Scores] = {}
    fine: dict[str, Scores] = {}
    skipped: list[str] = []
    for group in analysis.groups:
        if not group.prunable(options):
            skipped.append(f"{group.name!r} ({group.why_not(options)})")
            continue
        parts = (
            _norm_scores(scorer, analysis, group, modules)
            if scorer.source == "norm"
            else [_producer_scores(scorer, name, modules[name], _stages(analysis, name)) for name in group.producers]
        )
        if not parts:
            skipped.append(f"{group.name!r} (no normalisation layer reads these channels, so {scorer!r} has no scale)")
            continue
        scores[group.name] = _summed(parts)
        if group.subunits > 1 and scorer.source != "norm":
            fine[group.name] = _summed([_subunit_part(scorer, analysis, group, name, modules[name], part)
                                        for name, part in zip(group.producers, parts)])
    if skipped:
        warnings.warn("left unpruned: " + "; ".join(skipped), FpruneWarning, stacklevel=3)
    return Scored(analysis, MappingProxyType(scores), scorer, options, MappingProxyType(fine))


def _summed(parts: list[Scores]) -> Scores:
    total = parts[0]
    for part in parts[1:]:
        total = total + part.to(total.dtype)
    return total


def _subunit_part(scorer: Scorer, analysis: Analysis, group: ChannelGroup, name: str, module: Any,
                  unit_scores: Scores) -> Scores:
    """A producer's scores per sub-unit (query head): its own rows at that level, or its unit's score
    for each of the unit's sub-units (a key/value projection)."""
    level = _level(analysis, name)
    if level is None:
        return unit_scores.repeat_interleave(group.subunits)
    return _producer_scores(scorer, name, module, _stages(analysis, name)[:level])


_TENSOR_ORDER = {"weight": 0, "bias": 1}


def _first_reads(analysis: Analysis) -> dict[str, int]:
    """Module name -> position of the first graph node that calls it or reads one of its tensors."""
    place: dict[str, int] = {}
    for i, node in enumerate(analysis.graph.graph.nodes):
        if node.op == "call_module":
            place.setdefault(str(node.target), i)
        elif node.op == "get_attr":
            place.setdefault(str(node.target).rpartition(".")[0], i)
    return place


def _place(place: Mapping[str, int], module: str) -> int:
    """A module's position in `place`; a submodule the graph never reads (an fx leaf's out_proj) takes its parent's."""
    while module not in place and module:
        module = module.rpartition(".")[0]
    return place.get(module, len(place))


def _refuse_unknown(analysis: Analysis) -> None:
    """Raises naming every group blocked by an op the analysis does not understand (strict mode)."""
    found = [
        f"group {group.name!r}: {block.message}"
        for group in analysis.groups
        for block in group.blocks
        if block.kind == "unknown"
    ]
    if found:
        raise UnsupportedModelError(
            f"strict=True: fprune has no exact rule for an op that reads pruned channels, in "
            f"{len(found)} place(s): " + "; ".join(found) + ". Fix: restructure the model so that no such op "
            "reads these channels, or score without strict=True to leave these groups unpruned with a warning."
        )


@dataclass(frozen=True, repr=False)
class ScoreStage:
    """A scorer lifted to models under fixed options; build it with :func:`score_with`."""

    scorer: Scorer  # the rule scoring each group
    options: Options = DEFAULT_OPTIONS  # what counts as prunable; carried on to the Plan and the rewrite

    def __post_init__(self) -> None:
        _check_scorer(self.scorer, "score_with")
        if not isinstance(self.options, Options):
            raise InvalidTypeError(
                f"ScoreStage expects options to be an fprune.Options; got {type(self.options).__name__}. "
                "Fix: build it with score_with(scorer, prune_outputs=True, ...)."
            )

    def __call__(self, model: nn.Module | ExportedProgram) -> Scored:
        """``score_model(scorer, model, options)``: one score vector per prunable group."""
        return score_model(self.scorer, model, self.options)

    def __repr__(self) -> str:
        switches = [
            f"{f.name}={getattr(self.options, f.name)!r}"
            for f in fields(Options)
            if getattr(self.options, f.name) != getattr(DEFAULT_OPTIONS, f.name)
        ]
        return f"score_with({', '.join([repr(self.scorer), *switches])})"


def score_with(
    scorer: Scorer,
    *,
    prune_outputs: bool = False,
    approximate: bool = False,
    fold_bias: bool = False,
    strict: bool = False,
) -> ScoreStage:
    """A scorer bound to :class:`fprune.Options`: a pipeline stage ``model -> Scored``.

    ``score_with(scorer, **switches)(model)`` is
    ``score_model(scorer, model, Options(**switches))``; the options travel
    with the ``Scored`` value to the ``Plan`` and :func:`fprune.apply_patterns`,
    so a pipeline needs them once.  Does not modify the model.

    Args:
        scorer: a :class:`fprune.Scorer` such as ``score_l1``.
        prune_outputs: channels reaching the model output may be pruned.
        approximate: groups whose removal is not exact (LayerNorm over them) may be pruned.
        fold_bias: removed channels' ``act(bias)`` is folded into the consumers.
        strict: an op the analysis does not understand reading a group's channels raises
            :class:`fprune.errors.UnsupportedModelError` instead of a warning.

    Returns:
        A frozen :class:`ScoreStage`; ``repr`` reads like the call.

    Raises:
        InvalidTypeError: `scorer` is not a Scorer, or a switch is not a bool.

    Example:
        >>> from torch import nn
        >>> from toolz import pipe
        >>> from fprune import apply_patterns, score_l1, topk_mask
        >>> stage = score_with(score_l1, prune_outputs=True, strict=True)
        >>> stage
        score_with(score_l1, prune_outputs=True, strict=True)
        >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4))
        >>> pipe(net, stage, topk_mask(0.5), apply_patterns).get_submodule("2").out_features
        2
    """
    switches = {"prune_outputs": prune_outputs, "approximate": approximate, "fold_bias": fold_bias, "strict": strict}
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise InvalidTypeError(
                f"score_with expects {name} to be a bool; got {type(value).__name__} ({value!r}). "
                f"Fix: pass {name}=True or {name}=False."
            )
    return ScoreStage(scorer, Options(**switches))


def _stages(analysis: Analysis, producer: str) -> tuple[tuple[int, int], ...]:
    space = analysis.roles[producer].out_space
    return analysis.space_stages[space] if space is not None and analysis.space_stages else ()


def _level(analysis: Analysis, producer: str) -> int | None:
    """How many of a producer's stages lead down to its group's sub-units (query heads), if any."""
    space = analysis.roles[producer].out_space
    return analysis.space_fine[space] if space is not None and analysis.space_fine else None


def _untile(rows: Tensor, stages: tuple[tuple[int, int], ...]) -> Tensor:
    """Regroups the rows of a space split into heads: one row per head, holding all its rows."""
    for inner, outer in stages:
        k = rows.shape[1]
        rows = rows.reshape(outer, -1, inner, k).permute(1, 0, 2, 3).reshape(-1, outer * inner * k)
    return rows


def _untile_mask(keep: Tensor, stages: tuple[tuple[int, int], ...]) -> Tensor:
    for inner, outer in stages:
        keep = keep.reshape(outer, -1, inner)[0, :, 0]
    return keep


def _producer_scores(scorer: Scorer, name: str, module: Any, stages: tuple[tuple[int, int], ...] = ()) -> Scores:
    if stages:
        source = spec_for(module).mask_source  # the tensor whose rows are the output channels
        weight = getattr(module, source[0] if source is not None else "weight")
        dim = source[1] if source is not None and source[0] == "weight" else 0  # the output channels' dim
        with torch.no_grad():
            rows = _untile(weight.detach().transpose(0, dim).flatten(1), stages)
            if scorer.needs_grad and weight.grad is not None:
                rows.grad = _untile(weight.grad.transpose(0, dim).flatten(1), stages)
        return score_tensor(scorer, rows, name=f"{name}.weight")
    source = spec_for(module).mask_source
    if source is not None and source[0] == "weight" and source[1] != 0 and not isinstance(module, nn.RNNBase):
        weight = module.weight  # Embedding, ConvTranspose: the channels are the weight's dim 1
        with torch.no_grad():
            rows = weight.detach().transpose(0, source[1])
            if scorer.needs_grad and weight.grad is not None:
                rows.grad = weight.grad.transpose(0, source[1])
        return score_tensor(scorer, rows, name=f"{name}.weight")
    if not isinstance(module, nn.RNNBase):
        return score_tensor(scorer, module.weight, name=f"{name}.weight")
    total: Tensor | None = None
    gates = GATES[module.mode]
    for tname, weight in module.named_parameters(recurse=False):
        if not tname.startswith("weight_"):
            continue
        with torch.no_grad():
            rows = unit_rows(weight.detach(), module.hidden_size, gates)
            if scorer.needs_grad and weight.grad is not None:
                rows.grad = unit_rows(weight.grad, module.hidden_size, gates)
        part = score_tensor(scorer, rows, name=f"{name}.{tname}")
        total = part if total is None else total + part
    assert total is not None
    return total


def _norm_scores(scorer: Scorer, analysis: Analysis, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> list[Scores]:
    parts = []
    for read in group_reads(analysis, group):
        weight = getattr(modules[read.module], "weight", None)
        if analysis.roles[read.module].out_space is not None or weight is None:
            continue
        rows = weight.detach()[read.offset:read.offset + read.width].reshape(read.channels, -1)
        parts.append(score_tensor(scorer, _untile(rows, read.stages), name=f"{read.module}.weight"))
    return parts


@dataclass(frozen=True)
class GroupRead:
    """One place a module reads a group's channels: a run of its input columns."""

    module: str  # the reading module's fqn
    offset: int  # its first input column holding the group's channels
    width: int  # the columns: ``channels * factor``
    channels: int  # the group's channels in this run
    factor: int  # columns per channel (a flatten after the producer)
    stages: tuple[tuple[int, int], ...]  # head tilings of the space (see ``_untile``)
    level: int | None = None  # of `stages`, how many lead down to the group's sub-units (query heads)


def group_reads(analysis: Analysis, group: ChannelGroup) -> Iterator[GroupRead]:
    """Every run of input columns through which a member of `group` reads its channels."""
    index = analysis.by_producer[group.name]
    for name in group.members:
        role = analysis.roles.get(name)
        if role is None or role.in_layout is None:
            continue
        offset, factor = 0, role.in_layout.factor or 1
        for seg in role.in_layout.segs:
            width = seg.size * factor
            if analysis.space_group[seg.space] == index:
                stages = analysis.space_stages[seg.space] if analysis.space_stages else ()
                level = analysis.space_fine[seg.space] if analysis.space_fine else None
                yield GroupRead(name, offset, width, seg.size, factor, stages, level)
            offset += width


@register_stage("plan_from_scored")
def plan_from_scored(mask_fn: MaskFn, scored: Scored) -> Plan:
    """Applies a mask rule to every scored group (global rules rank them jointly).

    The rule receives the score vectors keyed by group name.  fprune's own
    rules (``topk_mask``, ``threshold_mask``, ``global_topk_mask``) also
    receive the producers of every group of the model,
    ``select_many(scores, producers={group: (fqn, ...)})``, which
    ``topk_mask(per_module=...)`` matches its keys against; any other
    :class:`fprune.MaskFn` is called as ``select_many(scores)``.

    Example:
        >>> from torch import nn
        >>> from fprune import score_l1, topk_mask
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> plan_from_scored(topk_mask(0.25), score_l1(net))
        Plan(pruned={'0': '6/8'})
    """
    if not isinstance(scored, Scored):
        raise InvalidTypeError(
            f"{mask_fn!r} expects a score tensor or a Scored value (e.g. score_l1(model)), "
            f"got {type(scored).__name__}; score the model first: pipe(model, score_l1, {mask_fn!r})"
        )
    scores = dict(scored.scores)
    if getattr(mask_fn, "takes_producers", False) is True:  # fprune's rules may key on modules (per_module=)
        producers = {group.name: group.producers for group in scored.analysis.groups}
        rule: Any = mask_fn  # the MaskFn protocol's select_many has no `producers`
        masks = rule.select_many(scores, producers=producers)
    else:  # a user-written MaskFn: the plain protocol
        masks = mask_fn.select_many(scores)
    for name, mask in list(masks.items()):
        expected = scored.scores[name].numel()
        fine = scored.subunit_scores.get(name)
        lengths = (expected,) if fine is None else (expected, fine.numel())
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() not in lengths:
            raise InvalidMaskError(
                f"{mask_fn!r} returned a mask for {name!r} that is not a 1-D bool tensor of length "
                f"{' or '.join(map(str, lengths))}"
            )
        if fine is not None and mask.numel() == fine.numel():  # over query heads: checked, whole units made plain
            index = scored.analysis.by_producer[name]
            masks = {**masks, name: check_subunits(scored.analysis, index, mask, f"{mask_fn!r}'s mask for {name!r}")}
    return Plan(scored.analysis, MappingProxyType(dict(masks)), scored.options)


def load_plan(text: str | os.PathLike[str], model: nn.Module, options: Options = DEFAULT_OPTIONS) -> Plan:
    """Reads a plan's JSON form back, for `model` (a fresh copy of the same architecture).

    `text` is the JSON text, or a directory written by :meth:`Plan.save` (``plan.json``, and
    ``values.safetensors`` when the plan carries reconstructed values).

    Raises:
        PlanFormatError: `text` is not an ``fprune.plan/1`` document.
        PlanMismatchError: the plan names tensors the model lacks, or slices them differently
            than the model's channel groups require (a different architecture).

    Example:
        >>> from torch import nn
        >>> load_plan('{"format": "fprune.plan/1", "params": {}}', nn.Sequential(nn.Linear(2, 2)))
        Plan(pruned={})
    """
    values: dict[str, Tensor] = {}
    if isinstance(text, os.PathLike) or (isinstance(text, str) and text.strip() and "\n" not in text
                                         and not text.lstrip().startswith("{") and Path(text).is_dir()):
        text, values = read_saved(Path(text))
    elif isinstance(text, str) and named_values(text) is not None:
        raise PlanFormatError(
            f"this plan's reconstructed values are in {named_values(text)!r} beside its plan.json; pass the "
            "directory Plan.save wrote, load_plan(directory, model), so that they are read too")
    params = parse_plan(text)
    analysis = analyze(model)
    modules = dict(analysis.graph.named_modules())
    state = {analysis.public_name(k): v for k, v in
             (dict(analysis.graph.named_parameters()) | dict(analysis.graph.named_buffers())).items()}
    for fqn, entries in params.items():
        if fqn not in state:
            raise PlanMismatchError(
                f"the plan slices {fqn!r}, which {type(model).__name__} does not have; "
                "load the plan into the architecture it was computed for"
            )
        shape = state[fqn].shape
        for entry in entries:
            dim, keep = entry["dim"], entry["keep"]
            if not 0 <= dim < len(shape):
                raise PlanMismatchError(
                    f"the plan slices dim {dim} of {fqn!r}, whose shape is {tuple(shape)} (dims 0 to "
                    f"{len(shape) - 1}); load the plan into the architecture it was computed for"
                )
            if keep and keep[-1] >= shape[dim]:
                raise PlanMismatchError(
                    f"the plan keeps indices up to {keep[-1] if keep else '-'} along dim {dim} of {fqn!r}, "
                    f"whose shape is {tuple(shape)}; load the plan into the architecture it was computed for"
                )
    masks: dict[str, Tensor] = {}
    for group in analysis.groups:
        for producer in sorted(group.producers, key=lambda p: _level(analysis, p) is None):  # query heads first
            source = spec_for(modules[producer]).mask_source
            assert source is not None
            source_entry: dict[str, Any] | None = next(
                (e for e in params.get(analysis.public_name(f"{producer}.{source[0]}"), [])
                 if e["dim"] == source[1]), None)
            if source_entry is not None:
                level = _level(analysis, producer)
                stages = _stages(analysis, producer)[:level]
                rows = getattr(modules[producer], source[0]).shape[source[1]] \
                    if stages or level is not None else group.size
                mask = torch.zeros(rows, dtype=torch.bool)
                mask[source_entry["keep"]] = True
                masks[producer] = _untile_mask(mask, stages)
                break
    try:
        by_group = group_masks(analysis, masks, options)
    except (InvalidMaskError, UnprunableError) as exc:
        raise PlanMismatchError(f"the plan does not fit this model under these options: {exc}") from exc
    plan = Plan(analysis, MappingProxyType({analysis.groups[i].name: m for i, m in by_group.items()}), options)
    rebuilt = plan.params()
    if rebuilt != params:
        diff = sorted(k for k in set(rebuilt) | set(params) if rebuilt.get(k) != params.get(k))
        found, expected = (describe_dims(src.get(diff[0])) for src in (params, rebuilt))
        raise PlanMismatchError(
            f"the plan slices {diff[0]!r} differently than the channel groups of {type(model).__name__} "
            f"require (expected {expected}, found {found}; every differing tensor: {', '.join(diff)}); "
            "it was computed for another architecture, or some of its entries are missing"
        )
    if values:
        _check_values(plan, values, state)
        plan = Plan(plan.analysis, plan.masks, plan.options, MappingProxyType(values),
                    MappingProxyType(reconstruction_of(text)))
    return plan


def _check_values(plan: Plan, values: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> None:
    """Each value names a tensor of the model and has that tensor's shape after pruning."""
    params = plan.params()
    for name, value in values.items():
        if name not in state:
            raise PlanMismatchError(f"the plan's values name {name!r}, which {type(plan.model).__name__} does not "
                                    "have; load the plan into the architecture it was computed for")
        shape = list(state[name].shape)
        for entry in params.get(name, []):
            shape[entry["dim"]] = len(entry["keep"])
        if list(value.shape) != shape:
            raise PlanMismatchError(f"the plan's value for {name!r} has shape {tuple(value.shape)}; pruned, the "
                                    f"model's tensor has {tuple(shape)}")
