"""Query heads removed within their key/value heads (grouped-query attention; issues #15, #16).

A group of key/value heads has ``subunits`` query heads per unit; a plan may mask them one by one
as long as every key/value head kept keeps the same number (``repeat_kv`` repeats each alike).
Exactness is float64 against the original with the plan's removed slices zero.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from model_strategies import zero_slices
from strategies import examples, query_head_masks
from torch import nn

from fprune import apply_patterns, load_plan, score_l1, score_wanda
from fprune.errors import FpruneWarning, InvalidMaskError
from fprune.plan import Plan

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("fprune.hf")

SIZES = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
             head_dim=8, vocab_size=64, max_position_embeddings=32, tie_word_embeddings=False, pad_token_id=0)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
}  # phi3's fused qkv_proj has no per-head slices yet (refused, test_hf)


def _decoder(family: str = "llama", **extra: Any) -> nn.Module:
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(0)
    return model_cls(config_cls(**(SIZES | extra))).double().eval()


@functools.cache
def _traced() -> tuple[nn.Module, Any]:
    model = _decoder()
    return model, hf.trace(model, seq_len=7, batch=2)  # the shapes of _ids(): a program runs its traced shapes


def _ids() -> torch.Tensor:
    return torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits


def _attention(program: Any) -> list[str]:
    return [g.name for g in score_l1(program).analysis.groups if g.subunits > 1]


def test_the_analysis_finds_query_heads_within_key_value_heads() -> None:
    _, program = _traced()
    groups = [g for g in score_l1(program).analysis.groups if g.subunits > 1]
    assert [(g.size, g.subunits) for g in groups] == [(2, 4), (2, 4)]  # 2 KV heads of 4 query heads, per layer


@settings(max_examples=examples(8), deadline=None)
@given(data=query_head_masks(2, 4), layer=query_head_masks(2, 4))
def test_any_balanced_query_head_mask_is_exact(data: torch.Tensor, layer: torch.Tensor) -> None:
    model, program = _traced()
    first, second = _attention(program)
    masks = {first: data, second: layer}
    small = apply_patterns(program, masks)
    plan = Plan(score_l1(program).analysis, MappingProxyType(masks))
    ids = _ids()
    got = small.module()(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, _logits(zero_slices(model, plan.params()), ids), rtol=1e-10, atol=1e-10)
    q = small.state_dict["model.layers.0.self_attn.q_proj.weight"]
    k = small.state_dict["model.layers.0.self_attn.k_proj.weight"]
    assert (q.shape[0] // 8, k.shape[0] // 8) == (int(data.sum()), int(data.reshape(2, 4).any(1).sum()))


def test_uneven_query_heads_per_key_value_head_are_refused() -> None:
    _, program = _traced()
    name = _attention(program)[0]
    uneven = torch.tensor([True, True, True, False, True, False, False, False])
    with pytest.raises(InvalidMaskError, match=r"keeps \[3, 1\] query heads per key/value head"):
        apply_patterns(program, {name: uneven})
    with pytest.raises(InvalidMaskError, match="or 8: one per query head"):  # neither per unit (2) nor per query head (8)
        apply_patterns(program, {name: torch.ones(5, dtype=torch.bool)})


def test_plan_json_round_trip_keeps_the_query_head_mask() -> None:
    _, program = _traced()
    name = _attention(program)[0]
    mask = torch.tensor([False, True, True, False, True, False, False, True])
    plan = Plan(score_l1(program).analysis, MappingProxyType({name: mask}))
    back = load_plan(plan.to_json(), program)
    assert torch.equal(back.masks[name], mask) and back.to_json() == plan.to_json()
    whole = torch.tensor([True] * 4 + [False] * 4)  # whole key/value heads: read back as the per-unit mask
    assert load_plan(Plan(plan.analysis, MappingProxyType({name: whole})).to_json(), program).masks[name].tolist() \
        == [True, False]


def test_subunit_scores_are_the_query_rows_plus_their_key_value_head() -> None:
    model, program = _traced()
    scored = score_l1(program)
    name = _attention(program)[0]
    attn = model.model.layers[0].self_attn
    q = attn.q_proj.weight.detach().abs().reshape(8, -1).sum(1)
    kv = sum(p.weight.detach().abs().reshape(2, -1).sum(1) for p in (attn.k_proj, attn.v_proj))
    torch.testing.assert_close(scored.subunit_scores[name].double(), q + kv.repeat_interleave(4))
    torch.testing.assert_close(scored.scores[name].double(), q.reshape(2, 4).sum(1) + kv)


def test_calibration_subunit_scores_sum_to_the_unit_scores() -> None:
    _, program = _traced()
    batches = [{"input_ids": torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(s))} for s in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        scored = score_wanda(batches)(program)
    for name in _attention(program):  # o_proj reads the query heads: the units' scores are their sums
        torch.testing.assert_close(scored.subunit_scores[name].reshape(2, 4).sum(1), scored.scores[name])


CASES = [  # widths, expected (heads, kv heads); hidden 32: Llama-like configs accept 1, 2, 4 or 8 heads
    (dict(heads=0.5), (4, 2)),
    (dict(heads=0.5, kv_heads=0.5, mlp=0.5), (2, 1)),
    (dict(heads=0.75, hidden=0.25), (2, 2)),
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("widths", "counts"), CASES, ids=["heads", "heads-kv-mlp", "heads-hidden"])
def test_widths_prune_query_heads_exactly_in_every_family(family: str, widths: dict[str, float],
                                                          counts: tuple[int, int]) -> None:
    if "hidden" in widths and family in ("qwen3", "gemma"):
        pytest.skip("qwen3's per-head norms share the hidden width's eps, gemma reads its embed_scale directly: "
                    "their hidden width is refused (test_hf)")
    model = _decoder(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        plan = hf.widths(**widths)(score_l1(hf.trace(model)))
    small = hf.apply(plan)
    assert type(small) is type(model)
    assert (small.config.num_attention_heads, small.config.num_key_value_heads) == counts
    ids = _ids()
    tol = 1e-6 if "hidden" in widths else 1e-10
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids), rtol=tol, atol=tol)


def test_query_heads_save_pretrained_round_trip_and_generation(tmp_path: Path) -> None:
    model = _decoder(hidden_size=48)  # 6 heads: 48 % 6 == 0, as LlamaConfig requires
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        small = hf.apply(hf.widths(heads=0.25, mlp=0.5)(score_l1(hf.trace(model))))
    small.save_pretrained(tmp_path)
    back, info = transformers.LlamaForCausalLM.from_pretrained(tmp_path, output_loading_info=True, dtype=torch.float64)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (back.config.num_attention_heads, back.config.num_key_value_heads) == (6, 2)
    ids = _ids()
    mine, theirs = small.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    torch.testing.assert_close(_logits(back.eval(), ids), _logits(small, ids), rtol=1e-12, atol=1e-12)
    with_cache = small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    assert torch.equal(with_cache, small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False))


def test_counts_the_config_refuses_are_raised_or_kept_on_request() -> None:
    model = _decoder(hidden_size=48, num_attention_heads=8, num_key_value_heads=2)  # 48 % 6 == 0, 48 % 5 != 0
    program = hf.trace(model)
    scored = score_l1(program)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FpruneWarning)  # no count raised
        plan = hf.widths(heads=0.25, kv_heads=0.5)(scored)  # 3 of 4 on one KV head: 48 % 3 == 0
    assert hf.apply(plan).config.num_attention_heads == 3
    model = _decoder(num_attention_heads=8, num_key_value_heads=2)  # hidden 32: 6 heads refused, 8 kept
    scored = score_l1(hf.trace(model, seq_len=7, batch=2))
    with pytest.warns(FpruneWarning, match=r"query head .*3 -> 4"):
        assert all(bool(m.all()) for m in hf.widths(heads=0.25)(scored).masks.values())
    raw = hf.widths(heads=0.25, valid_config=False)(scored)
    name = next(g.name for g in scored.analysis.groups if g.subunits > 1)
    assert int(raw.masks[name].sum()) == 6
    small = apply_patterns(raw)  # the ExportedProgram holds what the class's config refuses
    ids = _ids()
    got = small.module()(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, _logits(zero_slices(model, raw.params()), ids), rtol=1e-10, atol=1e-10)


def test_query_heads_with_uniform_false_or_too_small_a_fraction() -> None:
    _, program = _traced()
    scored = score_l1(program)
    with pytest.raises(Exception, match="uniform=False"):
        hf.widths(heads=0.5, uniform=False)(scored)
    with pytest.warns(FpruneWarning, match="removes no query head"):
        plan = hf.widths(heads=0.2)(scored)  # int(4 * 0.2) == 0
    assert all(bool(m.all()) for m in plan.masks.values())


def test_head_count_is_checked_against_the_hidden_width_the_plan_keeps() -> None:
    """6 heads do not divide hidden 32 but divide the 24 kept: LlamaConfig accepts 6 with hidden 24."""
    model = _decoder()
    scored = score_l1(hf.trace(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FpruneWarning)  # no count raised
        plan = hf.widths(heads=0.25, hidden=0.25)(scored)
    small = hf.apply(plan)
    assert (small.config.num_attention_heads, small.config.num_key_value_heads, small.config.hidden_size) == (6, 2, 24)
    ids = _ids()
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids), rtol=1e-6, atol=1e-6)
