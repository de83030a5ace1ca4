"""Hypothesis strategies for random chain models, keep-masks and inputs; and their oracles.

A drawn :class:`Case` is a seeded float64 :class:`models.Chain` from one of
the reference's pattern families (Linear chains with activations; Conv2d
chains with activations, pools and an adaptive-pool/flatten/Linear head;
LSTM -> getitem -> [LayerNorm] -> Linear), random keep-masks keyed by the
producing modules, an input, and the facts the tests need to decide where
the torch.ao reference applies.  Weights come from a drawn seed through a
private ``torch.Generator`` (fast, and the seed shows in failure reports).
"""

from __future__ import annotations

import copy
import functools
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import Tensor, nn

from models import FUNCTIONAL_ACTIVATIONS, MODULE_ACTIVATIONS, Chain, Step, seeded

__all__ = [
    "Case",
    "ACT_ZERO_AT_ZERO",
    "activations",
    "masks_for",
    "linear_chains",
    "conv_chains",
    "lstm_chains",
    "chains",
    "FAMILIES",
    "kinds",
    "zero_slices",
    "zero_rows",
    "MaskedLayerNorm",
    "with_masked_norms",
    "run_reference",
]

# Activations with f(0) == 0 (a removed bias-free channel emits 0 through them).
ACT_ZERO_AT_ZERO = frozenset({
    nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Tanh, nn.SiLU, nn.Mish, nn.Hardswish, nn.ELU, nn.CELU,
    nn.SELU, nn.Hardshrink, nn.LeakyReLU, nn.PReLU, nn.Softsign, nn.Tanhshrink, nn.GELU,
    F.relu, F.rrelu, F.hardtanh, F.relu6, F.tanh, F.silu, F.mish, F.hardswish, F.elu, F.celu, F.selu,
    F.hardshrink, F.leaky_relu, F.prelu, F.softsign, F.tanhshrink, F.gelu,
})


@dataclass
class Case:
    """A drawn model with masks and an input, plus what the reference comparison needs."""

    family: str  # "linear" | "conv" | "lstm"
    model: Chain  # seeded, float64, eval mode
    masks: dict[str, Tensor]  # producer fqn -> keep-mask (only producers whose channels may go)
    x: Tensor  # a float64 input (token-free: LSTM inputs are features)
    producers: list[str]  # every producer, in order; the last one reaches the output
    links: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # producer -> steps up to its consumer
    prune_outputs: bool = False  # the last producer may be masked
    approximate: bool = False  # a LayerNorm normalises over masked channels
    out_dim: int = -1  # the channel dim of the model output

    def __repr__(self) -> str:
        masks = {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in self.masks.items()}
        return (f"Case({self.family}: {self.model.describe()}; masks={masks}; x={tuple(self.x.shape)}; "
                f"prune_outputs={self.prune_outputs}, approximate={self.approximate})")


def _kind(step: Any) -> Any:
    """The activation class or function of a step (partials unwrapped)."""
    if isinstance(step, nn.Module):
        return type(step)
    return step.func if isinstance(step, functools.partial) else step


@st.composite
def activations(draw: st.DrawFn, channels: int | None = None) -> Step:
    """One of the reference's 21 module or 21 functional activations (PReLU per channel when `channels`)."""
    if draw(st.booleans()):
        kind = draw(st.sampled_from(MODULE_ACTIVATIONS))
        if kind is nn.PReLU and channels is not None and draw(st.booleans()):
            return nn.PReLU(channels)
        return kind()
    return draw(st.sampled_from(FUNCTIONAL_ACTIVATIONS))


@st.composite
def masks_for(draw: st.DrawFn, size: int) -> Tensor:
    """A random keep-mask of `size` entries keeping at least one."""
    bits = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    bits[draw(st.integers(0, size - 1))] = True
    return torch.tensor(bits, dtype=torch.bool)


@st.composite
def _draw_masks(draw: st.DrawFn, producers: list[tuple[str, int]], prune_outputs: bool) -> dict[str, Tensor]:
    candidates = producers if prune_outputs else producers[:-1]
    chosen = draw(st.lists(st.booleans(), min_size=len(candidates), max_size=len(candidates)))
    if candidates and not any(chosen):
        chosen[draw(st.integers(0, len(candidates) - 1))] = True
    return {name: draw(masks_for(size)) for (name, size), take in zip(candidates, chosen) if take}


def _randn(shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@st.composite
def linear_chains(draw: st.DrawFn, max_layers: int = 4, max_width: int = 6) -> Case:
    """Linear -> [activation] -> Linear -> ... with random widths, biases and activations."""
    layers = draw(st.integers(2, max_layers))
    widths = draw(st.lists(st.integers(1, max_width), min_size=layers + 1, max_size=layers + 1))
    steps: list[Step] = []
    producers: list[tuple[str, int]] = []
    links: dict[str, tuple[Any, ...]] = {}
    for i in range(layers):
        producers.append((f"l{len(steps)}", widths[i + 1]))
        steps.append(nn.Linear(widths[i], widths[i + 1], bias=draw(st.booleans())))
        link: list[Step] = []
        if i < layers - 1 and draw(st.booleans()):
            link.append(draw(activations()))  # per-channel PReLU needs a known rank: conv only
        steps.extend(link)
        links[producers[-1][0]] = tuple(link)
    prune_outputs = draw(st.booleans())
    model = seeded(Chain(steps), draw(st.integers(0, 2**16)))
    x = _randn((draw(st.integers(1, 3)), widths[0]), draw(st.integers(0, 2**16)))
    return Case("linear", model, draw(_draw_masks(producers, prune_outputs)), x, [p for p, _ in producers],
                links, prune_outputs)


def _pool(draw: st.DrawFn) -> tuple[Step, int, bool]:
    """A 2x2 pool (module or functional, max or avg, padding 0 or 1); returns (step, padding, is_avg)."""
    is_avg, functional, padding = draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 1))
    if functional:
        fn = F.avg_pool2d if is_avg else F.max_pool2d
        return functools.partial(fn, kernel_size=2, stride=2, padding=padding), padding, is_avg
    cls = nn.AvgPool2d if is_avg else nn.MaxPool2d
    return cls(kernel_size=2, stride=2, padding=padding), padding, is_avg


@st.composite
def conv_chains(draw: st.DrawFn, max_convs: int = 3, max_channels: int = 5) -> Case:
    """Conv2d -> [act | act, pool | pool, act | pool] -> Conv2d ... -> [adaptive pool -> flatten -> Linear]."""
    convs = draw(st.integers(2, max_convs))
    channels = draw(st.lists(st.integers(1, max_channels), min_size=convs + 1, max_size=convs + 1))
    head = draw(st.booleans())
    steps: list[Step] = []
    producers: list[tuple[str, int]] = []
    links: dict[str, tuple[Any, ...]] = {}
    ops: list[tuple[str, int, int]] = []  # ("conv", kernel, padding) | ("pool", 2, padding)
    for i in range(convs):
        kernel, padding = draw(st.integers(1, 3)), draw(st.integers(0, 1))
        producers.append((f"l{len(steps)}", channels[i + 1]))
        steps.append(nn.Conv2d(channels[i], channels[i + 1], kernel, padding=padding, bias=draw(st.booleans())))
        ops.append(("conv", kernel, padding))
        link: list[Step] = []
        if i < convs - 1:
            shape = draw(st.sampled_from(("", "act", "act pool", "pool act", "pool")))
            for part in shape.split():
                if part == "act":
                    link.append(draw(activations(channels[i + 1])))
                else:
                    pool, pool_padding, _ = _pool(draw)
                    link.append(pool)
                    ops.append(("pool", 2, pool_padding))
        steps.extend(link)
        links[producers[-1][0]] = tuple(link)
    out_dim = -3
    if head:
        side = draw(st.integers(1, 2))
        adaptive = draw(st.sampled_from((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)))(side)
        flatten: Step = nn.Flatten() if draw(st.booleans()) else functools.partial(torch.flatten, start_dim=1)
        last = producers[-1][0]
        links[last] = (adaptive, flatten)
        steps.extend([adaptive, flatten])
        outputs = draw(st.integers(1, 4))
        producers.append((f"l{len(steps)}", outputs))
        steps.append(nn.Linear(channels[-1] * side * side, outputs, bias=draw(st.booleans())))
        links[producers[-1][0]] = ()
        out_dim = -1
    size = _min_size(ops) + draw(st.integers(0, 2))
    prune_outputs = draw(st.booleans())
    model = seeded(Chain(steps), draw(st.integers(0, 2**16)))
    x = _randn((draw(st.integers(1, 2)), channels[0], size, size), draw(st.integers(0, 2**16)))
    return Case("conv", model, draw(_draw_masks(producers, prune_outputs)), x, [p for p, _ in producers],
                links, prune_outputs, out_dim=out_dim)


def _min_size(ops: list[tuple[str, int, int]]) -> int:
    """The smallest input side for which every conv and pool has a non-empty output."""
    for size in range(1, 64):
        side, ok = size, True
        for kind, kernel, padding in ops:
            side = side + 2 * padding - kernel + 1 if kind == "conv" else (side + 2 * padding - kernel) // 2 + 1
            ok = ok and side >= 1
        if ok:
            return size
    raise AssertionError(f"no input size fits {ops}")


@st.composite
def lstm_chains(draw: st.DrawFn, max_layers: int = 3, max_hidden: int = 5) -> Case:
    """LSTM (1-3 layers, maybe bidirectional) -> getitem 0 -> [LayerNorm] -> Linear [-> act -> Linear]."""
    inputs, hidden, layers = draw(st.integers(1, 4)), draw(st.integers(1, max_hidden)), draw(st.integers(1, max_layers))
    bidirectional, batch_first = draw(st.booleans()), draw(st.booleans())
    width = hidden * (2 if bidirectional else 1)
    steps: list[Step] = [nn.LSTM(inputs, hidden, layers, bidirectional=bidirectional, batch_first=batch_first),
                         operator.itemgetter(0)]
    link: list[Step] = [steps[1]]
    norm = draw(st.booleans())
    if norm:
        steps.append(nn.LayerNorm(width, elementwise_affine=draw(st.booleans())))
        link.append(steps[-1])
    producers: list[tuple[str, int]] = [("l0", hidden)]
    links: dict[str, tuple[Any, ...]] = {"l0": tuple(link)}
    outputs = draw(st.integers(1, 4))
    producers.append((f"l{len(steps)}", outputs))
    steps.append(nn.Linear(width, outputs, bias=draw(st.booleans())))
    links[producers[-1][0]] = ()
    if draw(st.booleans()):
        links[producers[-1][0]] = (draw(activations()),)
        steps.append(links[producers[-1][0]][0])
        final = draw(st.integers(1, 3))
        producers.append((f"l{len(steps)}", final))
        steps.append(nn.Linear(outputs, final))
        links[producers[-1][0]] = ()
    prune_outputs = draw(st.booleans())
    model = seeded(Chain(steps), draw(st.integers(0, 2**16)))
    length, batch = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    shape = (batch, length, inputs) if batch_first else (length, batch, inputs)
    masks = draw(_draw_masks(producers, prune_outputs))
    return Case("lstm", model, masks, _randn(shape, draw(st.integers(0, 2**16))), [p for p, _ in producers],
                links, prune_outputs, approximate=norm and "l0" in masks)


FAMILIES = {"linear": linear_chains, "conv": conv_chains, "lstm": lstm_chains}  # name -> strategy factory


def chains(family: str | None = None) -> st.SearchStrategy[Case]:
    """A chain from one family, or from any."""
    if family is not None:
        return FAMILIES[family]()
    return st.one_of(*(make() for make in FAMILIES.values()))


def kinds(steps: tuple[Any, ...]) -> tuple[Any, ...]:
    """The classes / functions of a link's steps."""
    return tuple(_kind(s) for s in steps)



# --------------------------------------------------------------------------------------
# Oracles: what a pruned model must compute.


def zero_slices(model: nn.Module, params: dict[str, list[dict[str, Any]]]) -> nn.Module:
    """A float64 copy of `model` with every slice the plan's portable form removes set to zero."""
    copy_ = copy.deepcopy(model).double()
    tensors = dict(copy_.named_parameters()) | dict(copy_.named_buffers())
    with torch.no_grad():
        for fqn, entries in params.items():
            tensor = tensors[fqn]
            for entry in entries:
                removed = torch.ones(tensor.shape[entry["dim"]], dtype=torch.bool)
                removed[entry["keep"]] = False
                tensor.index_fill_(entry["dim"], removed.nonzero().squeeze(1), 0.0)
    return copy_


def zero_rows(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """A float64 copy of `model` with the removed rows of each masked producer's weight zeroed, biases kept.

    This is the function the reference's prepared model computes with ``prune_bias=False``
    (FakeStructuredSparsity on the weight, BiasHook adding the full bias).  An LSTM unit is
    removed whole (its gate rows and biases), so it emits exactly zero.
    """
    copy_ = copy.deepcopy(model).double()
    modules = dict(copy_.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            module = modules[name]
            if isinstance(module, nn.LSTM):
                gates = ~mask.repeat(4)
                for pname, p in module.named_parameters():
                    p[gates] = 0.0
            else:
                module.weight[~mask] = 0.0
    return copy_


class MaskedLayerNorm(nn.Module):
    """A LayerNorm that normalises over the kept channels only and emits zero elsewhere."""

    def __init__(self, norm: nn.LayerNorm, keep: Tensor) -> None:
        super().__init__()
        self.norm, self.keep = norm, keep

    def forward(self, x: Tensor) -> Tensor:
        keep = self.keep
        weight = None if self.norm.weight is None else self.norm.weight[keep]
        bias = None if self.norm.bias is None else self.norm.bias[keep]
        out = torch.zeros_like(x)
        out[..., keep] = F.layer_norm(x[..., keep], (int(keep.sum()),), weight, bias, self.norm.eps)
        return out


def with_masked_norms(model: Chain, case: Case) -> Chain:
    """Replaces the LayerNorm after a masked LSTM by a MaskedLayerNorm (the approximate semantics)."""
    lstm = getattr(model, "l0")
    if case.family != "lstm" or "l0" not in case.masks:
        return model
    keep = case.masks["l0"].repeat(2 if lstm.bidirectional else 1)
    for kind, name in model.order:
        module = getattr(model, name) if kind == "module" else None
        if isinstance(module, nn.LayerNorm):
            setattr(model, name, MaskedLayerNorm(module, keep))
    return model


def run_reference(model: nn.Module, masks: dict[str, Tensor], prune_bias: bool) -> nn.Module:
    """The torch.ao reference pruner's result for the same masks, in float32, on a copy of `model`.

    float32 because the reference builds its flatten-expanded biases with ``torch.tensor``
    (always float32), so it fails on float64 models.
    """
    from torch.ao.pruning._experimental.pruner import SaliencyPruner

    copy_ = copy.deepcopy(model).float()
    modules = dict(copy_.named_modules())
    config: list[dict[str, Any]] = []
    expanded: dict[str, Tensor] = {}
    for name, mask in masks.items():
        module = modules[name]
        if isinstance(module, nn.LSTM):
            for k in range(module.num_layers):
                for kind in ("ih", "hh"):
                    expanded[f"{name}.weight_{kind}_l{k}"] = mask.repeat(4)
        else:
            expanded[f"{name}.weight"] = mask
    config = [{"tensor_fqn": fqn} for fqn in expanded]
    pruner = SaliencyPruner({"prune_bias": prune_bias})
    pruner.prepare(copy_, config)
    for fqn, mask in expanded.items():
        pruner.state[fqn]["mask"].copy_(mask)
    with torch.no_grad():
        return pruner.prune()
