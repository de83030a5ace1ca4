"""Activation-aware scorers (issue #16): score_activation, score_wanda, score_flap.

Each score is checked against the same statistic computed by hand from forward hooks on the
original model; the front-ends (torch.fx, torch.export) agree; the model is untouched; bad
calibration input gives a clear error.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import zero_slices
from strategies import calibration_batches, examples, layer_widths, seeds
from toolz import pipe
from torch import nn

from fprune import apply_patterns, export, score_l1, topk_mask
from fprune.calibrate import score_activation, score_flap, score_wanda
from fprune.errors import InvalidArgumentError, InvalidTypeError

pytestmark = pytest.mark.filterwarnings("ignore::fprune.errors.FpruneWarning")


def _mlp(widths: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed % 2**31)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def _inputs(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every Linear/Conv's inputs over all batches, flattened to [tokens, channels] in float64."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            def hook(mod: nn.Module, args: Any, name: str = name) -> None:
                x = args[0].detach().double()
                seen.setdefault(name, []).append(x.movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() == 4
                                                 else x.reshape(-1, x.shape[-1]))
            hooks.append(m.register_forward_pre_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in seen.items()}


def _expected(kind: str, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    w = weight.detach().double().transpose(0, 1).flatten(1)  # [in, out * kernel]
    if kind == "wanda":
        return w.abs().sum(1) * x.norm(dim=0)
    if kind == "flap":
        return x.var(dim=0, unbiased=False) * (w * w).sum(1)
    if kind == "l2":
        return x.norm(dim=0)
    return x.abs().mean(0)


SCORERS = {"wanda": score_wanda, "flap": score_flap, "activation": score_activation,
           "l2": lambda b: score_activation(b, statistic="l2")}


@settings(max_examples=examples(25))
@given(widths=layer_widths(min_layers=2, max_layers=4, max_width=6), seed=seeds(), data=st.data(),
       kind=st.sampled_from(sorted(SCORERS)))
def test_scores_equal_the_statistic_computed_by_hand(widths: list[int], seed: int, data: st.DataObject,
                                                     kind: str) -> None:
    model = _mlp(widths, seed)
    batches = data.draw(calibration_batches(widths[0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scored = SCORERS[kind](batches)(model)
    inputs = _inputs(model, batches)
    for i in range(0, 2 * (len(widths) - 2), 2):  # hidden Linear i feeds Linear i + 2 through a ReLU
        expected = _expected(kind, model[i + 2].weight, inputs[str(i + 2)])
        torch.testing.assert_close(scored.scores[str(i)], expected.float(), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@settings(max_examples=examples(10))
@given(widths=layer_widths(min_layers=2, max_layers=3, max_width=6), seed=seeds(), data=st.data(),
       kind=st.sampled_from(sorted(SCORERS)))
def test_export_front_end_gives_the_same_scores(widths: list[int], seed: int, data: st.DataObject, kind: str) -> None:
    model = _mlp(widths, seed)
    rows = data.draw(st.integers(1, 4))
    batches = [torch.randn(rows, widths[0], generator=torch.Generator().manual_seed(seed + i)) for i in range(2)]
    fx = SCORERS[kind](batches)(model)
    ex = SCORERS[kind](batches)(export(model, (batches[0],)))
    assert fx.scores.keys() == ex.scores.keys()
    for name in fx.scores:
        torch.testing.assert_close(ex.scores[name], fx.scores[name])


@settings(max_examples=examples(10))
@given(seed=seeds(), sparsity=st.sampled_from([0.25, 0.5, 0.75]))
def test_pipeline_stays_exact(seed: int, sparsity: float) -> None:
    model = _mlp([5, 8, 6, 3], seed).double()
    batches = [torch.randn(4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)]
    plan = pipe(model, score_wanda(batches), topk_mask(sparsity))
    pruned = apply_patterns(plan)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    torch.testing.assert_close(pruned(x), zero_slices(model, plan.params())(x))


def test_conv_consumers_read_channel_dim_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3)).eval()
    batches = [torch.randn(2, 3, 9, 9), torch.randn(1, 3, 9, 9)]
    inputs = _inputs(model, batches)
    for kind in ("wanda", "flap"):
        scored = SCORERS[kind](batches)(model)
        torch.testing.assert_close(scored.scores["0"], _expected(kind, model[2].weight, inputs["2"]).float(),
                                   rtol=1e-5, atol=1e-6)


def test_batch_forms_and_repr() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x))) * scale

    model = TwoInputs().eval()
    x, s = torch.randn(5, 3), torch.ones(1)
    by_tuple = score_wanda([(x, s)])(model).scores["a"]
    by_dict = score_wanda([{"x": x, "scale": s}])(model).scores["a"]
    torch.testing.assert_close(by_tuple, by_dict)
    assert repr(score_wanda([(x, s)])) == "score_wanda(<1 batches>)"
    assert repr(score_activation(iter([x]), statistic="l2")) == "score_activation(<batches>, statistic='l2')"
    assert "score_flap" in repr(score_flap([x])(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))))


def test_bad_calibration_input() -> None:
    model = _mlp([3, 4, 2], 0)
    with pytest.raises(InvalidArgumentError, match="yielded nothing"):
        score_wanda([])(model)
    once = (torch.randn(2, 3) for _ in range(2))
    stage = score_wanda(once)
    stage(model)
    with pytest.raises(InvalidArgumentError, match="generator serves one call"):
        stage(model)
    with pytest.raises(InvalidArgumentError, match="batch 1 does not fit the model.*shaped like"):
        score_flap([torch.randn(2, 3), torch.randn(2, 5)])(model)
    with pytest.raises(InvalidArgumentError, match="NaN or inf on calibration batch 0"):
        score_activation([torch.full((2, 3), float("nan"))])(model)
    with pytest.raises(InvalidTypeError, match="iterable of calibration batches"):
        score_wanda(torch.randn(2, 3))  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="calibration batch 0 is a str"):
        score_wanda(["text"])(model)
    with pytest.raises(InvalidArgumentError, match="statistic"):
        score_activation([torch.randn(2, 3)], statistic="max")  # type: ignore[arg-type]
    program = export(model, (torch.randn(2, 3),))
    with pytest.raises(InvalidArgumentError, match="exported with"):
        score_wanda([torch.randn(5, 3)])(program)


def test_activation_aware_scores_feed_hf_widths() -> None:
    transformers = pytest.importorskip("transformers")
    hf = pytest.importorskip("fprune.hf")
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=8, vocab_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    program = hf.trace(model, seq_len=8)
    batches = [{"input_ids": torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(i)),
                "use_cache": False} for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scored = score_wanda(batches)(program)
        small = hf.apply(hf.widths(kv_heads=0.5, mlp=0.5)(scored))
    seen: list[torch.Tensor] = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        for b in batches:
            model(**b)
    hook.remove()
    x = torch.cat(seen).double().reshape(-1, 64)
    expected = model.model.layers[1].mlp.down_proj.weight.detach().double().abs().sum(0) * x.norm(dim=0)
    torch.testing.assert_close(scored.scores["model.layers.1.mlp.gate_proj"], expected.float())
    assert small.config.intermediate_size == 32 and small.config.num_key_value_heads == 1
    assert score_l1(program).scores.keys() == scored.scores.keys()


def test_a_model_in_train_mode_is_not_modified() -> None:
    """The batches run in eval mode: BatchNorm's running statistics stay, and every mode is restored."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(6, 4, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(2, 3, 8, 8)]
    first = score_wanda(batches)(model).scores["0"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(score_wanda(batches)(model).scores["0"], first)  # no dropout noise
