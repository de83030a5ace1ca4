"""The torch.fx front-end: names each node of a symbolically traced graph with a canonical op.

A traced graph calls modules (``call_module``), functions (``call_function``) and tensor methods
(``call_method``).  Three read-only tables, built once per process, map module types, functions
and method names onto the canonical op names of :data:`fprune.analysis.ops.OPS`; the
ExportedProgram front-end raises aten ops into the same three forms, so both front-ends end here.
Nothing in this table decides what an op does to channels: that is the rules' job.

Example:
    >>> import torch
    >>> from torch import nn
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    >>> modules = dict(gm.named_modules())
    >>> [canonical_op(node, modules) for node in gm.graph.nodes]
    [None, 'conv2d', 'activation', 'output']
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node
from torch.nn.utils import parametrize

from fprune.modules import PrunedLayerNorm, PrunedMultiheadAttention, TransposedLinear, layer_norm_full

__all__ = ["Index", "INDEX", "canonical_op"]

_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.ELU, nn.CELU, nn.SELU, nn.Hardshrink, nn.LeakyReLU, nn.LogSigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.GELU, nn.Softshrink, nn.Threshold,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_ACTIVATION_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu, F.rrelu, F.hardtanh, F.relu6, F.sigmoid, F.hardsigmoid, F.tanh, F.silu, F.mish,
    F.hardswish, F.elu, F.celu, F.selu, F.hardshrink, F.leaky_relu, F.logsigmoid, F.softplus,
    F.softsign, F.tanhshrink, F.gelu, F.softshrink, F.dropout, F.relu_, F.elu_, F.leaky_relu_,
    torch.relu, torch.sigmoid, torch.tanh, torch.nn.functional.threshold,
    operator.neg, torch.neg, operator.pos, torch.abs, operator.abs, torch.exp, torch.square,
    torch.pow, operator.pow, torch.rsqrt, torch.sqrt, torch.cos, torch.sin, torch.log, torch.reciprocal,
    torch.erf, torch.clamp, torch.clamp_min, torch.zeros_like, torch.ones_like, torch.full_like,
    torch.logical_not,
)
_ACTIVATION_METHODS = (
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "neg", "abs", "exp", "square",
    "contiguous", "clone", "detach", "float", "double", "half", "to",
    "pow", "rsqrt", "sqrt", "cos", "sin", "log", "reciprocal", "clamp", "clamp_min",
)
_BINARY = (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
           operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.rsub,
           operator.eq, operator.ne, operator.le, operator.lt, operator.ge, operator.gt, operator.and_,
           operator.or_, torch.eq, torch.ne, torch.le, torch.lt, torch.ge, torch.gt, torch.bitwise_and,
           torch.bitwise_or, torch.logical_and, torch.minimum, torch.maximum)
_BINARY_METHODS = ("add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_")


@dataclass(frozen=True)
class Index:
    """The front-end's tables: module type, function, method name -> canonical op name."""

    modules: Mapping[type, str]
    functions: Mapping[Any, str]
    methods: Mapping[str, str]


def _build_index() -> Index:
    modules: dict[type, str] = {nn.Linear: "linear", TransposedLinear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d",
                                nn.ConvTranspose1d: "conv_transpose1d", nn.ConvTranspose2d: "conv_transpose2d",
                                nn.ConvTranspose3d: "conv_transpose3d", nn.Embedding: "embedding",
                                nn.LSTM: "recurrent", nn.GRU: "recurrent", nn.RNN: "recurrent",
                                nn.PReLU: "prelu", nn.LayerNorm: "layer_norm", PrunedLayerNorm: "layer_norm",
                                nn.RMSNorm: "rms_norm", nn.GroupNorm: "group_norm",
                                nn.MultiheadAttention: "multihead_attention",
                                PrunedMultiheadAttention: "multihead_attention", nn.Flatten: "flatten"}
    modules.update({t: "activation" for t in _ACTIVATION_MODULES})
    for k in (1, 2, 3):
        modules.update({getattr(nn, f"BatchNorm{k}d"): f"batch_norm{k}d", getattr(nn, f"InstanceNorm{k}d"): f"batch_norm{k}d"})
    functions: dict[Any, str] = {f: "activation" for f in _ACTIVATION_FUNCTIONS}
    functions.update({f: "binary" for f in _BINARY})
    functions.update({F.linear: "functional_linear", F.prelu: "functional_prelu", F.batch_norm: "functional_batch_norm",
                      F.layer_norm: "functional_layer_norm", layer_norm_full: "functional_layer_norm",
                      F.rms_norm: "functional_rms_norm",
                      torch.chunk: "chunk", torch.split: "split", torch.permute: "permute",
                      torch.transpose: "transpose", torch.unbind: "unbind", operator.matmul: "matmul",
                      torch.matmul: "matmul", torch.bmm: "matmul", F.softmax: "softmax", torch.softmax: "softmax",
                      F.log_softmax: "softmax", F.scaled_dot_product_attention: "scaled_dot_product_attention",
                      getattr: "getattr", torch.flatten: "flatten", operator.getitem: "getitem", torch.cat: "cat",
                      torch.concat: "cat", torch.reshape: "reshape", torch.mean: "reduce", torch.sum: "reduce",
                      torch.amax: "reduce", torch.where: "where", torch.cumsum: "cumsum", torch.diff: "diff",
                      torch.gather: "gather", torch.arange: "factory", torch.ones: "factory",
                      torch.zeros: "factory", torch.full: "factory", torch.empty: "factory",
                      torch.scalar_tensor: "factory", F.pad: "pad", torch.constant_pad_nd: "pad", torch.roll: "roll"})
    for k in (1, 2, 3):
        for kind in ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool"):
            op = f"{kind}{k}d"
            modules[getattr(nn, "".join(w.capitalize() for w in kind.split("_")) + f"{k}d")] = op
            functions[getattr(F, op)] = op
    methods: dict[str, str] = {m: "activation" for m in _ACTIVATION_METHODS}
    methods.update({m: "binary" for m in _BINARY_METHODS})
    methods.update({"chunk": "chunk", "split": "split", "permute": "permute", "transpose": "transpose",
                    "unbind": "unbind", "matmul": "matmul", "softmax": "softmax", "log_softmax": "softmax",
                    "size": "shape_query", "dim": "shape_query", "flatten": "flatten", "view": "reshape",
                    "reshape": "reshape", "reshape_as": "reshape_as", "view_as": "reshape_as", "roll": "roll",
                    "mean": "reduce", "sum": "reduce", "amax": "reduce",
                    "type_as": "cast_as", "expand": "expand", "cumsum": "cumsum", "new_ones": "factory",
                    "new_zeros": "factory", "new_full": "factory", "new_empty": "factory"})
    return Index(MappingProxyType(modules), MappingProxyType(functions), MappingProxyType(methods))


INDEX = _build_index()
"""The tables (read-only mapping proxies)."""


def canonical_op(node: Node, modules: Mapping[str, Any]) -> str | None:
    """The canonical op a node is, or None when the front-end does not know it (or it is an input).

    `modules` maps the graph's module names to modules (``dict(gm.named_modules())``); a
    parametrized module is named by its type before parametrization.
    """
    if node.op == "call_module":
        return INDEX.modules.get(parametrize.type_before_parametrizations(modules[str(node.target)]))
    if node.op == "call_function":
        try:
            return INDEX.functions.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return INDEX.methods.get(str(node.target))
    if node.op == "output":
        return "output"
    return None
