"""apply_patterns: (graph, keep-masks) -> a new, physically smaller GraphModule.

Pre-conditions: the channel analysis (:mod:`fprune.analysis`) found the groups;
each pruned group is prunable under the options.  Post-conditions: the
result is a new GraphModule that shares no Parameter or buffer with the
input; the input is unchanged; by default it computes the same function as
the input with every removed slice zeroed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune import apply_patterns
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> pruned = apply_patterns(net, {"0": torch.tensor([True, False, True, True, False, True])})
    >>> pruned.get_submodule("0").weight.shape, pruned.get_submodule("2").weight.shape
    (torch.Size([4, 4]), torch.Size([2, 4]))
    >>> net[0].weight.shape  # the input is untouched
    torch.Size([6, 4])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.fx import GraphModule

from fprune.analysis import Analysis, Options, analyze
from fprune.analysis.resolve import Rewrite, applied_masks, expand, group_masks, index_maps, plan_rewrite
from fprune.errors import InvalidTypeError, UnprunableError
from fprune.plan import Plan
from fprune.rewrite.export_backend import rebuild_program
from fprune.rewrite.graph_backend import apply_constants, rebuild_graph

__all__ = [
    "apply_patterns",
    "index_maps",
    "group_masks",
    "expand",
    "applied_masks",
    "plan_rewrite",
    "Rewrite",
    "apply_constants",
]


@overload
def apply_patterns(plan_or_model: ExportedProgram, masks: Mapping[str, Tensor] | None = ..., *,
                   fold_bias: bool | None = ..., prune_outputs: bool | None = ...,
                   approximate: bool | None = ...) -> ExportedProgram: ...


@overload
def apply_patterns(plan_or_model: Plan | nn.Module, masks: Mapping[str, Tensor] | None = ..., *,
                   fold_bias: bool | None = ..., prune_outputs: bool | None = ...,
                   approximate: bool | None = ...) -> GraphModule: ...


def apply_patterns(
    plan_or_model: Plan | nn.Module | ExportedProgram,
    masks: Mapping[str, Tensor] | None = None,
    *,
    fold_bias: bool | None = None,
    prune_outputs: bool | None = None,
    approximate: bool | None = None,
) -> GraphModule | ExportedProgram:
    """Returns a new, physically smaller GraphModule (or ExportedProgram); does not modify its input.

    Call it with a :class:`fprune.Plan` (``pipe(model, score_l1, topk_mask(0.5), apply_patterns)``)
    or with a model and keep-masks keyed by the fully-qualified name of each producing module
    (Linear, Conv, LSTM; for an LSTM the mask is over hidden units and removes the same unit from
    every gate and layer).  Every module whose channels are coupled to a masked producer is sliced
    consistently: BatchNorm statistics, the consumers' input columns (expanded through flatten),
    coupled producers of residual adds.

    By default the result computes exactly the function of the input with every removed slice set
    to zero.  With ``fold_bias=True`` (the reference's ``prune_bias=False``) a removed channel is
    replaced by the constant it emits once its weights are zero, ``act(bias)``, folded into the
    consumers' biases; where that is not exact (a consumer with zero padding, a normalisation or a
    residual in between) the group is kept at full size with the removed rows' weights zeroed, as
    the reference does, and a :class:`fprune.errors.FpruneWarning` says so.

    Args:
        plan_or_model: a Plan, or an ``nn.Module`` / GraphModule (traced with ``symbolic_trace``
            when it is not a GraphModule), or a ``torch.export.ExportedProgram``.  A plan computed on
            a program, or a program itself, gives a new ExportedProgram (same signature, sliced
            state, re-derived fake values); typed as GraphModule for a Plan, whose source the
            type does not say: ``isinstance`` tells.
        masks: with a model: producer name -> 1-D bool keep-mask.  Must be None with a Plan.
        fold_bias: fold removed channels' biases into consumers instead of dropping them.
        prune_outputs: allow pruning channels that reach the model output (changes its shape).
        approximate: allow pruning groups that cannot be exact (LayerNorm over the channels).

    Returns:
        A new GraphModule (a new ExportedProgram for a program) sharing no Parameter or buffer
        with the input.

    Raises:
        InvalidMaskError, InvalidTypeError, UnprunableError, UnsupportedModelError, TraceError:
            nothing is built, and the input is left as it was.
    """
    overrides = {"fold_bias": fold_bias, "prune_outputs": prune_outputs, "approximate": approximate}
    if isinstance(plan_or_model, Plan):
        if masks is not None:
            raise InvalidTypeError("pass either a Plan, or a model with masks, not a Plan with masks")
        analysis = plan_or_model.analysis
        options = _override(plan_or_model.options, overrides)
        by_group = {
            analysis.by_producer[name]: m.detach().cpu() for name, m in plan_or_model.masks.items() if not bool(m.all())
        }
        for index in by_group:
            group = analysis.groups[index]
            if not group.prunable(options):
                raise UnprunableError(f"cannot prune group {group.name!r}: {group.why_not(options)}")
    else:
        if masks is None:
            raise InvalidTypeError(
                "apply_patterns(model) needs masks: apply_patterns(model, {'fc1': keep_mask}), "
                "or pass a Plan such as pipe(model, score_l1, topk_mask(0.5))"
            )
        analysis = analyze(plan_or_model)
        options = _override(Options(), overrides)
        by_group = group_masks(analysis, masks, options)
        return _rewrite(analysis, by_group, options, owned=isinstance(plan_or_model, nn.Module)
                        and not isinstance(plan_or_model, GraphModule))
    result = _rewrite(analysis, by_group, options, owned=False)
    if plan_or_model.values:
        _set_values(result, plan_or_model.values)
    return result


def _set_values(result: GraphModule | ExportedProgram, values: Mapping[str, Tensor]) -> None:
    """Writes a plan's reconstructed tensors into the new (owned) model, checking each shape."""
    tensors = result.state_dict if isinstance(result, ExportedProgram) else dict(result.state_dict(keep_vars=True))
    for name, value in values.items():
        target = tensors.get(name)
        if not isinstance(target, Tensor) or target.shape != value.shape:
            raise InvalidTypeError(
                f"the plan's value for {name!r} has shape {tuple(value.shape)}, but the pruned model's tensor is "
                f"{'missing' if not isinstance(target, Tensor) else tuple(target.shape)}: the values come from "
                "another plan")
        with torch.no_grad():
            target.copy_(value.to(device=target.device, dtype=target.dtype))


def _override(options: Options, overrides: Mapping[str, bool | None]) -> Options:
    changes = {k: v for k, v in overrides.items() if v is not None}
    return Options(**{**options.__dict__, **changes}) if changes else options


def _rewrite(analysis: Analysis, masks: dict[int, Tensor], options: Options, owned: bool) -> GraphModule | ExportedProgram:
    """Resolves the masks once, then builds with the back-end of the model's front-end.

    `owned` says the GraphModule was traced by fprune for this call alone: its leaf modules are
    swapped for new ones in place (no second code generation).
    """
    change = plan_rewrite(analysis, masks, options)
    if analysis.source is not None:  # an ExportedProgram: a new program, from the same data
        return rebuild_program(analysis.source, change)
    return rebuild_graph(analysis, change, owned)
