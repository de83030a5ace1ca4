"""``BaseStructuredSparsifier.prune()``: the reference's result, computed by fprune's core.

Steps; every check runs before step 4, the first that modifies the model:

1. trace the prepared model with ``torch.fx.symbolic_trace`` (the reference
   does the same and returns that GraphModule, which shares the model's
   modules);
2. read the :class:`FakeStructuredSparsity` mask of every configured tensor and
   turn them into one keep-mask per producing module (for an LSTM, the units
   kept by the output gate of its last layer's ``weight_hh``, which is what the
   reference slices its consumers with);
3. find the channel groups with :func:`fprune.analyze` and check each pruned
   group: every coupled producer configured with the same mask, no op without
   an exact rule, no LayerNorm over the channels except after an LSTM (the
   reference's one approximate pattern), and the core's own verdict,
   :meth:`fprune.ChannelGroup.prunable`, under the options of step 5 or 6;
4. clean the configured modules in place: masks baked in
   (``leave_parametrized=True``), ``_bias`` moved back to ``bias`` (its masked
   entries zeroed with ``prune_bias``), bias hooks removed;
5. groups whose producer has ``prune_bias=True`` (the core's exact semantics):
   :func:`fprune.rewrite.plan_rewrite` computes the new tensors, sizes and
   graph constants, which replace the model's own in place (the reference's
   API returns a GraphModule sharing them);
6. groups with ``prune_bias=False``: the same with ``fold_bias=True``, on a
   fresh analysis of the model as step 5 left it.  Options are always
   ``prune_outputs=True`` (the reference prunes output layers) and
   ``approximate=True`` (its LSTM -> LayerNorm pattern; other inexact groups
   were refused in step 3).

Three reference behaviours the exact core does not have are applied here, all
small: the reference keeps a ``Conv2d`` at full size (rows zeroed) when it has
a bias and the ``Conv2d`` reached through its first user is zero-padded, and
with ``prune_bias=False`` it gives the consumer of a biased producer a bias even
when nothing folds into it (:func:`reference_rules`); it slices each gate of an
LSTM with that gate's own mask (:func:`lstm_per_gate`, a few ``slice_tensor``
calls).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.compat import SaliencyPruner
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    >>> pruner = SaliencyPruner({"sparsity_level": 0.5})
    >>> pruner.prepare(net, [{"tensor_fqn": "0.weight"}])
    >>> pruner.step()
    >>> _ = pruner.prune()
    >>> net[0].weight.shape, int((net[0].weight.flatten(1).abs().sum(1) == 0).sum())  # kept whole, rows zeroed
    (torch.Size([4, 1, 3, 3]), 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule, Node
from torch.nn.utils import parametrize

from fprune.compat.parametrization import BiasHook, settle_bias, structured_parametrization
from fprune.errors import (
    FpruneWarning,
    InvalidArgumentError,
    InvalidMaskError,
    TraceError,
    UnprunableError,
    UnsupportedModelError,
)
from fprune.analysis import Analysis, Options, analyze
from fprune.analysis.resolve import expand, plan_rewrite
from fprune.rewrite.graph_backend import apply_edits
from fprune.slicing import slice_tensor

__all__ = ["prune_prepared", "ReferenceRules", "reference_rules", "lstm_per_gate"]

# The reference's activation functions and modules (base_structured_sparsifier.py), used only to
# recognise where it applies its padded-Conv2d rule.
_ACT_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu, F.rrelu, F.hardtanh, F.relu6, F.sigmoid, F.hardsigmoid, F.tanh, F.silu, F.mish, F.hardswish,
    F.elu, F.celu, F.selu, F.hardshrink, F.leaky_relu, F.logsigmoid, F.softplus, F.prelu, F.softsign,
    F.tanhshrink, F.gelu,
)
_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.ELU, nn.CELU, nn.SELU, nn.Hardshrink, nn.LeakyReLU, nn.LogSigmoid, nn.Softplus,
    nn.PReLU, nn.Softsign, nn.Tanhshrink, nn.GELU,
)
_POOL_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.avg_pool2d, F.max_pool2d)
_POOL_MODULES: tuple[type[nn.Module], ...] = (nn.AvgPool2d, nn.MaxPool2d)
_ADAPTIVE_MODULES: tuple[type[nn.Module], ...] = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# The reference's patterns from a Linear or Conv2d to the next Linear or Conv2d, as the kinds of the
# nodes that follow the producer through first users (base_structured_sparsifier.py).
_CHAINS: Mapping[type[nn.Module], frozenset[tuple[str, ...]]] = MappingProxyType({
    nn.Linear: frozenset({("linear",), ("act", "linear")}),
    nn.Conv2d: frozenset({
        ("conv",), ("act", "conv"), ("act", "pool", "conv"), ("pool", "act", "conv"), ("apool", "flatten", "linear"),
    }),
})


@dataclass
class _Target:
    """One configured module: its masks and options."""

    name: str  # fully-qualified name in the traced graph
    module: nn.Module
    masks: dict[str, Tensor] = field(default_factory=dict)  # tensor name -> live keep-mask over its rows
    fqns: list[str] = field(default_factory=list)  # the configured tensor_fqns, for messages
    prune_bias: bool = True

    def where(self) -> str:
        return ", ".join(repr(f) for f in self.fqns)


def prune_prepared(model: nn.Module, groups: Sequence[Mapping[str, Any]]) -> GraphModule:
    """Prunes a model prepared by a structured sparsifier; returns its traced, pruned GraphModule.

    Modifies `model` in place (after every check passed) and returns the
    GraphModule traced from it, which shares its modules.
    """
    gm = _trace(model)
    modules = dict(gm.named_modules())
    targets = _targets(groups, modules)
    if not targets:
        return gm
    analysis = analyze(gm)
    units: dict[str, Tensor] = {}
    gated: dict[str, Mapping[str, Tensor]] = {}
    for target in targets.values():
        unit, gates = _unit_mask(target)
        if unit is not None:
            units[target.name] = unit
        if gates is not None:
            gated[target.name] = gates
    rules = reference_rules(gm, targets, modules)
    passes = _passes(analysis, units, targets, rules.kept_whole)
    by_group = {analysis.by_producer[p]: m for each in passes.values() for p, m in each.items()}
    _check_members(analysis, by_group, targets, modules)
    # an LSTM's inputs are sliced by the exact pass only: fold_bias keeps a group feeding an LSTM whole
    sliced = {analysis.by_producer[p]: m for p, m in passes.get(False, {}).items()}
    per_gate = {
        name: lstm_per_gate(modules[name], gates, expand(analysis, analysis.roles[name].in_layout, sliced))
        for name, gates in gated.items()
    }
    # ---------------------------------------------------------------- the model changes from here on
    for target in targets.values():
        _clean(target, settle=target.name in rules.kept_whole)
    exact = passes.get(False)
    if exact:
        _slice_in_place(analysis, sliced, modules)
    folded = passes.get(True)
    if folded:
        current = analyze(gm) if exact else analysis
        _slice_in_place(current, {current.by_producer[p]: m for p, m in folded.items()}, modules, fold_bias=True)
    for name, tensors in per_gate.items():
        _set_parameters(modules[name], tensors)
    for name in rules.zero_bias:
        _ensure_bias(modules[name])
    return gm


# -------------------------------------------------------------------------------------- reading


def _trace(model: nn.Module) -> GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types
        raise TraceError(
            f"prune(): torch.fx.symbolic_trace could not trace {type(model).__name__}: {exc}. The reference "
            "traces the model the same way; make its forward traceable (no data-dependent control flow) "
            "or prune with fprune.apply_patterns on a GraphModule you traced"
        ) from exc


def _targets(groups: Sequence[Mapping[str, Any]], modules: Mapping[str, nn.Module]) -> dict[str, _Target]:
    """The configured modules the graph calls, with their current masks."""
    names: dict[int, str] = {}
    for qualified, each in modules.items():
        names.setdefault(id(each), qualified)
    targets: dict[str, _Target] = {}
    unused: list[str] = []
    for group in groups:
        module, tensor_name, fqn = group.get("module"), group.get("tensor_name"), group.get("tensor_fqn")
        if not isinstance(module, nn.Module) or not isinstance(tensor_name, str):
            continue
        p = structured_parametrization(module, tensor_name)
        if p is None:  # pruned or squashed already
            continue
        name = names.get(id(module))
        if name is None:
            unused.append(str(fqn))
            continue
        rows = module.parametrizations[tensor_name].original.shape[0]  # type: ignore[index, union-attr]
        mask = p.mask
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (rows,):
            found = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise InvalidMaskError(
                f"prune(): the mask of {fqn!r} must be a bool tensor of shape ({rows},), got {found}; "
                "update_mask must only set entries of the mask to False"
            )
        target = targets.setdefault(name, _Target(name, module))
        target.masks[tensor_name] = mask
        target.fqns.append(str(fqn))
        target.prune_bias = bool(group.get("prune_bias", True))
    if unused:
        warnings.warn(
            f"prune(): {', '.join(repr(u) for u in unused)} belong to modules the model's forward never "
            "calls; they are left as prepared (masked, not pruned), as in the reference",
            FpruneWarning,
            stacklevel=4,
        )
    return targets


def _unit_mask(target: _Target) -> tuple[Tensor | None, Mapping[str, Tensor] | None]:
    """(keep-mask over the module's output channels or None if nothing is pruned, per-gate LSTM masks or None)."""
    masks = target.masks
    if isinstance(target.module, nn.LSTM):
        return _lstm_unit(target)
    kept = {n: int(m.sum()) for n, m in masks.items()}
    pruning = [n for n, m in masks.items() if kept[n] != m.numel()]
    if not pruning:
        return None, None
    if set(masks) != {"weight"}:
        raise UnsupportedModelError(
            f"prune(): {target.where()} ({type(target.module).__name__}): fprune.compat removes output "
            "channels through a module's 'weight' (and an LSTM's weight_ih_l*/weight_hh_l*); configure "
            f"{target.name + '.weight'!r} instead"
        )
    if kept["weight"] == 0:
        raise InvalidMaskError(_all_pruned(target))
    return masks["weight"], None


def _all_pruned(target: _Target) -> str:
    return (
        f"prune(): the mask of {target.where()} prunes every channel (a sparsity_level of 1 or more); "
        "fprune cannot remove a layer whole (the reference leaves a zero-width layer). Lower the "
        "sparsity_level below 1 or leave the tensor out of the config; nothing was changed"
    )


def _lstm_unit(target: _Target) -> tuple[Tensor | None, Mapping[str, Tensor] | None]:
    lstm = target.module
    assert isinstance(lstm, nn.LSTM)
    if all(bool(m.all()) for m in target.masks.values()):
        return None, None
    if lstm.bidirectional or lstm.proj_size:
        raise UnsupportedModelError(
            f"prune(): {target.where()}: pruning a bidirectional LSTM or one with proj_size is not supported "
            "(nor by the reference); leave it out of the config"
        )
    hidden = lstm.hidden_size
    expected = [f"weight_{kind}_l{k}" for k in range(lstm.num_layers) for kind in ("ih", "hh")]
    if set(target.masks) != set(expected):
        raise InvalidMaskError(
            f"prune(): LSTM {target.name!r} is configured through {sorted(target.masks)}; pruning it needs "
            f"exactly {expected} (the reference leaves a broken LSTM otherwise)"
        )
    chunks = [c for n in expected for c in _split(target.masks[n], hidden)]
    counts = sorted({int(c.sum()) for c in chunks})
    if len(counts) != 1:
        raise InvalidMaskError(
            f"prune(): LSTM {target.name!r}: every gate of every weight_ih/weight_hh mask must keep the same "
            f"number of units, got {counts} (the reference builds an LSTM that cannot run otherwise)"
        )
    if counts[0] == 0:
        raise InvalidMaskError(_all_pruned(target))
    unit = target.masks[expected[-1]][3 * hidden:].detach().cpu().clone()
    consistent = all(torch.equal(c.cpu(), unit) for c in chunks)
    return unit, None if consistent else dict(target.masks)


def _kind(node: Node, modules: Mapping[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        module_type = parametrize.type_before_parametrizations(modules[str(node.target)])
        kinds = {nn.Conv2d: "conv", nn.Linear: "linear", nn.Flatten: "flatten"}
        if module_type in kinds:
            return kinds[module_type]
        if module_type in _ACT_MODULES:
            return "act"
        if module_type in _POOL_MODULES:
            return "pool"
        if module_type in _ADAPTIVE_MODULES:
            return "apool"
    elif node.op == "call_function":
        if any(node.target is f for f in _ACT_FUNCTIONS):
            return "act"
        if any(node.target is f for f in _POOL_FUNCTIONS):
            return "pool"
        if node.target is torch.flatten:
            return "flatten"
    return None


def _reference_consumer(node: Node, producer: type[nn.Module], modules: Mapping[str, nn.Module]) -> str | None:
    """The Linear / Conv2d a reference pattern reaches from `node` (first users only), or None."""
    kinds: list[str] = []
    current = node
    for _ in range(3):
        user = next(iter(current.users), None)
        kind = _kind(user, modules) if user is not None else None
        if user is None or kind is None:
            return None
        current = user
        kinds.append(kind)
        if kind in ("conv", "linear"):
            break
    return str(current.target) if tuple(kinds) in _CHAINS[producer] else None


@dataclass(frozen=True)
class ReferenceRules:
    """Where the reference's pattern functions do what the exact core would not."""

    kept_whole: frozenset[str]  # biased Conv2d feeding a zero-padded Conv2d: kept at full size, rows zeroed
    zero_bias: frozenset[str]  # consumers the reference gives a bias (zeros if nothing folds into it)


def reference_rules(gm: GraphModule, targets: Mapping[str, _Target], modules: Mapping[str, nn.Module]) -> ReferenceRules:
    """Replays the reference's pattern matching on the configured Linear and Conv2d modules.

    ``prune_conv2d_activation_conv2d`` keeps the first Conv2d whole (pruned rows
    zeroed, bias kept) when the second has ``padding > (0, 0)`` and the first
    has a bias, either its own or one it received by bias propagation, whatever
    ``prune_bias`` says.  With ``prune_bias=False`` a producer with a bias gives
    the consumer of its pattern a bias, even when nothing is folded into it
    (zeros).  Patterns are followed as the reference does, through first users
    only; a string padding (``'same'``), on which the reference raises, is left
    to the core's own rules.
    """
    kept: set[str] = set()
    zero_bias: set[str] = set()
    propagated: set[str] = set()  # Conv2d that received a propagated bias
    for node in gm.graph.nodes:
        target = targets.get(str(node.target)) if node.op == "call_module" else None
        if target is None or "weight" not in target.masks:
            continue
        producer = parametrize.type_before_parametrizations(target.module)
        if producer not in _CHAINS or (producer is nn.Linear and target.prune_bias):
            continue  # a Linear matters here only for the bias it propagates
        name = _reference_consumer(node, producer, modules)
        if name is None:
            continue
        own_bias = getattr(target.module, "_bias", None) is not None
        padding = getattr(modules[name], "padding", None)
        if producer is nn.Conv2d and isinstance(modules[name], nn.Conv2d):
            if not isinstance(padding, tuple):
                continue
            if any(p != 0 for p in padding) and (own_bias or target.name in propagated):
                kept.add(target.name)
                continue
        if own_bias and not target.prune_bias:
            zero_bias.add(name)
            propagated.add(name)
    return ReferenceRules(frozenset(kept), frozenset(zero_bias))


def _passes(
    analysis: Analysis, units: Mapping[str, Tensor], targets: Mapping[str, _Target], kept_whole: frozenset[str]
) -> dict[bool, dict[str, Tensor]]:
    """Producer masks per rewrite pass: fold_bias False (prune_bias True) and True (prune_bias False)."""
    passes: dict[bool, dict[str, Tensor]] = {}
    done: set[int] = set()
    for name, mask in units.items():
        index = analysis.by_producer.get(name)
        target = targets[name]
        if index is None:
            raise InvalidMaskError(
                f"prune(): {target.where()} ({type(target.module).__name__}) is not a Linear, Conv or LSTM "
                "whose output the model's forward computes (called once, on one input); fprune.compat "
                "prunes the output channels of those. Leave it out of the config; nothing was changed"
            )
        if index in done:
            continue
        done.add(index)
        group = analysis.groups[index]
        if any(p in kept_whole for p in group.producers):
            continue  # the reference's padded-Conv2d handling: kept whole, masked rows zeroed
        missing = [p for p in group.producers if p not in units]
        if missing:
            raise InvalidMaskError(
                f"prune(): the channels of {target.where()} are coupled (e.g. by a residual add) to those of "
                f"{', '.join(repr(m) for m in missing)}, which the config does not prune; configure every "
                f"producer of the group ({', '.join(group.producers)}) with the same mask; nothing was changed"
            )
        lstm = all(isinstance(targets[p].module, nn.RNNBase) for p in group.producers)
        inexact = [b.message for b in group.blocks if b.kind == "inexact"]
        inexact += [
            f"node {site.node!r} normalises over these channels (the reference keeps such a norm exact only "
            "after an LSTM)"
            for site in analysis.norms
            if site.kind == "layer" and any(analysis.space_group[seg.space] == index for seg in site.layout.segs)
        ]
        if inexact and not lstm:
            raise UnprunableError(
                f"prune(): cannot remove channels of {target.where()} exactly: {'; '.join(inexact)}. The "
                "reference has no pattern for this either; leave it out of the config, or prune with "
                "fprune.apply_patterns(model, masks) (exact: a LayerNorm becomes a PrunedLayerNorm) or with "
                "approximate=True; nothing was changed"
            )
        differ = [p for p in group.producers if not torch.equal(units[p], mask)]
        if differ:
            raise InvalidMaskError(
                f"prune(): the channels of {target.where()} are coupled (e.g. by a residual add) to those of "
                f"{', '.join(repr(d) for d in differ)}, whose mask differs; give every producer of the group "
                f"({', '.join(group.producers)}) the same mask; nothing was changed"
            )
        biases = {targets[p].prune_bias for p in group.producers}
        if len(biases) > 1 and not lstm:
            raise InvalidArgumentError(
                f"prune(): the coupled producers {', '.join(group.producers)} have different prune_bias "
                "settings; give them the same one; nothing was changed"
            )
        fold = not lstm and not biases.pop()
        if not group.prunable(Options(prune_outputs=True, approximate=True, fold_bias=fold)):
            why = group.why_not(Options(prune_outputs=True, approximate=True, fold_bias=fold))
            raise UnprunableError(
                f"prune(): cannot prune {target.where()} (channel group {group.name!r}): {why}; the reference "
                "has no pattern for this either. Leave it out of the config; nothing was changed"
            )
        for producer in group.producers:
            passes.setdefault(fold, {})[producer] = units[producer]
    return passes


def _check_members(
    analysis: Analysis, by_group: Mapping[int, Tensor], targets: Mapping[str, _Target], modules: Mapping[str, nn.Module]
) -> None:
    """Every group can take a per-channel mask, and every module the rewrite slices must be free of
    parametrizations once the masks are baked in."""
    for index, mask in by_group.items():
        group = analysis.groups[index]
        if mask.numel() != group.size:  # whole units: heads, conv groups, norm groups, split pieces
            raise UnsupportedModelError(
                f"prune(): the channels of {group.name!r} ({mask.numel()}) go in {group.size} whole units here "
                "(attention heads, conv groups, norm groups or the pieces of a split), which the torch.ao "
                "API's per-channel masks cannot express; prune this model with the functional pipeline, "
                "e.g. pipe(model, score_l1, topk_mask(0.5), apply_patterns); nothing was changed"
            )
    for index in by_group:
        for name in analysis.groups[index].members:
            module = modules[name]
            if not isinstance(module._modules.get("parametrizations"), nn.ModuleDict):
                continue
            own = set(targets[name].masks) if name in targets else set()
            other = sorted(set(module.parametrizations.keys()) - own)  # type: ignore[union-attr, operator]
            if other:
                raise UnsupportedModelError(
                    f"prune(): module {name!r} must be sliced but carries parametrizations on {other} that "
                    "this sparsifier did not register; remove them first; nothing was changed"
                )


def lstm_per_gate(lstm: nn.Module, masks: Mapping[str, Tensor], in_keep: Tensor | None) -> dict[str, Tensor]:
    """The reference's LSTM slicing, where each gate keeps the units of its own mask.

    For layer ``k``: ``weight_ih_l{k}`` and ``bias_ih_l{k}`` keep the rows of the
    ``weight_ih_l{k}`` mask; gate ``g`` of ``weight_hh_l{k}`` keeps rows *and*
    columns by gate ``g`` of the ``weight_hh_l{k}`` mask; ``bias_hh_l{k}`` its
    rows; the columns of ``weight_ih_l{k+1}`` follow the output gate of the
    ``weight_hh_l{k}`` mask (``in_keep``, the input channels pruned upstream,
    for layer 0).  Reads the (masked) tensors; modifies nothing.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lstm = nn.LSTM(1, 2)
        >>> keep = torch.tensor([True, False, False, True, True, False, False, True])
        >>> out = lstm_per_gate(lstm, {"weight_ih_l0": keep, "weight_hh_l0": keep}, None)
        >>> torch.equal(out["weight_hh_l0"][1], lstm.weight_hh_l0[3, 1:].detach())
        True
    """
    hidden = int(getattr(lstm, "hidden_size"))
    out: dict[str, Tensor] = {}
    columns = in_keep
    with torch.no_grad():
        for k in range(int(getattr(lstm, "num_layers"))):
            m_ih, m_hh = masks[f"weight_ih_l{k}"], masks[f"weight_hh_l{k}"]
            dims = {0: m_ih} if columns is None else {0: m_ih, 1: columns}
            out[f"weight_ih_l{k}"] = slice_tensor(getattr(lstm, f"weight_ih_l{k}"), dims)
            gates = zip(_split(getattr(lstm, f"weight_hh_l{k}"), hidden), _split(m_hh, hidden))
            out[f"weight_hh_l{k}"] = torch.cat([slice_tensor(w, {0: m, 1: m}) for w, m in gates])
            if getattr(lstm, "bias", False):
                out[f"bias_ih_l{k}"] = slice_tensor(getattr(lstm, f"bias_ih_l{k}"), {0: m_ih})
                out[f"bias_hh_l{k}"] = slice_tensor(getattr(lstm, f"bias_hh_l{k}"), {0: m_hh})
            columns = m_hh[3 * hidden:]
    return out


def _split(tensor: Tensor, size: int) -> tuple[Tensor, ...]:
    return tuple(torch.split(tensor, size))


# -------------------------------------------------------------------------------------- writing


def _clean(target: _Target, settle: bool) -> None:
    """Bakes the masks in and restores the module's own bias, in place.

    `settle` zeroes the masked bias entries as the bias hook would (only needed
    where the pruned rows stay, the others are sliced away).
    """
    module = target.module
    if settle:
        settle_bias(module)
    for tensor_name in target.masks:
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    bias = module._parameters.pop("_bias", None)
    if bias is not None:
        module._parameters["bias"] = bias  # the slot prepare() emptied
    hooks = [key for key, hook in module._forward_hooks.items() if isinstance(hook, BiasHook)]
    for key in hooks:
        del module._forward_hooks[key]
        module._forward_hooks_with_kwargs.pop(key, None)
        module._forward_hooks_always_called.pop(key, None)
    if isinstance(module, nn.RNNBase):
        module._init_flat_weights()


def _slice_in_place(analysis: Analysis, by_group: Mapping[int, Tensor], modules: Mapping[str, nn.Module],
                    fold_bias: bool = False) -> None:
    """Applies the core's rewrite data to the model's own modules (``apply_patterns`` builds copies).

    :func:`fprune.rewrite.plan_rewrite` computes every new tensor, size and graph constant from
    the current tensors; here they replace the old ones in place, which the reference's API
    requires (it returns a GraphModule sharing the user's modules).  Copying the whole model first,
    as ``apply_patterns`` must, would cost more than the reference's pattern matching saves.
    """
    options = Options(prune_outputs=True, approximate=True, fold_bias=fold_bias)
    change = plan_rewrite(analysis, by_group, options)
    with torch.no_grad():
        for name, tensors in change.tensors.items():
            module = modules[name]
            for tensor_name, new in tensors.items():
                store: dict[str, Any] = module._buffers if tensor_name in module._buffers else module._parameters
                old = store.get(tensor_name)
                # the tensor's own slot, as Module.__setattr__ would fill it; a folded bias is new
                store[tensor_name] = new if isinstance(old, Tensor) and not isinstance(old, nn.Parameter) else (
                    nn.Parameter(new, old.requires_grad if old is not None else True))
    for name, attrs in change.attrs.items():
        module = modules[name]
        for attr, value in attrs.items():
            setattr(module, attr, value)
    for name in change.tensors:
        module = modules[name]
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
    apply_edits(analysis.graph, change)


def _ensure_bias(module: nn.Module) -> None:
    weight = getattr(module, "weight")
    if getattr(module, "bias", None) is None:
        setattr(module, "bias", nn.Parameter(weight.new_zeros(weight.shape[0])))


def _set_parameters(module: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    for key, tensor in tensors.items():
        old = getattr(module, key)
        setattr(module, key, nn.Parameter(tensor, requires_grad=bool(old.requires_grad)))
    if isinstance(module, nn.RNNBase):
        module._init_flat_weights()
