"""What fprune knows of each Hugging Face family: one table of names, no code path per model.

A :class:`Family` says where a transformers config keeps each width (hidden, heads, KV heads,
head dim, MLP) and which module of a decoder or encoder layer produces it.  Module names are
:mod:`fnmatch` globs matched against the producers of the channel groups, so a base model
(``model.layers.0...``) and a task model around it (``model.model.layers.0...``) match alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["Family", "FAMILIES"]


@dataclass(frozen=True)
class Family:
    """The config fields and producer globs of one ``config.model_type``.

    Example:
        >>> FAMILIES["llama"].heads, FAMILIES["llama"].attention
        ('num_attention_heads', '*layers.*.self_attn.k_proj')
    """

    hidden: str  # config field of the hidden (residual) width
    heads: str  # config field of the query head count
    kv_heads: str | None  # config field of the key/value head count (None: one per query head)
    head_dim: str | None  # config field written explicitly when heads change (None: hidden // heads)
    mlp: str  # config field of the MLP width
    norm: Literal["rms", "layer"]  # the norm over the hidden width
    eps: str | None  # config field of that norm's eps (rescaled by d/d' when the hidden width shrinks)
    attention: str | None  # glob of a producer of each layer's heads group (None: heads not read)
    mlp_in: str  # glob of a producer of each layer's MLP width
    embed: str  # glob of the hidden width's first producer (the token embedding)
    head_norms: bool = False  # per-head q/k norms share ``eps`` with the hidden-width norms
    # what trace() feeds: token ids, the same ids to an encoder and a decoder, or images from the config
    inputs: Literal["ids", "seq2seq", "pixels"] = "ids"
    # producers the class builds hidden channels wide, outside the residual stream (BERT's pooler): when the
    # hidden width is pruned they lose as many channels, by their own scores
    hidden_like: tuple[str, ...] = ()


_LLAMA = Family(hidden="hidden_size", heads="num_attention_heads", kv_heads="num_key_value_heads",
                head_dim="head_dim", mlp="intermediate_size", norm="rms", eps="rms_norm_eps",
                attention="*layers.*.self_attn.k_proj", mlp_in="*layers.*.mlp.gate_proj", embed="*embed_tokens")

FAMILIES: Mapping[str, Family] = MappingProxyType({
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": Family(**{**_LLAMA.__dict__, "head_norms": True}),
    "gemma": _LLAMA,
    # fused qkv_proj (its slices are refused) and gate_up_proj (two equal chunks)
    "phi3": Family(**{**_LLAMA.__dict__, "attention": None, "mlp_in": "*layers.*.mlp.gate_up_proj"}),
    "gpt2": Family(hidden="n_embd", heads="n_head", kv_heads=None, head_dim=None, mlp="n_inner", norm="layer",
                   eps="layer_norm_epsilon", attention=None, mlp_in="*h.*.mlp.c_fc", embed="*wte"),
    "bert": Family(hidden="hidden_size", heads="num_attention_heads", kv_heads=None, head_dim=None,
                   mlp="intermediate_size", norm="layer", eps="layer_norm_eps",
                   attention="*layer.*.attention.self.query", mlp_in="*layer.*.intermediate.dense",
                   embed="*embeddings.word_embeddings", hidden_like=("*pooler.dense",)),
    "distilbert": Family(hidden="dim", heads="n_heads", kv_heads=None, head_dim=None, mlp="hidden_dim", norm="layer",
                         eps=None, attention="*layer.*.attention.q_lin", mlp_in="*layer.*.ffn.lin1",
                         embed="*embeddings.word_embeddings", hidden_like=("*pre_classifier",)),
    # the relative position bias is one embedding of block 0, added per head in every layer; cross-attention
    # builds a zero bias per head: its heads are refused, so are T5's (one num_heads for both)
    "t5": Family(hidden="d_model", heads="num_heads", kv_heads=None, head_dim="d_kv", mlp="d_ff", norm="rms",
                 eps="layer_norm_epsilon", attention="*.SelfAttention.q", mlp_in="*.DenseReluDense.wi*",
                 embed="*encoder.embed_tokens", inputs="seq2seq"),
    "vit": Family(hidden="hidden_size", heads="num_attention_heads", kv_heads=None, head_dim=None,
                  mlp="intermediate_size", norm="layer", eps="layer_norm_eps", attention="*layers.*.attention.q_proj",
                  mlp_in="*layers.*.mlp.fc1", embed="*embeddings.patch_embeddings.projection", inputs="pixels"),
})
