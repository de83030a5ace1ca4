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
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import Tensor, nn

from fprune import analyze, trace
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
    "randomised",
    "random_masks",
    "zero_rows",
    "MaskedLayerNorm",
    "with_masked_norms",
    "run_reference",
    "ResidualBasicBlock",
    "ConcatBlock",
    "DepthwisePointwise",
    "SEGate",
    "TokenAttention",
    "GroupedBottleneck",
    "GroupNormConv",
    "MHABlock",
    "BlockNet",
    "BlockCase",
    "block_nets",
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


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """`model` with seeded random weights (running_var positive), in float64 eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model.double().eval()


def random_masks(sizes: dict[str, int], seed: int, keep: float = 0.5) -> dict[str, Tensor]:
    """Seeded keep-masks, one per named group size: each entry kept with probability `keep`, one always."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, size in sizes.items():
        mask = torch.rand(size, generator=generator) < keep
        mask[int(torch.randint(size, (1,), generator=generator))] = True
        masks[name] = mask
    return masks


def zero_slices(model: nn.Module, params: dict[str, list[dict[str, Any]]]) -> nn.Module:
    """A float64 copy of `model` with every slice the plan's portable form removes set to zero."""
    copy_ = copy.deepcopy(model).double()
    tensors = dict(copy_.named_parameters(remove_duplicate=False)) | dict(copy_.named_buffers())  # tied: every name
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



# --------------------------------------------------------------------------------------
# Random networks of blocks (residual, concat, depthwise+pointwise, SE, attention), for the
# exactness property in test_architectures.py.


class ResidualBasicBlock(nn.Module):
    """ResNet BasicBlock: conv3x3-[BN]-ReLU-conv3x3-[BN] + x, ReLU (c -> c)."""

    def __init__(self, c: int, hidden: int, bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, hidden, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(hidden) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(hidden, c, 3, padding=1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ConcatBlock(nn.Module):
    """cat([1x1 conv(x), relu(BN(3x3 conv(x)))], 1), or DenseNet-style cat([x, conv(x)], 1); [then a 1x1 mix conv]."""

    def __init__(self, c: int, a: int, b: int, dense: bool, mix: int) -> None:
        super().__init__()
        self.dense = dense
        self.left = nn.Conv2d(c, a, 1)
        self.right = nn.Conv2d(c, b, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(b)
        width = c + b if dense else a + b
        self.mix = nn.Conv2d(width, mix, 1) if mix else nn.Identity()
        self.out_channels = mix or width

    def forward(self, x: Tensor) -> Tensor:
        new = F.relu(self.bn(self.right(x)))
        return self.mix(torch.cat([x, new], 1) if self.dense else torch.cat([self.left(x), new], dim=1))


class DepthwisePointwise(nn.Module):
    """Depthwise 3x3-[BN]-ReLU6 -> pointwise 1x1-BN, + x when `residual` (c -> cout)."""

    def __init__(self, c: int, cout: int, bn: bool, residual: bool) -> None:
        super().__init__()
        self.residual = residual and c == cout
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.pw = nn.Conv2d(c, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.pw(F.relu6(self.bn1(self.dw(x)))))
        return x + out if self.residual else out


class SEGate(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean over H, W)))); `pool` picks the squeeze op."""

    def __init__(self, c: int, squeeze: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True) if self.pool == "mean" else F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class TokenAttention(nn.Module):
    """timm-style attention on tokens: x + proj(attn(qkv([LN](x)))) with a fused qkv and any heads/head_dim; [+ MLP]."""

    def __init__(self, c: int, heads: int, head_dim: int, norm: bool, sdpa: bool, mlp: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.sdpa = heads, head_dim, sdpa
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.qkv = nn.Linear(c, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, c)
        self.mlp = mlp
        if mlp:
            self.fc1, self.fc2 = nn.Linear(c, mlp), nn.Linear(mlp, c)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, -1))
        if self.mlp:
            x = x + self.fc2(F.gelu(self.fc1(x)))
        return x


class GroupedBottleneck(nn.Module):
    """ResNeXt block: 1x1-BN-ReLU, 3x3 of `groups` conv groups (`w` in, `w2` out each)-BN-ReLU, 1x1-BN, + x."""

    def __init__(self, c: int, groups: int, w: int, w2: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, groups * w, 1, bias=False), nn.BatchNorm2d(groups * w)
        self.conv2 = nn.Conv2d(groups * w, groups * w2, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(groups * w2)
        self.conv3, self.bn3 = nn.Conv2d(groups * w2, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(x + self.bn3(self.conv3(out)))


class GroupNormConv(nn.Module):
    """Conv3x3 -> GroupNorm(`groups`, groups * per_group) -> ReLU (c -> groups * per_group)."""

    def __init__(self, c: int, groups: int, per_group: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, groups * per_group, 3, padding=1)
        self.norm = nn.GroupNorm(groups, groups * per_group)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class MHABlock(nn.Module):
    """x + nn.MultiheadAttention(batch_first)([LN](x) as query, key and value)[0], [+ MLP]."""

    def __init__(self, c: int, heads: int, norm: bool, mlp: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.mlp = mlp
        if mlp:
            self.fc1, self.fc2 = nn.Linear(c, mlp), nn.Linear(mlp, c)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        if self.mlp:
            x = x + self.fc2(F.gelu(self.fc1(x)))
        return x


class BlockNet(nn.Module):
    """Conv stem-BN-ReLU, conv blocks, then a pooled Linear head, or tokens -> attention blocks -> mean -> Linear."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], tokens: list[nn.Module], head: nn.Linear) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.tokens = nn.Sequential(*tokens)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        if len(self.tokens):
            return self.head(self.tokens(x.flatten(2).transpose(1, 2)).mean(1))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def describe(self) -> str:
        """A one-line summary of the blocks, for failure messages."""
        parts = [f"stem->{self.stem[0].out_channels}"]
        for block in [*self.blocks, *self.tokens]:
            if isinstance(block, ResidualBasicBlock):
                parts.append(f"basic(hidden={block.conv1.out_channels}, bn={isinstance(block.bn1, nn.BatchNorm2d)})")
            elif isinstance(block, ConcatBlock):
                parts.append(f"cat(dense={block.dense}, mix={isinstance(block.mix, nn.Conv2d)}, out={block.out_channels})")
            elif isinstance(block, DepthwisePointwise):
                parts.append(f"dwpw(out={block.pw.out_channels}, residual={block.residual})")
            elif isinstance(block, SEGate):
                parts.append(f"se({block.fc1.out_channels}, {block.pool})")
            elif isinstance(block, GroupedBottleneck):
                parts.append(f"grouped(groups={block.conv2.groups}, in={block.conv2.in_channels}, "
                             f"out={block.conv2.out_channels})")
            elif isinstance(block, GroupNormConv):
                parts.append(f"groupnorm(groups={block.norm.num_groups}, out={block.norm.num_channels})")
            elif isinstance(block, MHABlock):
                parts.append(f"mha(heads={block.attn.num_heads}, norm={isinstance(block.norm, nn.LayerNorm)}, "
                             f"mlp={block.mlp})")
            elif isinstance(block, TokenAttention):
                parts.append(f"attn(heads={block.heads}, head_dim={block.head_dim}, "
                             f"norm={isinstance(block.norm, nn.LayerNorm)}, sdpa={block.sdpa}, mlp={block.mlp})")
        return " -> ".join(parts) + f" -> head({self.head.out_features})"


@dataclass
class BlockCase:
    """A drawn BlockNet (seeded, float64, eval), its analysis, random masks over prunable groups, an input."""

    model: BlockNet
    analysis: Any  # fprune.groups.Analysis of the traced model
    masks: dict[str, Tensor]  # group name -> keep-mask (at least one kept)
    x: Tensor

    def __repr__(self) -> str:
        masks = {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in self.masks.items()}
        return f"BlockCase({self.model.describe()}; masks={masks}; x={tuple(self.x.shape)})"


@st.composite
def _conv_block(draw: st.DrawFn, c: int, max_width: int, pending: bool) -> tuple[nn.Module, int]:
    """One conv block reading `c` channels, and the channels it writes."""
    kinds = ("basic", "concat", "dwpw", "se") + (("grouped", "groupnorm") if pending else ())
    kind = draw(st.sampled_from(kinds))
    width = st.integers(2, max_width)  # a single channel can never be pruned
    if kind == "grouped":
        return GroupedBottleneck(c, draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))), c
    if kind == "groupnorm":
        groups, per_group = draw(st.integers(2, 4)), draw(st.integers(1, 2))
        return GroupNormConv(c, groups, per_group), groups * per_group
    if kind == "basic":
        return ResidualBasicBlock(c, draw(width), draw(st.booleans())), c
    if kind == "concat":
        mix = draw(width) if draw(st.booleans()) else 0  # a concatenation feeding a residual add is refused
        block = ConcatBlock(c, draw(width), draw(width), draw(st.booleans()), mix)
        return block, block.out_channels
    if kind == "dwpw":
        residual = draw(st.booleans())
        cout = c if residual else draw(width)
        return DepthwisePointwise(c, cout, draw(st.booleans()), residual), cout
    return SEGate(c, draw(width), draw(st.sampled_from(("mean", "adaptive")))), c


@st.composite
def block_nets(draw: st.DrawFn, max_blocks: int = 3, max_width: int = 6, pending: bool = False) -> BlockCase:
    """A random BlockNet with random keep-masks over every group fprune can prune under default Options.

    With `pending`, also grouped (non-depthwise) convolutions, GroupNorm and nn.MultiheadAttention.
    """
    inputs, c = draw(st.integers(1, 3)), draw(st.integers(1, max_width))
    stem = nn.Sequential(nn.Conv2d(inputs, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
    blocks: list[nn.Module] = []
    for _ in range(draw(st.integers(0, max_blocks))):
        block, c = draw(_conv_block(c, max_width, pending))
        blocks.append(block)
    tokens: list[nn.Module] = []
    for _ in range(draw(st.integers(0, 2))):
        if pending and draw(st.booleans()):
            heads = draw(st.sampled_from([h for h in range(c, 0, -1) if c % h == 0]))  # most heads first
            tokens.append(MHABlock(c, heads, draw(st.booleans()), draw(st.sampled_from((0, 3)))))
            continue
        tokens.append(TokenAttention(
            c, draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.booleans()), draw(st.booleans()),
            draw(st.sampled_from((0, 3))),
        ))  # one head reads as a plain reshape (refused): at least two
    model = seeded(BlockNet(stem, blocks, tokens, nn.Linear(c, draw(st.integers(1, 3)))), draw(st.integers(0, 2**16)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = analyze(trace(model))
    masks: dict[str, Tensor] = {}
    for group in analysis.groups:
        if group.prunable() and draw(st.sampled_from((True, True, True, False))):  # most groups masked
            masks[group.name] = draw(masks_for(group.size))
    side = draw(st.integers(2, 4))
    x = _randn((draw(st.integers(1, 2)), inputs, side, side), draw(st.integers(0, 2**16)))
    return BlockCase(model, analysis, masks, x)
