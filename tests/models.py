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
    # real architectures
    "BasicBlock",
    "ResNetBasic",
    "Bottleneck",
    "ResNetBottleneck",
    "InvertedResidual",
    "MobileNetV2Block",
    "SqueezeExcitation",
    "InvertedResidualSE",
    "MobileNetV3Block",
    "DenseLayer",
    "DenseNetish",
    "ViTAttention",
    "LlamaRMSNorm",
    "GemmaRMSNorm",
    "T5LayerNorm",
    "FunctionalLayerNorm",
    "FunctionalRMSNorm",
    "LayerNorm2d",
    "NORMS",
    "PreNormNet",
    "ConvNeXtish",
    "ViTBlock",
    "ViTBlockNet",
    "MHAEncoderLayer",
    "ResNeXtBlock",
    "GroupNormNet",
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


# --------------------------------------------------------------------------------------
# Real architectures: small, hand-written copies of the block structure of well-known networks
# (widths 4-16, 8x8 images), for the exactness and plan tests in test_architectures.py.


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-bn-relu-conv-bn + identity (or 1x1 conv-bn downsample), relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBasic(nn.Module):
    """ResNet-18 in miniature: stem conv-bn-relu, BasicBlock(8->8), BasicBlock(8->16, stride 2), avgpool, fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck: 1x1-bn-relu, 3x3(stride, groups)-bn-relu, 1x1(x expansion)-bn, + identity, relu."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, width: int | None = None) -> None:
        super().__init__()
        width = planes if width is None else width
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBottleneck(nn.Module):
    """ResNet-50 in miniature: stem 3->8, Bottleneck(8, planes 4) with downsample, Bottleneck(16, planes 4), avgpool, fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Bottleneck(8, 4), Bottleneck(16, 4))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand-bn-relu6], depthwise 3x3-bn-relu6, 1x1 project-bn, + x when stride 1 and in == out."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Block(nn.Module):
    """MobileNetV2 in miniature: stem, inverted residuals (8->8 t2 residual, 8->12 s2 t2, 12->12 t1 residual), 1x1 conv, pool, fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 12, 2, 2), InvertedResidual(12, 12, 1, 1)
        )
        self.last = nn.Sequential(nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.last(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's SE: adaptive avgpool -> 1x1 reduce conv -> ReLU -> 1x1 expand conv -> Hardsigmoid -> x * scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidualSE(nn.Module):
    """MobileNetV3's block: 1x1 expand-bn-act, depthwise-bn-act, SE, 1x1 project-bn, + x when stride 1 and in == out."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), act()
        )
        self.se = SqueezeExcitation(hidden, max(2, hidden // 4))
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_res else out


class MobileNetV3Block(nn.Module):
    """MobileNetV3 in miniature: Hardswish stem, SE inverted residuals (8->16->8 residual, 8->24->12 s2), 1x1 conv, pool, MLP head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidualSE(8, 16, 8, 1, nn.Hardswish), InvertedResidualSE(8, 24, 12, 2, nn.ReLU)
        )
        self.last = nn.Sequential(nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 10), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(10, classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.last(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))


class DenseLayer(nn.Module):
    """DenseNet's layer (no bottleneck): BN-ReLU-Conv3x3 producing `growth` new channels."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.relu(self.norm(x)))


class DenseNetish(nn.Module):
    """DenseNet in miniature: stem conv, a dense block of 3 layers (torch.cat([x, new], 1)), transition BN-ReLU-1x1-avgpool, head."""

    def __init__(self, stem: int = 8, growth: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.layers = nn.ModuleList(DenseLayer(stem + i * growth, growth) for i in range(3))
        width = stem + 3 * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width // 2, 1, bias=False), nn.AvgPool2d(2)
        )
        self.norm = nn.BatchNorm2d(width // 2)
        self.classifier = nn.Linear(width // 2, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv0(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        x = F.relu(self.norm(self.transition(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ViTAttention(nn.Module):
    """timm's Attention: fused qkv -> reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4) -> unbind -> SDPA -> proj."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    """timm's pre-norm Block: x + attn(norm1(x)), then x + fc2(gelu(fc1(norm2(x))))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViTBlockNet(nn.Module):
    """ViT in miniature: 4x4 patch embed of 8x8 images, cls token, pos embed, 2 pre-norm blocks, norm, head on x[:, 0]."""

    def __init__(self, dim: int = 8, heads: int = 2, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 4, dim))
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads, 2 * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class MHAEncoderLayer(nn.Module):
    """A pre-norm Transformer encoder layer on nn.MultiheadAttention (batch_first), with Linear embedding and head."""

    def __init__(self, inputs: int = 5, dim: int = 8, heads: int = 2, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x)


class ResNeXtBlock(nn.Module):
    """A ResNeXt net: stem 3->16, one Bottleneck(16, planes 4, width 8) with a 3x3 conv of groups=4, avgpool, fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.block = Bottleneck(16, 4, groups=4, width=8)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GroupNormNet(nn.Module):
    """Conv2d(3->8) -> GroupNorm(4 groups) -> ReLU -> Conv2d(8->4)."""

    def __init__(self, groups: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(groups, 8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.norm(self.conv1(x))))


# --------------------------------------------------------------------------------------
# Norms over the channels, as transformers write them (issue #14: kept exact when pruned)


class LlamaRMSNorm(nn.Module):
    """The decomposed RMSNorm of Llama/Mistral/Qwen: cast up, mean of squares, rsqrt, cast back, weight.

    ``upcast`` is the dtype the statistic is computed in (float32 in transformers; float64 here so
    that exactness holds to float64 rounding).
    """

    def __init__(self, width: int, eps: float = 1e-6, upcast: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.variance_epsilon, self.upcast = eps, upcast

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.to(self.upcast)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm: the weight is applied as ``1 + weight`` (stored around zero), squares as x * x."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        h = x.double()
        out = h * torch.rsqrt((h * h).mean(-1, keepdim=True) + self.eps)
        return (out * (1.0 + self.weight.double())).type_as(x)


class T5LayerNorm(nn.Module):
    """T5's layer norm: an RMSNorm (no mean, no bias), the weight on the left."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = torch.square(x).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


class FunctionalLayerNorm(nn.Module):
    """F.layer_norm on the module's own weight and bias."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(width)), nn.Parameter(torch.zeros(width))
        self.width, self.eps = width, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.width,), self.weight, self.bias, self.eps)


class FunctionalRMSNorm(nn.Module):
    """F.rms_norm on the module's own weight, eps positional."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.width, self.eps = width, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (self.width,), self.weight, self.eps)


class LayerNorm2d(nn.LayerNorm):
    """timm's channels-first LayerNorm: permute to channels-last, F.layer_norm, permute back."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


# name -> width -> a norm over the last dim of that width
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "layer_norm": nn.LayerNorm,
    "layer_norm_no_affine": functools.partial(nn.LayerNorm, elementwise_affine=False),
    "layer_norm_no_bias": functools.partial(nn.LayerNorm, bias=False),
    "layer_norm_eps0": functools.partial(nn.LayerNorm, eps=0.0),
    "rms_norm": functools.partial(nn.RMSNorm, eps=1e-5),
    "rms_norm_eps0": functools.partial(nn.RMSNorm, eps=0.0),
    "llama": LlamaRMSNorm,
    "gemma": GemmaRMSNorm,
    "t5": T5LayerNorm,
    "functional_layer_norm": FunctionalLayerNorm,
    "functional_rms_norm": FunctionalRMSNorm,
}


class PreNormNet(nn.Module):
    """A pre-norm residual block and a final norm over the residual stream: the hidden width under norms.

    embed: Linear(inputs, width); x = x + fc2(gelu(fc1(norm1(x)))); head(norm2(x)).  The stream
    (embed, fc2) is one group read by both norms; fc1's hidden units are another.
    """

    def __init__(self, norm: str, inputs: int = 3, width: int = 6, hidden: int = 5, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.norm1, self.norm2 = NORMS[norm](width), NORMS[norm](width)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        x = x + self.fc2(F.gelu(self.fc1(self.norm1(x))))
        return self.head(self.norm2(x))


class ConvNeXtish(nn.Module):
    """ConvNeXt's two LayerNorm forms: a channels-first LayerNorm2d after the stem, and a block's
    depthwise conv -> permute -> nn.LayerNorm -> Linear -> GELU -> Linear -> permute back, residual."""

    def __init__(self, width: int = 6, hidden: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 2, stride=2)
        self.stem_norm = LayerNorm2d(width)
        self.dwconv = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.LayerNorm(width)
        self.pw1, self.pw2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_norm(self.stem(x))
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        x = x + self.pw2(F.gelu(self.pw1(y))).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))
