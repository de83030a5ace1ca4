"""fprune.hf end to end: the same class back, its config updated, exact, reloadable (issue #15).

Tiny random configs, built offline; skipped without transformers (CI installs the ``hf`` extra).
Exactness is float64 against the original with the plan's removed slices zero; RMSNorm families
compute their statistic in float32 whatever the model's dtype, so those compare at 1e-6 when the
hidden width (and so that statistic) is pruned.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from model_strategies import zero_slices
from torch import nn

from fprune import score_l1, score_random, topk_mask, trace
from fprune.errors import FpruneError, InvalidArgumentError, InvalidTypeError, UnsupportedModelError

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("fprune.hf")

SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "vocab_size": 64, "max_position_embeddings": 32, "pad_token_id": 0}


def _decoder(family: str, **extra: Any) -> nn.Module:
    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
    }[family]
    kwargs = dict(SIZES, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False) | extra
    torch.manual_seed(0)
    return model_cls(config_cls(**kwargs)).double().eval()


def _ids() -> torch.Tensor:
    return torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False) if "CausalLM" in type(model).__name__ else model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _reloaded(back: nn.Module, small: nn.Module, got: torch.Tensor, want: torch.Tensor) -> None:
    """A reloaded model: every saved tensor bit for bit, the outputs to the last bits.

    Not ``rtol=0`` on the outputs: a matmul over a weight that the loader leaves at an address
    not 64-byte aligned takes another BLAS kernel on some CPUs (seen: differences of 5e-17 in
    float64 from identical weights and inputs).
    """
    mine, theirs = small.state_dict(), back.state_dict()
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _prune(model: nn.Module, stage: Any) -> tuple[nn.Module, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = stage(score_l1(hf.trace(model)))
        return hf.apply(plan), plan


CASES = [  # family, widths, expected config, tolerance
    ("llama", dict(kv_heads=0.5, mlp=0.5, hidden=0.25),
     dict(num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=32, hidden_size=24), 1e-6),
    ("mistral", dict(kv_heads=0.5, mlp=0.25), dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=48), 1e-9),
    ("qwen2", dict(mlp=0.5, hidden=0.5), dict(intermediate_size=32, hidden_size=16, num_attention_heads=4), 1e-6),
    ("qwen3", dict(kv_heads=0.5, mlp=0.5), dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=32), 1e-9),
    ("gemma", dict(kv_heads=0.5, mlp=0.5), dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=32), 1e-9),
]


@pytest.mark.parametrize(("family", "widths", "config", "tol"), CASES, ids=[c[0] for c in CASES])
def test_same_class_exact_and_input_untouched(family: str, widths: dict[str, float], config: dict[str, int],
                                              tol: float) -> None:
    model = _decoder(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, plan = _prune(model, hf.widths(**widths))
    assert type(small) is type(model) and type(small.config) is type(model.config)
    assert {k: getattr(small.config, k) for k in config} == config
    ids = _ids()
    expected = _logits(zero_slices(model, plan.params()), ids)
    torch.testing.assert_close(_logits(small, ids), expected, rtol=tol, atol=tol)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    shared = {t.data_ptr() for t in model.state_dict().values()}
    assert not any(t.data_ptr() in shared for t in small.state_dict().values())  # no storage in common
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_hidden_width_rescales_the_shared_eps() -> None:
    model = _decoder("llama")
    small, _ = _prune(model, hf.widths(hidden=0.5))
    assert small.config.hidden_size == 16
    assert small.config.rms_norm_eps == pytest.approx(model.config.rms_norm_eps * 2)
    assert small.config.head_dim == 8  # explicit: no longer hidden / heads


def test_save_pretrained_round_trip_and_generation(tmp_path: Path) -> None:
    model = _decoder("llama")
    small, _ = _prune(model, hf.widths(kv_heads=0.5, mlp=0.5, hidden=0.25))
    small.save_pretrained(tmp_path)
    back, info = transformers.LlamaForCausalLM.from_pretrained(tmp_path, output_loading_info=True, dtype=torch.float64)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = _ids()
    _reloaded(back, small, _logits(back.eval(), ids), _logits(small, ids))
    with_cache = small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    without = small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


def test_one_kv_head_per_query_head_prunes_heads() -> None:
    model = _decoder("llama", num_key_value_heads=4)
    small, plan = _prune(model, hf.widths(heads=0.5))
    assert (small.config.num_attention_heads, small.config.num_key_value_heads) == (2, 2)
    ids = _ids()
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("widths", [dict(kv_heads=0.5, mlp=0.5), dict(hidden=0.5)], ids=["heads-mlp", "hidden"])
def test_tied_embeddings_stay_tied(widths: dict[str, float], tmp_path: Path) -> None:
    """The hidden width slices the tied weight's dim 1 for the embedding and the lm_head alike."""
    model = _decoder("llama", tie_word_embeddings=True)
    small, plan = _prune(model, hf.widths(**widths))
    assert small.lm_head.weight.data_ptr() == small.model.embed_tokens.weight.data_ptr()
    ids = _ids()
    tol = 1e-6 if "hidden" in widths else 1e-9
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids), rtol=tol, atol=tol)
    small.save_pretrained(tmp_path)
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    _reloaded(back, small, _logits(back, ids), _logits(small, ids))


def _encoder(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(**SIZES)).double().eval()
    if name == "distilbert":
        cfg = transformers.DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=4, vocab_size=64,
                                            max_position_embeddings=32, pad_token_id=0)
        return transformers.DistilBertModel(cfg).double().eval()
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=64)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


@pytest.mark.parametrize(("name", "field"), [("bert", "intermediate_size"), ("distilbert", "hidden_dim"),
                                              ("gpt2", "n_inner")])
def test_layer_norm_families_prune_the_mlp_exactly(name: str, field: str) -> None:
    model = _encoder(name)
    small, plan = _prune(model, hf.widths(mlp=0.5))
    assert type(small) is type(model)
    assert getattr(small.config, field) == (64 if name != "gpt2" else 128) // 2
    ids = _ids()
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("widths", [dict(heads=0.5), dict(hidden=0.5)])
def test_layer_norm_families_refuse_heads_and_hidden(widths: dict[str, float]) -> None:
    program = hf.trace(_encoder("bert"))
    with pytest.raises(UnsupportedModelError, match="LayerNorm|ties the head size"):
        hf.widths(**widths)(score_l1(program))


def test_meta_device_prunes_shapes() -> None:
    config = transformers.LlamaConfig(**SIZES, num_key_value_heads=2, head_dim=8)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    small = hf.apply(hf.widths(kv_heads=0.5, mlp=0.5, hidden=0.5)(score_random(0)(hf.trace(model))))
    assert small.model.layers[0].mlp.gate_proj.weight.shape == (32, 16)
    assert small.model.layers[0].self_attn.k_proj.weight.shape == (8, 16)
    assert all(p.is_meta for p in small.parameters())
    with pytest.raises(FpruneError, match="meta device"):
        score_l1(hf.trace(model))


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(mlp=1.0), r"\[0, 1\)"), (dict(hidden=-0.1), r"\[0, 1\)"), (dict(heads=True), "fraction"),
])
def test_bad_fractions(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        hf.widths(**kwargs)


def test_heads_and_kv_heads_name_one_width_without_grouped_query_attention() -> None:
    """With a key/value head per query head both name the same width (query heads within key/value
    heads, both given, are tests/test_query_heads.py's)."""
    program = hf.trace(_decoder("llama", num_key_value_heads=4))
    with pytest.raises(InvalidArgumentError, match="same width"):
        hf.widths(heads=0.5, kv_heads=0.5)(score_l1(program))


def test_shared_eps_of_per_head_norms_refuses_hidden() -> None:
    program = hf.trace(_decoder("qwen3"))
    with pytest.raises(UnsupportedModelError, match="per-head q/k norms"):
        hf.widths(hidden=0.5)(score_l1(program))


def test_per_layer_widths_are_refused() -> None:
    program = hf.trace(_decoder("llama"))
    rule = topk_mask(0.0, per_module={"model.layers.0.mlp.gate_proj": 0.5})
    with pytest.raises(UnsupportedModelError, match="same count in each layer"):
        hf.apply(rule(score_l1(program)))


def test_unknown_family_and_other_inputs() -> None:
    cfg = transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, vocab_size=64)
    with pytest.raises(UnsupportedModelError, match="supported: bert, .*llama"):
        hf.trace(transformers.GPTNeoXForCausalLM(cfg))
    with pytest.raises(InvalidTypeError, match="PreTrainedModel"):
        hf.trace(nn.Linear(2, 2))
    with pytest.raises(InvalidTypeError, match="torch.fx"):
        hf.widths(mlp=0.5)(score_l1(trace(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)))))
    with pytest.raises(InvalidTypeError, match="Plan"):
        hf.apply("plan")  # type: ignore[arg-type]


def _mha(**extra: Any) -> nn.Module:
    return _decoder("llama", **{"num_key_value_heads": 4, "num_hidden_layers": 3, **extra})


@pytest.mark.parametrize(("build", "widths"), [
    (_mha, dict(heads=0.5, mlp=0.5)),
    (lambda: _decoder("qwen2", num_attention_heads=8, num_key_value_heads=4, head_dim=4, num_hidden_layers=3),
     dict(kv_heads=0.5, mlp=0.3)),
], ids=["llama-heads", "qwen2-kv-groups"])
def test_per_layer_widths_exact_and_reloaded_by_hf_load(build: Any, widths: dict[str, float], tmp_path: Path) -> None:
    model = build()
    stage = hf.widths(**widths, uniform=False)
    assert repr(stage).endswith("uniform=False)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = stage(score_l1(hf.trace(model)))
        small = hf.apply(plan, uniform=False)
    layers = small.config.fprune_layer_widths
    mlp = [f["intermediate_size"] for f in layers]
    assert len(layers) == 3 and sum(mlp) == 3 * 64 - int(3 * 64 * widths["mlp"]) and len(set(mlp)) > 1
    assert small.config.intermediate_size == max(mlp)
    for i, fields in enumerate(layers):
        assert small.model.layers[i].mlp.up_proj.weight.shape[0] == fields["intermediate_size"]
        assert small.model.layers[i].mlp.down_proj.in_features == fields["intermediate_size"]
        assert small.model.layers[i].self_attn.k_proj.weight.shape[0] == fields["num_key_value_heads"] * \
            small.model.layers[i].self_attn.head_dim
    ids = _ids()
    torch.testing.assert_close(_logits(small, ids), _logits(zero_slices(model, plan.params()), ids), rtol=1e-9, atol=1e-9)
    hf.save(small, tmp_path)
    back = hf.load(tmp_path)
    assert type(back) is type(small) and back.dtype == torch.float64
    _reloaded(back, small, _logits(back.eval(), ids), _logits(small, ids))
    with_cache = back.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
    assert torch.equal(with_cache, back.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        type(model).from_pretrained(tmp_path)  # the standard class refuses, loudly


def test_per_layer_plan_needs_uniform_false() -> None:
    plan = hf.widths(mlp=0.5, uniform=False)(score_l1(hf.trace(_mha())))
    with pytest.raises(UnsupportedModelError, match="uniform=False"):
        hf.apply(plan)
    with pytest.raises(InvalidTypeError, match="bool"):
        hf.widths(mlp=0.5, uniform="no")  # type: ignore[arg-type]


def test_head_and_hidden_counts_are_rounded_to_a_valid_config(tmp_path: Path) -> None:
    """Llama's config wants hidden_size a multiple of num_attention_heads: 3 of 4 heads is raised to 4,
    23 of 32 hidden channels (with 2 heads) to 24, each with a warning naming the group."""
    model = _mha(num_hidden_layers=1)
    with pytest.warns(Warning, match="kept more attention units"):
        plan = hf.widths(heads=0.25)(score_l1(hf.trace(model)))
    assert all(bool(m.all()) for m in plan.masks.values())
    with pytest.warns(Warning, match="kept more hidden units"):
        plan = hf.widths(heads=0.5, hidden=0.3)(score_l1(hf.trace(model)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = hf.apply(plan)
    assert (small.config.num_attention_heads, small.config.hidden_size) == (2, 24)
    small.save_pretrained(tmp_path)
    assert type(model).from_pretrained(tmp_path).config.hidden_size == 24


def test_a_plan_the_config_refuses_is_refused_by_apply() -> None:
    program = hf.trace(_mha(num_hidden_layers=1))
    plan = topk_mask(0.0, per_module={"*q_proj": 0.25})(score_l1(program))
    with pytest.raises(UnsupportedModelError, match="validation"):
        hf.apply(plan)


def test_hf_load_of_a_uniform_folder_is_from_pretrained(tmp_path: Path) -> None:
    small, _ = _prune(_decoder("llama"), hf.widths(mlp=0.5))
    hf.save(small, tmp_path)
    back = hf.load(tmp_path)
    _reloaded(back, small, _logits(back.eval(), _ids()), _logits(small, _ids()))
    with pytest.raises(InvalidTypeError, match="PreTrainedModel"):
        hf.save(nn.Linear(2, 2), tmp_path / "x")


@pytest.mark.parametrize("cls", ["ViTModel", "ViTForImageClassification"])
def test_vit_prunes_the_mlp_exactly_on_images(cls: str, tmp_path: Path) -> None:
    config = transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=16, patch_size=4, num_labels=3)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).double().eval()
    small, plan = _prune(model, hf.widths(mlp=0.5))
    assert type(small) is type(model) and small.config.intermediate_size == 32
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def out(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            o = m(pixel_values=images)
        return o.logits if hasattr(o, "logits") else o.last_hidden_state

    torch.testing.assert_close(out(small), out(zero_slices(model, plan.params())), rtol=1e-9, atol=1e-9)
    small.save_pretrained(tmp_path)
    torch.testing.assert_close(out(type(model).from_pretrained(tmp_path, dtype=torch.float64).eval()), out(small))
    with pytest.raises(UnsupportedModelError, match="ties the head size"):
        hf.widths(heads=0.5)(score_l1(hf.trace(model)))


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_t5_prunes_the_mlp_exactly_and_generates(ff: str, tmp_path: Path) -> None:
    """Encoder-decoder: trace feeds the ids to both sides; d_ff is exact (wi, or wi_0 * wi_1 gated).
    Its heads stay: the relative position bias is added per head, and cross-attention makes its own."""
    config = transformers.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=64,
                                   decoder_start_token_id=0, feed_forward_proj=ff)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).double().eval()
    small, plan = _prune(model, hf.widths(mlp=0.5))
    assert small.config.d_ff == 32
    ids = _ids()

    def logits(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return m(input_ids=ids, decoder_input_ids=ids).logits

    torch.testing.assert_close(logits(small), logits(zero_slices(model, plan.params())), rtol=1e-9, atol=1e-9)
    small.save_pretrained(tmp_path)
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float64).eval()
    _reloaded(back, small, logits(back), logits(small))
    assert torch.equal(back.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True),
                       back.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False))
    with pytest.raises(UnsupportedModelError, match="heads .* cannot be pruned exactly"):
        hf.widths(heads=0.5)(score_l1(hf.trace(model)))


def _classifier(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=64,
            max_position_embeddings=32, num_labels=3)).double().eval()
    if name == "distilbert":
        return transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
            dim=32, hidden_dim=64, n_layers=2, n_heads=4, vocab_size=64, max_position_embeddings=32,
            num_labels=3)).double().eval()
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
        patch_size=4, num_labels=3)).double().eval()


@pytest.mark.parametrize(("name", "fields"), [("bert", ("num_attention_heads", "hidden_size")),
                                               ("distilbert", ("n_heads", "dim")),
                                               ("vit", ("num_attention_heads", "hidden_size"))])
@pytest.mark.parametrize(("widths", "kept"), [(dict(heads=0.5, mlp=0.25), (2, 16)), (dict(hidden=0.3), (3, 24))])
def test_layer_norm_families_prune_heads_and_hidden_together_when_approximate(
        name: str, fields: tuple[str, str], widths: dict[str, float], kept: tuple[int, int], tmp_path: Path) -> None:
    """The class ties hidden = heads x head size: heads and hidden go together (the hidden width follows the
    heads kept), inexact under nn.LayerNorm, so only with approximate=True; the rebuilt class computes what
    the approximate pruned program does, and reloads."""
    from fprune import apply_patterns, score_with

    model = _classifier(name)
    program = hf.trace(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = hf.widths(**widths)(score_with(score_l1, approximate=True)(program))
        small = hf.apply(plan)
    assert type(small) is type(model) and tuple(getattr(small.config, f) for f in fields) == kept
    # the shapes the program was exported with (one sequence of 8 tokens, one image)
    inputs = {"pixel_values": torch.randn(1, 3, 16, 16, dtype=torch.float64)} if name == "vit" else \
        {"input_ids": torch.randint(1, 64, (1, 8), generator=torch.Generator().manual_seed(3))}
    with torch.no_grad():
        got = small(**inputs).logits
        torch.testing.assert_close(got, apply_patterns(plan).module()(**inputs).logits)
        small.save_pretrained(tmp_path)
        back = type(model).from_pretrained(tmp_path, dtype=torch.float64).eval()
        _reloaded(back, small, back(**inputs).logits, got)
    with pytest.raises(UnsupportedModelError, match="approximate=True"):
        hf.widths(**widths)(score_l1(program))


def test_tied_heads_and_hidden_bad_requests() -> None:
    from fprune import score_with

    scored = score_with(score_l1, approximate=True)(hf.trace(_classifier("bert")))
    with pytest.raises(InvalidArgumentError, match="not both"):
        hf.widths(kv_heads=0.5, hidden=0.5)(scored)
    with pytest.raises(InvalidArgumentError, match="uniform=False"):
        hf.widths(heads=0.5, uniform=False)(scored)
    gpt2 = score_with(score_l1, approximate=True)(hf.trace(_encoder("gpt2")))
    with pytest.raises(UnsupportedModelError, match="fused projection"):
        hf.widths(heads=0.5)(gpt2)
