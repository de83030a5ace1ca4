"""A small zoo of models for the analysis, rewrite and plan tests.

Every model is small, deterministic once seeded (see :func:`seeded`), and
traceable with ``torch.fx.symbolic_trace``.  :class:`Chain` is the building
block of the random chains in ``model_strategies.py``; the torch.ao
reference's helper models are re-exported under their own names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing._internal.common_pruning import (
    Conv2dActivation,
    Conv2dBias,
    Conv2dPadBias,
    Conv2dPool,
    Conv2dPoolFlatten,
    Conv2dPoolFlattenFunctional,
    LinearActivation,
    LinearActivationFunctional,
    LinearBias,
    LSTMLayerNormLinearModel,
    LSTMLinearModel,
    SimpleConv2d,
    SimpleLinear,
)

__all__ = [
    "Step",
    "Chain",
    "seeded",
    "MODULE_ACTIVATIONS",
    "FUNCTIONAL_ACTIVATIONS",
    "REFERENCE_MODELS",
    "MLP",
    "ConvNet",
    "ConvPoolFlatten",
    "ConvPoolFlattenNoBias",
    "PaddedConvAct",
    "Residual",
    "TwoHeads",
    "SoftmaxMiddle",
    "ChannelSum",
    "TwiceCalled",
    "TiedHeads",
    "GetAttrRead",
    "LSTMLM",
    "LSTMStateOut",
    "ConvBN",
    "FunctionalPReLU",
    "PerChannelPReLU",
    # the reference's helper models
    "SimpleLinear",
    "LinearBias",
    "LinearActivation",
    "LinearActivationFunctional",
    "SimpleConv2d",
    "Conv2dBias",
    "Conv2dActivation",
    "Conv2dPadBias",
    "Conv2dPool",
    "Conv2dPoolFlatten",
    "Conv2dPoolFlattenFunctional",
    "LSTMLinearModel",
    "LSTMLayerNormLinearModel",
]

# The reference's 21 activation modules (base_structured_sparsifier._get_supported_activation_modules).
MODULE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.ELU, nn.CELU, nn.SELU, nn.Hardshrink, nn.LeakyReLU, nn.LogSigmoid, nn.Softplus,
    nn.PReLU, nn.Softsign, nn.Tanhshrink, nn.GELU,
)
# The reference's 21 functional activations (F.prelu needs a weight: see FunctionalPReLU / Chain).
FUNCTIONAL_ACTIVATIONS: tuple[Callable[..., Tensor], ...] = (
    F.relu, F.rrelu, F.hardtanh, F.relu6, F.sigmoid, F.hardsigmoid, F.tanh, F.silu, F.mish,
    F.hardswish, F.elu, F.celu, F.selu, F.hardshrink, F.leaky_relu, F.logsigmoid, F.softplus,
    F.prelu, F.softsign, F.tanhshrink, F.gelu,
)

# A chain step: a module, or a function of the running tensor (functools.partial for arguments).
Step = Union[nn.Module, Callable[..., Tensor]]


class Chain(nn.Module):
    """A straight chain of steps (modules named l0, l1, ... and functional ops), traced flat."""

    def __init__(self, steps: Sequence[Step]) -> None:
        super().__init__()
        self.order: list[tuple[str, Any]] = []
        for i, step in enumerate(steps):
            if isinstance(step, nn.Module):
                self.add_module(f"l{i}", step)
                self.order.append(("module", f"l{i}"))
            elif step is F.prelu:
                self.register_parameter(f"a{i}", nn.Parameter(torch.full((1,), 0.25)))
                self.order.append(("prelu", f"a{i}"))
            else:
                self.order.append(("function", step))

    def forward(self, x: Tensor) -> Tensor:
        for kind, what in self.order:
            if kind == "module":
                x = getattr(self, what)(x)
            elif kind == "prelu":
                x = F.prelu(x, getattr(self, what))
            else:
                x = what(x)
        return x

    def describe(self) -> str:
        """A one-line summary of the steps, for failure messages."""
        parts = []
        for kind, what in self.order:
            if kind == "module":
                parts.append(repr(getattr(self, what)).replace("\n", ""))
            elif kind == "prelu":
                parts.append("F.prelu")
            else:
                fn = what.func if isinstance(what, functools.partial) else what
                parts.append(getattr(fn, "__name__", repr(fn)))
        return " -> ".join(parts)


def seeded(model: nn.Module, seed: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Fills every parameter with seeded normal values (scaled by fan-in), sets dtype and eval mode; returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) / fan_in**0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator, dtype=torch.float64) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator, dtype=torch.float64) * 0.1)
    return model.to(dtype).eval()


class MLP(nn.Module):
    """Linear -> ReLU -> Linear -> Tanh -> Linear: two prunable groups and an output group."""

    def __init__(self, sizes: Sequence[int] = (5, 8, 6, 3), bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1], bias=bias)
        self.fc2 = nn.Linear(sizes[1], sizes[2], bias=bias)
        self.fc3 = nn.Linear(sizes[2], sizes[3], bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(torch.tanh(self.fc2(F.relu(self.fc1(x)))))


class ConvNet(nn.Module):
    """Conv2d -> ReLU -> MaxPool2d -> Conv2d -> Sigmoid -> Conv2d, in a Sequential."""

    def __init__(self, bias: bool = True, padding: int = 0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=padding, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 5, 3, padding=padding, bias=bias), nn.Sigmoid(),
            nn.Conv2d(5, 3, 1, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class ConvPoolFlatten(nn.Module):
    """Conv2d -> ReLU -> Conv2d -> AdaptiveAvgPool2d(2) -> torch.flatten -> Linear -> Linear."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3, bias=bias)
        self.conv2 = nn.Conv2d(5, 4, 3, bias=bias)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 6, bias=bias)
        self.head = nn.Linear(6, 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv2(F.relu(self.conv1(x))))
        return self.head(self.fc(torch.flatten(x, 1)))


class ConvPoolFlattenNoBias(ConvPoolFlatten):
    """ConvPoolFlatten without any bias (the reference crashes on it with prune_bias=False)."""

    def __init__(self) -> None:
        super().__init__(bias=False)


class PaddedConvAct(nn.Module):
    """Conv2d(bias) -> ReLU -> Conv2d(padding=1): the reference keeps the first conv full size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, bias=True)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=True)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv2(self.act(self.conv1(x))))


class Residual(nn.Module):
    """x -> a; a + b(relu(a)) -> head: a and b are coupled producers of one group."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        return self.head(h + self.b(F.relu(h)))


class TwoHeads(nn.Module):
    """One trunk Linear read by two consumers (every user must be followed)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.left = nn.Linear(6, 3)
        self.right = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.trunk(x))
        return self.left(h).sum(-1, keepdim=True) + self.right(h).sum(-1, keepdim=True)


class SoftmaxMiddle(nn.Module):
    """Linear -> softmax over channels -> Linear: softmax has no rule, so fc1 is unprunable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.softmax(self.fc1(x), dim=-1))


class ChannelSum(nn.Module):
    """fc1's channels read by fc2 and also summed into a second output (a user no rule explains)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        return self.fc2(h) + h.sum(-1, keepdim=True)


class TwiceCalled(nn.Module):
    """A Linear called on the input and on another producer's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.shared = nn.Linear(4, 6)
        self.c1 = nn.Linear(6, 2)
        self.c2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.c1(self.shared(x)) + self.c2(self.shared(self.pre(x)))


class TiedHeads(nn.Module):
    """Two Linear modules sharing one weight Parameter (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)
        self.fc2.weight = self.fc1.weight
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fc2(F.relu(self.fc1(x))))


class GetAttrRead(nn.Module):
    """fc1's weight is also read directly by the graph (a get_attr node)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x)) + self.fc1.weight.sum()


class LSTMLM(nn.Module):
    """A tiny language model: Embedding -> 2-layer LSTM -> getitem 0 -> LayerNorm -> Linear decoder."""

    def __init__(self, vocab: int = 11, hidden: int = 6, layers: int = 2, norm: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 5)
        self.lstm = nn.LSTM(5, hidden, layers)
        self.norm = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.decoder(self.norm(out))


class LSTMStateOut(nn.Module):
    """LSTM -> Linear, returning the decoded output and the LSTM state (h_n, c_n)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, 2)
        self.linear = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(x)
        return self.linear(out), state


class ConvBN(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU -> Conv2d -> BatchNorm2d: BN slices follow their producer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class FunctionalPReLU(nn.Module):
    """Linear -> F.prelu(x, scalar weight) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.slope = nn.Parameter(torch.tensor([0.25]))
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.prelu(self.fc1(x), self.slope))


class PerChannelPReLU(nn.Module):
    """Conv2d -> PReLU(num_parameters=C) -> Conv2d: the PReLU weight is sliced with the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3)
        self.act = nn.PReLU(5)
        self.conv2 = nn.Conv2d(5, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act(self.conv1(x)))



# name -> (constructor, input shape): the reference's helper models.
REFERENCE_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "SimpleLinear": (SimpleLinear, (3, 7)),
    "LinearBias": (LinearBias, (3, 7)),
    "LinearActivation": (LinearActivation, (3, 7)),
    "LinearActivationFunctional": (LinearActivationFunctional, (3, 7)),
    "SimpleConv2d": (SimpleConv2d, (1, 1, 12, 12)),
    "Conv2dBias": (Conv2dBias, (1, 1, 14, 14)),
    "Conv2dActivation": (Conv2dActivation, (1, 1, 14, 14)),
    "Conv2dPadBias": (Conv2dPadBias, (1, 1, 10, 10)),
    "Conv2dPool": (Conv2dPool, (1, 1, 12, 12)),
    "Conv2dPoolFlatten": (Conv2dPoolFlatten, (1, 1, 12, 12)),
    "Conv2dPoolFlattenFunctional": (Conv2dPoolFlattenFunctional, (1, 1, 12, 12)),
    "LSTMLinearModel": (lambda: LSTMLinearModel(4, 6, 3, 2), (5, 2, 4)),
    "LSTMLayerNormLinearModel": (lambda: LSTMLayerNormLinearModel(4, 6, 3, 2), (5, 2, 4)),
}
