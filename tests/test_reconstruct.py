"""reconstruct (issue #16): a Plan -> Plan stage whose values apply_patterns writes in.

On a one-hidden-layer MLP the consumer's input after pruning is the original's kept columns, so
least squares with ``damp=0`` is optimal on the calibration data and FLAP's bias compensation
removes the mean of what was dropped: both are never worse than plain pruning there.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, seeds
from toolz import pipe
from torch import nn

from fprune import apply_patterns, export, load_plan, reconstruct, score_l1, score_wanda, topk_mask
from fprune.errors import InvalidArgumentError, InvalidTypeError, PlanFormatError, PlanMismatchError

pytestmark = pytest.mark.filterwarnings("ignore::fprune.errors.FpruneWarning")


def _net(seed: int, hidden: int, inputs: int = 5) -> nn.Sequential:
    torch.manual_seed(seed % 2**31)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 3)).double().eval()


def _batches(seed: int, inputs: int = 5, n: int = 3, rows: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, inputs, generator=g, dtype=torch.float64) for _ in range(n)]


def _error(model: nn.Module, reference: nn.Module, batches: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return sum(float((model(x) - reference(x)).pow(2).sum()) for x in batches)


@settings(max_examples=examples(20))
@given(seed=seeds(), hidden=st.integers(2, 10), sparsity=st.sampled_from([0.25, 0.5, 0.75]),
       method=st.sampled_from(["lstsq", "bias"]))
def test_never_worse_than_plain_pruning_on_the_calibration_data(seed: int, hidden: int, sparsity: float,
                                                                method: str) -> None:
    model, batches = _net(seed, hidden), _batches(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = pipe(model, score_l1, topk_mask(sparsity))
    solved = reconstruct(batches, method, damp=0.0)(plan)
    assert not plan.values and solved.masks is plan.masks
    plain, better = apply_patterns(plan), apply_patterns(solved)
    assert better.get_submodule("2").weight.shape == plain.get_submodule("2").weight.shape
    assert _error(better, model, batches) <= _error(plain, model, batches) * (1 + 1e-9) + 1e-12
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(bool(torch.isfinite(v).all()) for v in solved.values.values())


@settings(max_examples=examples(10))
@given(seed=seeds(), method=st.sampled_from(["lstsq", "bias"]))
def test_export_front_end_gives_the_same_values(seed: int, method: str) -> None:
    model, batches = _net(seed, 8), _batches(seed, rows=6)
    fx = reconstruct(batches, method)(topk_mask(0.5)(score_l1(model)))
    ex = reconstruct(batches, method)(topk_mask(0.5)(score_l1(export(model, (batches[0],)))))
    assert fx.values.keys() == ex.values.keys() == {"2.weight" if method == "lstsq" else "2.bias"}
    for name in fx.values:
        torch.testing.assert_close(ex.values[name], fx.values[name])
    x = batches[1]
    torch.testing.assert_close(apply_patterns(ex).module()(x), apply_patterns(fx)(x))


def test_rank_deficient_inputs_stay_finite() -> None:
    """Two equal input columns: S[K, K] is singular; damp=0 falls back to the pseudo-inverse."""
    model = _net(0, 6)
    with torch.no_grad():
        model[0].weight[1] = model[0].weight[0]
        model[0].bias[1] = model[0].bias[0]
    batches = _batches(1)
    plan = topk_mask(0.25)(score_wanda(batches)(model))
    for damp in (0.0, 0.01):
        solved = reconstruct(batches, damp=damp)(plan)
        assert all(bool(torch.isfinite(v).all()) for v in solved.values.values())


def test_bias_method_needs_a_bias_and_lstsq_does_not() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3, bias=False)).double().eval()
    batches = _batches(0)
    plan = topk_mask(0.5)(score_l1(model))
    with pytest.warns(Warning, match="no bias"):
        assert not reconstruct(batches, "bias")(plan).values
    assert set(reconstruct(batches)(plan).values) == {"2.weight"}


def test_bad_arguments_and_json() -> None:
    model = _net(0, 6)
    batches = _batches(0)
    plan = topk_mask(0.5)(score_l1(model))
    with pytest.raises(InvalidArgumentError, match="method"):
        reconstruct(batches, "obs")  # type: ignore[arg-type]
    for damp in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match="damp"):
            reconstruct(batches, damp=damp)
    with pytest.raises(InvalidTypeError, match="expects a Plan"):
        reconstruct(batches)(model)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="yielded nothing"):
        reconstruct([])(plan)
    solved = reconstruct(batches)(plan)
    assert repr(solved).endswith("values=1)")
    with pytest.raises(PlanFormatError, match="reconstructed tensors"):
        solved.to_json()
    assert plan.to_json()  # the plan before reconstruct still has its JSON form


def _llama(hidden: int, layers: int, heads: int, vocab: int, seq_len: int) -> tuple[Any, nn.Module, Any]:
    """fprune.hf, a tiny float64 LlamaForCausalLM (head size 8, half as many KV heads) and its program."""
    transformers = pytest.importorskip("transformers")
    hf = pytest.importorskip("fprune.hf")
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=8,
                                      vocab_size=vocab, max_position_embeddings=4 * seq_len)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).double().eval()
    return hf, model, hf.trace(model, seq_len=seq_len)


def test_hf_llama_reconstructs_without_biases() -> None:
    hf, model, program = _llama(hidden=32, layers=2, heads=4, vocab=64, seq_len=8)
    batches = [{"input_ids": torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(i)),
                "use_cache": False} for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = hf.widths(mlp=0.5)(score_wanda(batches)(program))
        plain = hf.apply(plan)
        solved = hf.apply(reconstruct(batches)(plan))
    assert type(solved) is type(model) and solved.config.intermediate_size == 32

    def error(m: nn.Module) -> float:
        with torch.no_grad():
            return sum(float((m(**b).logits - model(**b).logits).pow(2).sum()) for b in batches)

    assert error(solved) < error(plain)


@settings(max_examples=examples(10))
@given(seed=seeds(), sparsity=st.sampled_from([0.25, 0.5]), padding=st.sampled_from([0, 1]))
def test_conv_consumers_are_re_solved_over_patches(seed: int, sparsity: float, padding: int) -> None:
    torch.manual_seed(seed % 2**31)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=padding)).double().eval()
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(4, 3, 7, 7, generator=g, dtype=torch.float64) for _ in range(2)]
    plan = topk_mask(sparsity)(score_l1(model))
    solved = reconstruct(batches, damp=0.0)(plan)
    assert set(solved.values) == {"2.weight"}
    plain, better = apply_patterns(plan), apply_patterns(solved)
    assert _error(better, model, batches) <= _error(plain, model, batches) * (1 + 1e-9) + 1e-12


def test_saved_plan_with_values_reproduces_the_model_bit_for_bit(tmp_path: Any) -> None:
    model, batches = _net(3, 8), _batches(3)
    solved = reconstruct(batches)(topk_mask(0.5)(score_wanda(batches)(model)))
    solved.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "values.safetensors"]
    fresh = _net(3, 8)  # the same architecture and weights, built again
    loaded = load_plan(tmp_path, fresh)
    assert loaded.values.keys() == solved.values.keys()
    a, b = apply_patterns(solved), apply_patterns(loaded)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    with pytest.raises(PlanFormatError, match="pass the directory"):
        load_plan((tmp_path / "plan.json").read_text(), fresh)
    other = _net(3, 6)
    with pytest.raises(PlanMismatchError):
        load_plan(tmp_path, other)
    (tmp_path / "values.safetensors").write_bytes(b"broken")
    with pytest.raises(PlanFormatError, match="cannot be read"):
        load_plan(tmp_path, fresh)
    plain = topk_mask(0.5)(score_l1(model))
    plain.save(tmp_path)  # a plan without values removes the stale file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    assert load_plan(str(tmp_path), fresh).to_json() == plain.to_json()


def test_bias_method_on_conv_consumers_with_a_bias() -> None:
    """FLAP's compensation over a convolution's patches: never worse than plain pruning on the batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1)).double().eval()
    batches = [torch.randn(4, 3, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))]
    plan = topk_mask(0.5)(score_l1(model))
    solved = reconstruct(batches, "bias")(plan)
    assert set(solved.values) == {"2.bias"}
    assert _error(apply_patterns(solved), model, batches) <= _error(apply_patterns(plan), model, batches) + 1e-12


def _conv_bn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed % 2**31)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).double()
    with torch.no_grad():  # statistics that are not the defaults, so that a correction shows
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _output_of(model: nn.Module, name: str, batches: list[torch.Tensor]) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        for x in batches:
            model(x)
    handle.remove()
    return torch.cat(seen).movedim(1, -1).reshape(-1, seen[0].shape[1])


@settings(max_examples=examples(8))
@given(seed=seeds(), sparsity=st.sampled_from([0.25, 0.5]))
def test_batchnorm_statistics_give_the_original_channel_moments(seed: int, sparsity: float) -> None:
    """A bias-less conv cannot hold FLAP's compensation: the BatchNorm after it is re-estimated, so
    that each of its output channels has the original's mean and variance on the batches."""
    model = _conv_bn(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    plan = topk_mask(sparsity)(score_l1(model))
    solved = reconstruct(batches, "bias")(plan)
    # the bias-less conv 3 has no bias to move; the BatchNorm 1 before it sees its input unchanged
    assert set(solved.values) == {"4.running_mean", "4.running_var", "8.bias"}
    assert set(reconstruct(batches, "bias", batchnorm=False)(plan).values) == {"8.bias"}
    kept = next(e["keep"] for e in plan.params()["4.running_mean"] if e["dim"] == 0)
    want, got = _output_of(model, "4", batches)[:, kept], _output_of(apply_patterns(solved), "4", batches)
    torch.testing.assert_close(got.mean(0), want.mean(0), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(got.var(0), want.var(0), rtol=1e-6, atol=1e-9)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert repr(reconstruct(batches, batchnorm=False)).endswith("batchnorm=False)")


def test_batchnorm_correction_is_the_same_on_both_front_ends() -> None:
    model = _conv_bn(1)
    batches = [torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)]
    fx = reconstruct(batches)(topk_mask(0.5)(score_l1(model)))
    ex = reconstruct(batches)(topk_mask(0.5)(score_l1(export(model, (batches[0],)))))
    assert fx.values.keys() == ex.values.keys() == {"3.weight", "4.running_mean", "4.running_var", "8.weight"}
    for name in fx.values:
        torch.testing.assert_close(ex.values[name], fx.values[name])
    assert fx.reconstruction.keys() == ex.reconstruction.keys() == {"3", "8"}
    torch.testing.assert_close(apply_patterns(ex).module()(batches[0]), apply_patterns(fx)(batches[0]))


def test_each_layer_is_re_solved_from_the_pruned_models_own_inputs() -> None:
    """Sequential: the last consumer's weight is the least-squares fit to the original output from
    the input the pruned model feeds it, which already carries the earlier layer's re-solve."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    batches = _batches(4, rows=60)
    plan = topk_mask(0.5)(score_l1(model))
    solved = reconstruct(batches, damp=0.0)(plan)
    assert set(solved.values) == {"2.weight", "4.weight"} and set(solved.reconstruction) == {"2", "4"}
    seen: list[torch.Tensor] = []
    small = apply_patterns(solved)
    small.get_submodule("4").register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        for b in batches:
            small(b)
    x = torch.cat(seen)
    y = torch.cat([model(b) for b in batches]).detach() - model[4].bias.detach()
    want = torch.linalg.lstsq(x, y).solution.T
    torch.testing.assert_close(solved.values["4.weight"], want, rtol=1e-6, atol=1e-8)
    for before, after in solved.reconstruction.values():
        assert 0.0 <= after <= before


def test_non_finite_activations_name_the_batch() -> None:
    model, batches = _net(0, 6), _batches(0)
    batches[1] = batches[1].clone()
    batches[1][3, 2] = float("nan")
    with pytest.raises(InvalidArgumentError, match="NaN or inf on calibration batch 1"):
        reconstruct(batches)(topk_mask(0.5)(score_l1(model)))
    with pytest.raises(InvalidArgumentError, match="calibration batch 0 does not fit"):
        reconstruct([torch.randn(4, 7, dtype=torch.float64)])(topk_mask(0.5)(score_l1(model)))


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.c = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.c(h) + self.c(2 * h)


def test_a_consumer_called_twice_is_left_as_pruned_with_a_warning() -> None:
    torch.manual_seed(0)
    model = _Twice().double().eval()
    plan = topk_mask(0.5)(score_l1(model))
    with pytest.warns(Warning, match="called once only; left as pruned: c"):
        solved = reconstruct(_batches(0, inputs=4))(plan)
    assert not solved.values and not solved.reconstruction


def test_summary_and_saved_plans_keep_the_reconstruction_report(tmp_path: Any) -> None:
    from fprune import summary

    model, batches = _net(5, 8), _batches(5)
    solved = reconstruct(batches)(topk_mask(0.5)(score_l1(model)))
    (before, after), = solved.reconstruction.values()
    text = str(summary(model, apply_patterns(solved), batches[0], plan=solved))
    assert "re-solved by reconstruct: not the zeroed original" in text
    assert f"2: {before:.2e} -> {after:.2e}" in text
    assert "re-solved" not in str(summary(model, apply_patterns(solved), batches[0]))
    solved.save(tmp_path)
    assert load_plan(tmp_path, _net(5, 8)).reconstruction == solved.reconstruction


def test_hf_dict_batches_need_only_the_model_inputs() -> None:
    """The constants hf.trace exported with (use_cache=False) are filled in: a batch is its tensors."""
    hf, _, program = _llama(hidden=16, layers=1, heads=2, vocab=32, seq_len=4)
    batches = [{"input_ids": torch.randint(0, 32, (1, 4), generator=torch.Generator().manual_seed(i))} for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = hf.widths(mlp=0.5)(score_wanda(batches)(program))
        solved = reconstruct(batches)(plan)
    assert set(solved.values) == {"model.layers.0.mlp.down_proj.weight"}


def test_a_batchnorm_after_the_last_consumer_is_corrected_too() -> None:
    """Only conv 0's channels pruned, method='bias': conv 3 has no bias to re-solve, so nothing is
    re-solved, yet the BatchNorm 4 it feeds is re-estimated (its channels are all kept)."""
    model = _conv_bn(7)
    batches = [torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)]
    plan = topk_mask(0.0, per_module={"0": 0.5})(score_l1(model))
    with pytest.warns(Warning, match="3 have no bias"):
        solved = reconstruct(batches, "bias")(plan)
    assert set(solved.values) == {"4.running_mean", "4.running_var"} and not solved.reconstruction
    want, got = _output_of(model, "4", batches), _output_of(apply_patterns(solved), "4", batches)
    torch.testing.assert_close(got.mean(0), want.mean(0), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(got.var(0), want.var(0), rtol=1e-6, atol=1e-9)
