"""The canonical op vocabulary: what a front-end says a graph node *is*.

A front-end (:mod:`fprune.frontends.fx_symbolic`, :mod:`fprune.frontends.aten_export`) names
every node it understands with one of these strings; the engine looks the name up in
:data:`fprune.analysis.rules.RULES`.  A node a front-end cannot name has no rule, and the engine
makes every channel it reads unprunable.  The names are front-end neutral: ``"linear"`` is an
``nn.Linear`` call under torch.fx and an ``aten.linear`` (or ``aten.addmm``) under torch.export.

Example:
    >>> from fprune.analysis.ops import OPS
    >>> OPS["binary"]
    'add/sub/mul/div of tensors: couples the channels of every tracked operand'
    >>> "conv2d" in OPS
    True
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["OPS"]


def _spatial(stem: str, what: str) -> dict[str, str]:
    return {f"{stem}{k}d": f"{what} over {k} spatial dim{'s' if k > 1 else ''}" for k in (1, 2, 3)}


_VOCABULARY: dict[str, str] = {
    # producers: a module whose weight rows are new channels
    "linear": "a Linear layer: reads channels on dim -1, produces out_features channels",
    **_spatial("conv", "a convolution (grouped and depthwise included)"),
    **_spatial("conv_transpose", "a transposed convolution (groups=1)"),
    "functional_linear": "F.linear on tensors read directly (tied or subclassed): its channels stay whole",
    "embedding": "an Embedding: its weight columns are new channels",
    "recurrent": "an LSTM, GRU or RNN: its hidden units are new channels",
    "multihead_attention": "nn.MultiheadAttention: heads and out_proj channels",
    # channels pass through, one value per channel
    "activation": "an elementwise function of one tensor (relu, gelu, silu, tanh, exp, neg, casts, ...)",
    "binary": "add/sub/mul/div of tensors: couples the channels of every tracked operand",
    "cast_as": "x.type_as(y): x's values in y's dtype (y is read for its dtype only)",
    "where": "torch.where(cond, x, y): couples x and y; cond must not vary over the channels",
    "prelu": "nn.PReLU: one slope, or one per channel on dim 1",
    "functional_prelu": "F.prelu with a single slope",
    # normalisation
    "batch_norm1d": "BatchNorm1d / InstanceNorm1d on (N, C) or (N, C, L)",
    "batch_norm2d": "BatchNorm2d / InstanceNorm2d: one entry per channel on dim 1",
    "batch_norm3d": "BatchNorm3d / InstanceNorm3d: one entry per channel on dim 1",
    "functional_batch_norm": "F.batch_norm on the model's own statistics and affine tensors",
    "layer_norm": "LayerNorm: over other dims, channels pass; over the channels, exact over the original width",
    "functional_layer_norm": "F.layer_norm on the model's own weight and bias, as layer_norm",
    "rms_norm": "nn.RMSNorm: over the channels its weight and eps are rescaled (exact)",
    "functional_rms_norm": "F.rms_norm on the model's own weight, as rms_norm",
    "rms_statistic": "a decomposed RMSNorm's mean of squares over the channels (see analysis.patterns)",
    "rms_scale": "a decomposed RMSNorm's x * rsqrt(mean of squares + eps)",
    "rms_weight": "a decomposed RMSNorm's product with its weight (rescaled by the rewrite)",
    "group_norm": "GroupNorm: pruned by whole norm groups",
    # shapes
    "reshape": "view/reshape: (batch, -1), (..., heads, head_dim) splits and their merges",
    "reshape_as": "x.reshape_as(y) / x.view_as(y): back to y's leading dims, the channels last in both",
    "pad": "F.pad with zeros on dims other than the channels (Swin's window padding)",
    "roll": "torch.roll over dims other than the channels (Swin's shifted windows)",
    "flatten": "flatten a range of dims",
    "permute": "permute dims",
    "transpose": "swap two dims",
    "getitem": "index a tensor (ints and full slices) or a tuple (a recurrent or attention result)",
    "cat": "concatenate tensors: along the channels segments join, along another dim they couple",
    "chunk": "chunk(k) into equal pieces",
    "split": "split(size) into equal pieces",
    "unbind": "unbind a dim other than the channels",
    "expand": "expand (broadcast) dims other than the channels",
    "gather": "torch.gather: index arithmetic; pruned channels read by it are kept whole",
    # attention
    "matmul": "batched matmul with the heads on a batch dim",
    "softmax": "softmax / log_softmax over a dim other than the channels",
    "scaled_dot_product_attention": "F.scaled_dot_product_attention with q, k, v heads on one batch dim",
    # reductions
    "reduce": "mean/sum/amax: over other dims channels pass; over the channels inexact (but see rms_statistic)",
    "cumsum": "cumsum along a dim other than the channels",
    "diff": "diff along a dim other than the channels",
    **_spatial("max_pool", "max pooling"),
    **_spatial("avg_pool", "average pooling"),
    **_spatial("adaptive_max_pool", "adaptive max pooling"),
    **_spatial("adaptive_avg_pool", "adaptive average pooling"),
    # metadata and graph structure
    "factory": "a new tensor (arange, ones, zeros, full, x.new_ones): reads no channel values",
    "getattr": "x.shape, x.ndim, x.dtype, x.device",
    "shape_query": "x.size(), x.size(d), x.dim()",
    "output": "the graph output",
}

OPS = MappingProxyType(_VOCABULARY)
"""Every canonical op name, with what it stands for (read-only)."""
