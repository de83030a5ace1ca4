"""Hugging Face models through torch.export: the ops they produce are read, pruning stays exact.

Tiny random configs, built offline.  Skipped when transformers is not installed (CI installs the
``hf`` extra, so it runs there).  What is asserted is the front-end's coverage, the subject of the
export work: no group is kept whole because of an op the analysis has no rule for, and what is
pruned (MLP widths, attention heads and grouped-query KV groups, the hidden width of RMSNorm
families) is exact in float64.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from model_strategies import zero_slices

from fprune import Options, analyze, apply_patterns, export, score_l1, topk_mask
from fprune.plan import Plan

transformers = pytest.importorskip("transformers")

NO_RULE = "fprune has no exact rule for this op"
SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
         "vocab_size": 64, "max_position_embeddings": 32}


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(**SIZES, num_key_value_heads=2)
    return transformers.LlamaForCausalLM(cfg)


def _bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(**SIZES)
    return transformers.BertModel(cfg)


def _main_output(out: object) -> torch.Tensor:
    """The logits of a causal LM, the last hidden state of an encoder (a ModelOutput or its tuple)."""
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    assert isinstance(out, tuple) and isinstance(out[0], torch.Tensor), type(out)
    return out[0]


def _gpt2() -> torch.nn.Module:  # Conv1D projections: aten.addmm on (in, out) weights
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, n_positions=32, vocab_size=64)
    return transformers.GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("build", [_llama, _bert, _gpt2], ids=["llama", "bert", "gpt2"])
def test_every_op_is_read_and_mlp_pruning_is_exact(build) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build().double().eval()
    ids = torch.randint(0, 64, (1, 8))
    kwargs = {"input_ids": ids} | ({"use_cache": False} if "LMHead" in type(model).__name__
                                   or "CausalLM" in type(model).__name__ else {})
    program = export(model, kwargs=kwargs)
    analysis = analyze(program)
    no_rule = [b.message for g in analysis.groups for b in g.blocks if NO_RULE in b.message]
    assert no_rule == []
    assert sum(g.prunable() for g in analysis.groups) >= 1  # the MLP width of the layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = topk_mask(0.25)(score_l1(program))
        small = apply_patterns(plan)
    state = {k: v.clone() for k, v in program.state_dict.items()}
    expected = zero_slices(model, plan.params())(**kwargs)
    got = small.module()(**kwargs)
    # Llama's RMSNorm computes in float32 whatever the model's dtype: the hidden width, now pruned
    # (weight * sqrt(d/d'), eps * d/d'), is exact up to float32 rounding there.
    tol = 1e-6 if build is _llama else 1e-9
    torch.testing.assert_close(_main_output(got), _main_output(expected), rtol=tol, atol=tol)
    assert all(torch.equal(v, program.state_dict[k]) for k, v in state.items())  # input unchanged
    assert sum(v.numel() for v in small.state_dict.values()) < sum(v.numel() for v in state.values())


def _qwen3() -> torch.nn.Module:  # per-head q/k RMSNorm over head_dim, GQA
    cfg = transformers.Qwen3Config(**SIZES, num_key_value_heads=2, head_dim=8)
    return transformers.Qwen3ForCausalLM(cfg)


@pytest.mark.parametrize("build", [_llama, _qwen3, _bert], ids=["llama", "qwen3", "bert"])
def test_attention_heads_and_kv_groups_are_pruned_exactly(build) -> None:  # type: ignore[no-untyped-def]
    """Heads of every layer (whole KV groups under GQA: repeat_kv ties each key/value head to its
    query heads), the other widths kept: exact in float64 through the program's edited sizes."""
    torch.manual_seed(0)
    model = build().double().eval()
    causal = "CausalLM" in type(model).__name__
    kwargs = {"input_ids": torch.randint(0, 64, (1, 8))} | ({"use_cache": False} if causal else {})
    program = export(model, kwargs=kwargs)
    analysis = analyze(program)
    heads = [g for g in analysis.groups if any(p.endswith(("k_proj", "attention.self.query")) for p in g.producers)]
    assert heads and all(g.prunable() for g in heads)
    assert [g.size for g in heads] == [2 if causal else 4]  # kv groups (GQA) or heads (MHA)
    masks = {g.name: torch.arange(g.size) != 0 for g in heads}
    plan = Plan(analysis, masks, Options())
    small = apply_patterns(plan)
    expected = zero_slices(model, plan.params())(**kwargs)
    got = small.module()(**kwargs)
    torch.testing.assert_close(_main_output(got), _main_output(expected), rtol=1e-9, atol=1e-9)
    width = {k: v.shape[0] for k, v in small.state_dict.items() if k.endswith(("k_proj.weight", "self.key.weight"))}
    assert set(width.values()) == {8 if causal else 24}  # one of 2 kv groups of 8 rows, or one of 4 heads of 8
