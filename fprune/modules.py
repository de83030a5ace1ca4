"""Modules that pruning produces when no torch module can hold the result.

``nn.MultiheadAttention`` ties its input width, its number of heads times the head size and its
output width to one ``embed_dim``; once heads are removed those differ.
:class:`PrunedMultiheadAttention` is the same module with a forward that reads every size from its
tensors.  The rewrite swaps the class of a pruned ``nn.MultiheadAttention`` (its parameters,
buffers and attributes are kept), so ``isinstance(m, nn.MultiheadAttention)`` still holds.

A LayerNorm over pruned channels computes its mean and variance over the kept ones only, a
different function; :class:`PrunedLayerNorm` (an ``nn.LayerNorm`` subclass, swapped in the same
way) and :func:`layer_norm_full` compute them as over the original width with the removed
channels zero, which is exact.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune import apply_patterns
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.attn = nn.MultiheadAttention(8, 4, batch_first=True)
    ...         self.head = nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         return self.head(self.attn(x, x, x, need_weights=False)[0])
    >>> pruned = apply_patterns(Block(), {"attn": torch.tensor([True, False, True, True])})  # one mask entry per head
    >>> type(pruned.attn).__name__, pruned.attn.num_heads, tuple(pruned.attn.in_proj_weight.shape)
    ('PrunedMultiheadAttention', 3, (18, 8))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fprune.errors import InvalidArgumentError

__all__ = ["PrunedMultiheadAttention", "PrunedLayerNorm", "TransposedLinear", "layer_norm_full"]


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A bool mask (True = not allowed) as an additive float mask; a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` after head pruning: ``num_heads * head_dim`` may differ from ``embed_dim``.

    Same parameters and call signature as ``nn.MultiheadAttention`` (packed ``in_proj_weight``,
    ``out_proj``, ``batch_first``, ``key_padding_mask``, ``attn_mask``, ``need_weights``,
    ``average_attn_weights``, ``is_causal`` as a hint that requires ``attn_mask``), computed
    without the fused kernels.  ``add_bias_kv``, ``add_zero_attn`` and separate ``kdim``/``vdim``
    projections are not supported (the analysis never prunes such a module).  A 3-D ``attn_mask``
    must have ``batch * num_heads`` rows for the heads that remain.
    """

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention over the remaining heads; returns (output, weights or None) like the original."""
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention)")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, tgt, _ = query.shape  # batch first from here on
        src = key.shape[1]
        inner = self.in_proj_weight.shape[0] // 3
        heads, head_dim = inner // self.head_dim, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.chunk(3)

        def split(x: Tensor, w: Tensor, b: Tensor | None, length: int) -> Tensor:
            return F.linear(x, w, b).view(batch, length, heads, head_dim).transpose(1, 2)

        q, k, v = split(query, w_q, b_q, tgt), split(key, w_k, b_k, src), split(value, w_v, b_v, src)
        bias = _additive(attn_mask, q.dtype)  # broadcasts over (batch, heads, tgt, src)
        if bias is not None and bias.dim() == 3:
            if bias.shape[0] != batch * heads:
                raise RuntimeError(
                    f"a 3-D attn_mask must have batch * num_heads = {batch * heads} rows for this pruned "
                    f"attention ({heads} heads remain), got {bias.shape[0]}; keep the rows of the kept heads"
                )
            bias = bias.reshape(batch, heads, tgt, src)
        padding = _additive(key_padding_mask, q.dtype)
        if padding is not None:
            padding = padding.reshape(batch, 1, 1, src)
            bias = padding if bias is None else bias + padding
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)  # (batch, heads, tgt, src)
            weights = (scores if bias is None else scores + bias).softmax(dim=-1)
            dropped = F.dropout(weights, p=p) if p > 0 else weights
            context = dropped @ v
        else:  # the fused kernel, as torch's own module uses when no weights are asked for
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        out = F.linear(context.transpose(1, 2).reshape(batch, tgt, inner), self.out_proj.weight, self.out_proj.bias)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        seen = dropped.mean(dim=1) if average_attn_weights else dropped  # as torch: after dropout
        return out, seen if batched else seen.squeeze(0)


class TransposedLinear(nn.Module):
    """A linear layer whose weight is stored ``(in_features, out_features)``: ``addmm(bias, x, weight)``.

    What Hugging Face's ``Conv1D`` (GPT-2's projections) computes; the torch.export front-end reads
    an ``aten.addmm`` on a program's own tensors as this module, so that its channels are sliced
    like a Linear's (weight dim 0 by the input channels, dim 1 and the bias by the output channels).

    Example:
        >>> import torch
        >>> layer = TransposedLinear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(layer(x), x @ layer.weight + layer.bias)
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        if str(device) != "meta":
            nn.init.normal_(self.weight, std=0.02)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x @ weight + bias`` over the last dim of `x`."""
        out = x.reshape(-1, x.shape[-1]) @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def layer_norm_full(x: Tensor, normalized_shape: tuple[int, ...] | list[int], weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5, *, full_width: int) -> Tensor:
    """``F.layer_norm`` over the last dim as if it were `full_width` wide, the missing channels zero.

    The statistics of a LayerNorm do not depend on where the zero channels are, so padding the
    input with ``full_width - d'`` zeros, normalising with the same kernel, and keeping the first
    ``d'`` outputs is the original LayerNorm on the kept channels, exactly.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> x = torch.randn(2, 3, dtype=torch.float64)
        >>> zero_padded = torch.cat([x[:, :1], torch.zeros(2, 1, dtype=torch.float64), x[:, 1:]], dim=1)
        >>> torch.allclose(layer_norm_full(x, (3,), full_width=4), F.layer_norm(zero_padded, (4,))[:, [0, 2, 3]])
        True
    """
    kept = int(normalized_shape[-1])
    if len(normalized_shape) != 1 or full_width < kept:
        raise InvalidArgumentError(
            f"layer_norm_full normalises one dim of at most full_width={full_width} channels, got "
            f"normalized_shape={tuple(normalized_shape)}; pass the pruned width as normalized_shape and the "
            "original width as full_width")
    if full_width == kept:
        return F.layer_norm(x, (kept,), weight, bias, eps)
    out = F.layer_norm(F.pad(x, (0, full_width - kept)), (full_width,), None, None, eps)[..., :kept]
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


class PrunedLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over pruned channels: mean and variance as over ``full_width`` channels.

    The removed channels count as zeros, so the module equals the original LayerNorm (with the
    removed weights and biases zero) on the channels kept.  Parameters, ``state_dict`` keys and
    ``isinstance(m, nn.LayerNorm)`` are those of the LayerNorm it replaces; normalises one dim.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fprune import apply_patterns
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
        >>> pruned = apply_patterns(net, {"0": torch.tensor([True, True, False, True])})
        >>> type(pruned.get_submodule("1")).__name__, pruned.get_submodule("1").full_width
        ('PrunedLayerNorm', 4)
    """

    full_width: int

    def forward(self, input: Tensor) -> Tensor:
        """Normalises the last dim of `input` as if it were ``full_width`` wide."""
        width = getattr(self, "full_width", self.normalized_shape[-1])
        return layer_norm_full(input, self.normalized_shape, self.weight, self.bias, self.eps, full_width=width)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, full_width={getattr(self, 'full_width', None)}"
