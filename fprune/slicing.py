"""Per-module-type slicing rules, as data.

A :class:`SliceSpec` says, for one module type, which tensors lose which
indices when the module's input channels (``in_keep``) and output channels
(``out_keep``) are pruned, and which attributes change with them.  The same
index map drives the rewrite and the plan's portable JSON form, so the two
cannot disagree.

Example:
    >>> import torch
    >>> from torch import nn
    >>> spec = SPECS[nn.Linear]
    >>> keep = torch.tensor([True, False, True])
    >>> {k: {d: v.tolist() for d, v in m.items()} for k, m in spec.index(nn.Linear(2, 3), None, keep).items()}
    {'weight': {0: [True, False, True]}, 'bias': {0: [True, False, True]}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import TypeAlias

__all__ = ["IndexMap", "SliceSpec", "SPECS", "slice_tensor", "spec_for"]

IndexMap: TypeAlias = dict[str, dict[int, Tensor]]  # tensor name -> {dim: bool keep-mask along dim}


@dataclass(frozen=True)
class SliceSpec:
    """How one module type is sliced."""

    index: Callable[[Any, Tensor | None, Tensor | None], IndexMap]  # (module, in_keep, out_keep) -> index map
    attrs: Callable[[Any], dict[str, Any]]  # attributes to set on the sliced copy, read from its tensors
    mask_source: tuple[str, int] | None = None  # (tensor, dim) whose keep along dim is the output mask
    width_attrs: Callable[[Any, int], dict[str, Any]] | None = None  # attrs set from the kept input width


def _entries(module: Any, plan: dict[str, dict[int, Tensor | None]]) -> IndexMap:
    """Drops absent tensors and dims that are not pruned."""
    out: IndexMap = {}
    for name, dims in plan.items():
        if getattr(module, name, None) is None:
            continue
        kept = {d: k for d, k in dims.items() if k is not None}
        if kept:
            out[name] = kept
    return out


def _linear_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"weight": {0: out_keep, 1: in_keep}, "bias": {0: out_keep}})


def _linear_attrs(m: Any) -> dict[str, Any]:
    out, inp = m.weight.shape[:2]
    return {"in_features": inp, "out_features": out}


def _conv_attrs(m: Any) -> dict[str, Any]:
    out, inp = m.weight.shape[:2]
    return {"in_channels": inp * m.groups, "out_channels": out}


def _channelwise_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    names = ("weight", "bias", "running_mean", "running_var")
    return _entries(m, {n: {0: in_keep} for n in names})


def _norm_attrs(m: Any) -> dict[str, Any]:
    for name in ("weight", "running_mean"):
        t = getattr(m, name, None)
        if t is not None:
            return {"num_features": t.shape[0]}
    return {}


def _layer_norm_attrs(m: Any) -> dict[str, Any]:
    return {"normalized_shape": (m.weight.shape[0],)} if m.weight is not None else {}


def _prelu_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"weight": {0: in_keep}})


def _lstm_names(m: Any) -> list[tuple[int, str]]:
    suffixes = ("", "_reverse") if m.bidirectional else ("",)
    return [(k, s) for k in range(m.num_layers) for s in suffixes]


GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}  # packed gate blocks per recurrent mode


def _lstm_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    gates = None if out_keep is None else out_keep.repeat(GATES[m.mode])
    layer_in = None if out_keep is None else out_keep.repeat(2 if m.bidirectional else 1)
    plan: dict[str, dict[int, Tensor | None]] = {}
    for k, sfx in _lstm_names(m):
        plan[f"weight_ih_l{k}{sfx}"] = {0: gates, 1: in_keep if k == 0 else layer_in}
        plan[f"weight_hh_l{k}{sfx}"] = {0: gates, 1: out_keep}
        plan[f"bias_ih_l{k}{sfx}"] = {0: gates}
        plan[f"bias_hh_l{k}{sfx}"] = {0: gates}
    return _entries(m, plan)


def _lstm_attrs(m: Any) -> dict[str, Any]:
    return {"hidden_size": m.weight_hh_l0.shape[1], "input_size": m.weight_ih_l0.shape[1]}


def _depthwise_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"weight": {0: in_keep}, "bias": {0: in_keep}})


def _depthwise_attrs(m: Any) -> dict[str, Any]:
    n = m.weight.shape[0]
    return {"in_channels": n, "out_channels": n, "groups": n}


def _grouped_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    # whole conv groups go: output rows of removed groups; each kept group reads all its inputs
    return _entries(m, {"weight": {0: out_keep}, "bias": {0: out_keep}})


def _grouped_attrs(m: Any) -> dict[str, Any]:
    per_group = m.out_channels // m.groups  # `m` shows the new tensors over the original attributes
    groups = m.weight.shape[0] // per_group
    return {"groups": groups, "out_channels": m.weight.shape[0], "in_channels": groups * m.weight.shape[1]}


def _group_norm_width(m: Any, n: int) -> dict[str, Any]:
    return {"num_channels": n, "num_groups": n // (m.num_channels // m.num_groups)}


def _mha_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"in_proj_weight": {0: out_keep, 1: in_keep}, "in_proj_bias": {0: out_keep}})


def _mha_attrs(m: Any) -> dict[str, Any]:
    from fprune.modules import PrunedMultiheadAttention

    rows, width = m.in_proj_weight.shape
    return {"num_heads": rows // (3 * m.head_dim), "embed_dim": width, "kdim": width, "vdim": width,
            "__class__": PrunedMultiheadAttention}


def _conv_transpose_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"weight": {0: in_keep, 1: out_keep}, "bias": {0: out_keep}})


def _conv_transpose_attrs(m: Any) -> dict[str, Any]:
    inp, out = m.weight.shape[:2]
    return {"in_channels": inp, "out_channels": out}


def _transposed_linear_attrs(m: Any) -> dict[str, Any]:
    inp, out = m.weight.shape[:2]
    return {"in_features": inp, "out_features": out}


def _embedding_index(m: Any, in_keep: Tensor | None, out_keep: Tensor | None) -> IndexMap:
    return _entries(m, {"weight": {1: out_keep}})


_DEPTHWISE = SliceSpec(_depthwise_index, _depthwise_attrs)
_GROUPED = SliceSpec(_grouped_index, _grouped_attrs, ("weight", 0))
_LINEAR = SliceSpec(_linear_index, _linear_attrs, ("weight", 0))
_CONV = SliceSpec(_linear_index, _conv_attrs, ("weight", 0))
_NORM = SliceSpec(_channelwise_index, _norm_attrs, width_attrs=lambda m, n: {"num_features": n})

SPECS: Mapping[type, SliceSpec] = MappingProxyType({
    nn.Linear: _LINEAR,
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.Conv3d: _CONV,
    nn.BatchNorm1d: _NORM,
    nn.BatchNorm2d: _NORM,
    nn.BatchNorm3d: _NORM,
    nn.InstanceNorm1d: _NORM,
    nn.InstanceNorm2d: _NORM,
    nn.InstanceNorm3d: _NORM,
    nn.LayerNorm: SliceSpec(_channelwise_index, _layer_norm_attrs, width_attrs=lambda m, n: {"normalized_shape": (n,)}),
    nn.RMSNorm: SliceSpec(_channelwise_index, _layer_norm_attrs, width_attrs=lambda m, n: {"normalized_shape": (n,)}),
    nn.PReLU: SliceSpec(_prelu_index, lambda m: {"num_parameters": m.weight.shape[0]}),
    nn.LSTM: SliceSpec(_lstm_index, _lstm_attrs, ("weight_hh_l0", 1)),
    nn.GRU: SliceSpec(_lstm_index, _lstm_attrs, ("weight_hh_l0", 1)),
    nn.RNN: SliceSpec(_lstm_index, _lstm_attrs, ("weight_hh_l0", 1)),
    nn.ConvTranspose1d: SliceSpec(_conv_transpose_index, _conv_transpose_attrs, ("weight", 1)),
    nn.ConvTranspose2d: SliceSpec(_conv_transpose_index, _conv_transpose_attrs, ("weight", 1)),
    nn.ConvTranspose3d: SliceSpec(_conv_transpose_index, _conv_transpose_attrs, ("weight", 1)),
    nn.Embedding: SliceSpec(_embedding_index, lambda m: {"embedding_dim": m.weight.shape[1]}, ("weight", 1)),
    nn.GroupNorm: SliceSpec(_channelwise_index, lambda m: {}, width_attrs=_group_norm_width),
    nn.MultiheadAttention: SliceSpec(_mha_index, _mha_attrs, ("in_proj_weight", 0)),
})


def _transposed_linear_spec() -> SliceSpec:
    return SliceSpec(_conv_transpose_index, _transposed_linear_attrs, ("weight", 1))


_TRANSPOSED_LINEAR = _transposed_linear_spec()


def spec_for(module: Any) -> SliceSpec:
    """The slicing rule for a module (parametrized modules use their original type)."""
    from torch.nn.utils import parametrize

    from fprune.modules import TransposedLinear

    kind = parametrize.type_before_parametrizations(module)
    if kind is TransposedLinear:
        return _TRANSPOSED_LINEAR
    groups = getattr(module, "groups", 1)
    if groups > 1 and kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return _DEPTHWISE if module.in_channels == groups == module.out_channels else _GROUPED
    for base in kind.__mro__:  # subclasses (out_proj's NonDynamicallyQuantizableLinear) slice like their base
        if base in SPECS:
            return SPECS[base]
    raise KeyError(f"no slicing rule for {kind.__name__}")


def slice_tensor(tensor: Tensor, dims: Mapping[int, Tensor]) -> Tensor:
    """A new tensor holding the kept indices of `tensor` along each dim (never a view).

    Each dim maps to a bool keep-mask or to the kept positions (int64).

    Example:
        >>> import torch
        >>> t = torch.arange(6.).reshape(2, 3)
        >>> slice_tensor(t, {1: torch.tensor([True, False, True])})
        tensor([[0., 2.],
                [3., 5.]])
    """
    if not dims:
        return tensor.detach().clone()
    out = tensor.detach()
    for dim, keep in sorted(dims.items()):
        index = keep.nonzero().squeeze(1) if keep.dtype == torch.bool else keep
        out = out.index_select(dim, index.to(out.device))
    return out
