"""Tests for fprune.rewrite (apply_patterns): exactness, bias folding, the reference, purity, errors."""

from __future__ import annotations

import functools
import operator
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st
from toolz import compose_left, pipe
from torch import Tensor, nn
from torch.fx import GraphModule

import models as zoo
from strategies import examples
from fprune import apply_patterns, score_l1, topk_mask
from fprune.errors import (
    FpruneError,
    FpruneWarning,
    InvalidMaskError,
    InvalidTypeError,
    UnprunableError,
)
from fprune.groups import Options, analyze
from fprune.modules import PrunedLayerNorm
from fprune.plan import Plan
from fprune.trace import trace
from model_strategies import (
    ACT_ZERO_AT_ZERO,
    FAMILIES,
    Case,
    chains,
    kinds,
    run_reference,
    with_masked_norms,
    zero_rows,
    zero_slices,
)

# --------------------------------------------------------------------------- helpers


def state_values(model: nn.Module) -> dict[str, Tensor]:
    """A detached clone of every parameter and buffer, by name."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_same_state(before: dict[str, Tensor], model: nn.Module) -> None:
    """The model's parameters and buffers have the same names, shapes and values as `before`."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].shape == value.shape and torch.equal(after[key], value), key


def storages(model: nn.Module) -> set[int]:
    """The storage addresses of every parameter and buffer."""
    tensors = list(model.parameters()) + list(model.buffers())
    return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}


def assert_no_sharing(original: nn.Module, pruned: nn.Module) -> None:
    """No Parameter object, buffer or storage of `original` appears in `pruned`."""
    ids = {id(t) for t in list(original.parameters()) + list(original.buffers())}
    assert not ids & {id(t) for t in list(pruned.parameters()) + list(pruned.buffers())}
    assert not storages(original) & storages(pruned)


def plan_params(model: nn.Module, masks: dict[str, Tensor], **options: bool) -> dict[str, Any]:
    """The portable listing of every sliced tensor for `masks` (via fprune.plan.Plan)."""
    return Plan(analyze(trace(model)), masks, Options(**options)).params()


def kept_output(out: Tensor, case: Case) -> Tensor:
    """The output restricted to the kept channels of a masked output layer."""
    last = case.producers[-1]
    if last not in case.masks:
        return out
    return out.index_select(case.out_dim, case.masks[last].nonzero().squeeze(1))


def out_size(module: nn.Module) -> int:
    """The number of output channels of a producer."""
    if isinstance(module, nn.LSTM):
        return module.hidden_size
    return module.weight.shape[0]


def prune_case(case: Case, **extra: bool) -> GraphModule:
    """apply_patterns on a drawn case with the options it needs."""
    return apply_patterns(case.model, case.masks, prune_outputs=case.prune_outputs,
                          approximate=case.approximate, **extra)


def close(a: Tensor, b: Tensor) -> None:
    """Float64 equality up to rounding."""
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def close32(a: Tensor, b: Tensor) -> None:
    """A float64 result equals a float32 one (the reference's) up to float32 rounding."""
    torch.testing.assert_close(a.float(), b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- exactness (default semantics)

FAMILY = pytest.mark.parametrize("family", sorted(FAMILIES))


@FAMILY
@settings(max_examples=examples(30))
@given(data=st.data())
def test_pruned_equals_zero_slice_emulation(family: str, data: st.DataObject) -> None:
    """The pruned model computes the original with every removed slice zeroed; shapes equal mask sums."""
    case = data.draw(chains(family), label="case")
    before = state_values(case.model)
    pruned = prune_case(case)
    emulated = with_masked_norms(zero_slices(case.model, plan_params(case.model, case.masks)), case)
    close(pruned(case.x), kept_output(emulated(case.x), case))
    for name, mask in case.masks.items():
        assert out_size(pruned.get_submodule(name)) == int(mask.sum()), name
    assert_same_state(before, case.model)
    assert_no_sharing(case.model, pruned)


@settings(max_examples=examples(20))
@given(case=chains("lstm"))
def test_lstm_layer_norm_exact_without_approximate(case: Case) -> None:
    """LSTM chains (some with a LayerNorm after the LSTM) prune exactly by default: the norm keeps its width."""
    pruned = apply_patterns(case.model, case.masks, prune_outputs=case.prune_outputs)
    emulated = zero_slices(case.model, plan_params(case.model, case.masks, prune_outputs=case.prune_outputs))
    close(pruned(case.x), kept_output(emulated(case.x), case))


@settings(max_examples=examples(10))
@given(chains())
def test_unmasked_apply_is_a_copy(case: Case) -> None:
    """With no masks the result computes the same function and shares nothing with the input."""
    pruned = apply_patterns(case.model, {})
    close(pruned(case.x), case.model(case.x))
    assert_no_sharing(case.model, pruned)


@settings(max_examples=examples(10))
@given(chains())
def test_graphmodule_input_gives_the_same_result(case: Case) -> None:
    """A user-traced GraphModule is accepted, left unchanged, and pruned like its module."""
    traced = torch.fx.symbolic_trace(case.model)
    code, before = traced.code, state_values(traced)
    a = prune_case(case)
    b = apply_patterns(traced, case.masks, prune_outputs=case.prune_outputs, approximate=case.approximate)
    close(a(case.x), b(case.x))
    assert_same_state(before, traced)
    assert traced.code == code
    assert_no_sharing(traced, b)


@settings(max_examples=examples(10))
@given(chains())
def test_apply_is_deterministic_and_forward_independent(case: Case) -> None:
    """Same model and masks give bit-identical results, whether or not a forward pass ran in between."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        a = prune_case(case, fold_bias=True)
        case.model(case.x)
        b = prune_case(case, fold_bias=True)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- bias folding


def _padded_conv(module: Any) -> bool:
    """A Conv2d with zero padding."""
    return isinstance(module, nn.Conv2d) and any(p != 0 for p in module.padding)


def reference_applies(case: Case, fold: bool) -> bool:
    """Whether the torch.ao reference prunes this case correctly (its known defects excluded)."""
    modules = dict(case.model.named_modules())
    if case.producers[-1] in case.masks:
        return False  # output layer: the reference drops its bias
    for name in case.masks:
        producer, link = modules[name], case.links[name]
        steps = kinds(link)
        has_bias = getattr(producer, "bias", None) is not None
        if isinstance(producer, nn.LSTM):
            if producer.bidirectional or not (steps == (operator.itemgetter,) or steps[:1] == (operator.itemgetter,)):
                return False
            norms = [s for s in link if isinstance(s, nn.LayerNorm)]
            if any(n.weight is None for n in norms):
                return False  # the reference slices LayerNorm.weight unconditionally
            continue
        acts = [s for s in link if not _is_pool(s)]
        pools = [s for s in link if _is_pool(s)]
        if isinstance(producer, nn.Linear):
            if len(link) > 1 or pools:
                return False
        else:
            adaptive = [s for s in link if isinstance(s, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
            if adaptive:
                if not has_bias:
                    return False  # the reference crashes on a bias-free conv before flatten (either prune_bias)
                continue
            if len(pools) > 1 or len(acts) > 1 or (pools and not acts):
                return False  # not one of the reference's patterns
            if any(_avg_padded(p) for p in pools):
                return False  # the reference folds a constant through zero-padded average pooling
        for act in acts:
            if isinstance(act, nn.PReLU) and act.num_parameters > 1 or _kind(act) is F.prelu:
                return False  # the reference calls the activation on a 1-D bias vector
            if _kind(act) in (F.sigmoid, F.tanh):
                return False  # traced as x.sigmoid() / x.tanh(): the reference's patterns never match
            if fold and not has_bias and _kind(act) not in ACT_ZERO_AT_ZERO:
                return False  # the reference forgets act(0) of a bias-free producer
    return True


def _kind(step: Any) -> Any:
    return kinds((step,))[0]


def _is_pool(step: Any) -> bool:
    return isinstance(step, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or (
        isinstance(step, functools.partial) and step.func in (F.max_pool2d, F.avg_pool2d))


def _avg_padded(step: Any) -> bool:
    if isinstance(step, nn.AvgPool2d):
        return step.padding != 0
    return isinstance(step, functools.partial) and step.func is F.avg_pool2d and step.keywords.get("padding", 0) != 0


@FAMILY
@settings(max_examples=examples(30))
@given(data=st.data())
def test_fold_bias_equals_zeroed_rows_and_reference(family: str, data: st.DataObject) -> None:
    """fold_bias reproduces the reference's masked model, and its pruned model where the reference is correct."""
    case = data.draw(chains(family), label="case")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = prune_case(case, fold_bias=True)
    conservative = {
        name for name, mask in case.masks.items()
        if out_size(pruned.get_submodule(name)) == mask.numel() and not bool(mask.all())
    }
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, FpruneWarning))
    for name in conservative:
        assert f"{name!r}" in messages, (name, messages)
    if not case.approximate:
        close(pruned(case.x), kept_output(zero_rows(case.model, case.masks)(case.x), case))
    applies = reference_applies(case, fold=True)
    event(f"reference applies: {applies}")
    if applies:
        reference = run_reference(case.model, case.masks, prune_bias=False)
        close32(pruned(case.x), reference(case.x.float()))
        if not any(_padded_conv(m) for m in case.model.modules()):
            # before a padded consumer fprune shrinks where the removed constants are all zero;
            # the reference keeps every biased producer full size there
            assert_same_shapes(pruned, reference)


@FAMILY
@settings(max_examples=examples(20))
@given(data=st.data())
def test_default_equals_reference_with_prune_bias(family: str, data: st.DataObject) -> None:
    """Default semantics equal the reference with prune_bias=True wherever the reference applies."""
    case = data.draw(chains(family), label="case")
    if not reference_applies(case, fold=False) or any(_padded_conv(m) for m in case.model.modules()):
        return
    pruned = prune_case(case)
    reference = run_reference(case.model, case.masks, prune_bias=True)
    close32(pruned(case.x), reference(case.x.float()))
    assert_same_shapes(pruned, reference)


def assert_same_shapes(a: nn.Module, b: nn.Module) -> None:
    """Every parameter of `a` has the shape of the same-named parameter of `b` (reference names mapped)."""
    sa = {k: v.shape for k, v in a.state_dict().items()}
    sb = {k.replace("parametrizations.weight.original", "weight"): v.shape for k, v in b.state_dict().items()}
    assert sa == {k: v for k, v in sb.items() if k in sa}, (sa, sb)


# --------------------------------------------------------------------------- every reference pattern, explicitly


def _name(step: Any) -> str:
    return step.__name__ if hasattr(step, "__name__") else getattr(step, "func", step).__name__


def _case(family: str, steps: list[Any], masks: dict[str, Tensor], x_shape: tuple[int, ...], seed: int = 0,
          **kw: Any) -> Case:
    """A hand-built Case over a Chain; links are the steps between consecutive producers."""
    model = zoo.seeded(zoo.Chain(steps), seed)
    producers = [f"l{i}" for i, s in enumerate(steps) if isinstance(s, (nn.Linear, nn.Conv2d, nn.LSTM))]
    index = [int(p[1:]) for p in producers] + [len(steps)]
    links = {p: tuple(steps[index[i] + 1:index[i + 1]]) for i, p in enumerate(producers)}
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return Case(family, model, masks, x, producers, links, **kw)


def check_case(case: Case) -> None:
    """Default == zero-slice emulation; fold_bias == zeroed rows, and == the reference where it applies."""
    pruned = prune_case(case)
    emulated = with_masked_norms(zero_slices(case.model, plan_params(case.model, case.masks)), case)
    close(pruned(case.x), kept_output(emulated(case.x), case))
    for name, mask in case.masks.items():
        assert out_size(pruned.get_submodule(name)) == int(mask.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        folded = prune_case(case, fold_bias=True)
    if not case.approximate:
        close(folded(case.x), kept_output(zero_rows(case.model, case.masks)(case.x), case))
    if reference_applies(case, fold=True):
        reference = run_reference(case.model, case.masks, prune_bias=False)
        close32(folded(case.x), reference(case.x.float()))
        assert_same_shapes(folded, reference)


MASK5 = torch.tensor([True, False, True, True, False])


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act", zoo.MODULE_ACTIVATIONS + zoo.FUNCTIONAL_ACTIVATIONS,
                         ids=[("nn." if isinstance(a, type) else "F.") + _name(a) for a in
                              zoo.MODULE_ACTIVATIONS + zoo.FUNCTIONAL_ACTIVATIONS])
def test_linear_activation_linear(act: Any, bias: bool) -> None:
    """Linear -> act -> Linear for each of the reference's 42 activations, with and without bias."""
    step = act() if isinstance(act, type) else act
    check_case(_case("linear", [nn.Linear(3, 5, bias=bias), step, nn.Linear(5, 2)], {"l0": MASK5}, (4, 3)))


@pytest.mark.parametrize("act", zoo.MODULE_ACTIVATIONS + zoo.FUNCTIONAL_ACTIVATIONS,
                         ids=[("nn." if isinstance(a, type) else "F.") + _name(a) for a in
                              zoo.MODULE_ACTIVATIONS + zoo.FUNCTIONAL_ACTIVATIONS])
def test_conv_activation_conv(act: Any) -> None:
    """Conv2d -> act -> Conv2d for each of the reference's 42 activations."""
    step = act() if isinstance(act, type) else act
    check_case(_case("conv", [nn.Conv2d(2, 5, 3), step, nn.Conv2d(5, 3, 3)], {"l0": MASK5}, (2, 2, 7, 7),
                     out_dim=-3))


POOLS = {
    "nn.MaxPool2d": lambda: nn.MaxPool2d(2),
    "nn.AvgPool2d": lambda: nn.AvgPool2d(2),
    "F.max_pool2d": lambda: functools.partial(F.max_pool2d, kernel_size=2),
    "F.avg_pool2d": lambda: functools.partial(F.avg_pool2d, kernel_size=2),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("order", ["act-pool", "pool-act"])
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_conv_activation_pool_conv(pool: str, order: str, bias: bool) -> None:
    """Conv2d -> act -> pool -> Conv2d and Conv2d -> pool -> act -> Conv2d, avg/max, module/functional."""
    link = [nn.SiLU(), POOLS[pool]()] if order == "act-pool" else [POOLS[pool](), F.hardsigmoid]
    steps = [nn.Conv2d(2, 5, 3, bias=bias), *link, nn.Conv2d(5, 3, 2)]
    check_case(_case("conv", steps, {"l0": MASK5}, (2, 2, 9, 9), out_dim=-3))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("flatten", ["nn.Flatten", "torch.flatten"])
@pytest.mark.parametrize("pool", ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d"])
def test_conv_adaptive_pool_flatten_linear(pool: str, flatten: str, bias: bool) -> None:
    """Conv2d -> AdaptiveAvg/MaxPool2d -> nn.Flatten | torch.flatten -> Linear, incl. flatten expansion."""
    flat = nn.Flatten() if flatten == "nn.Flatten" else functools.partial(torch.flatten, start_dim=1)
    steps = [nn.Conv2d(2, 5, 3, bias=bias), getattr(nn, pool)((2, 3)), flat, nn.Linear(30, 4)]
    check_case(_case("conv", steps, {"l0": MASK5}, (2, 2, 8, 8)))


@pytest.mark.parametrize("norm", [False, True], ids=["linear", "layernorm-linear"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_lstm_getitem_linear(layers: int, norm: bool) -> None:
    """LSTM -> getitem -> [LayerNorm] -> Linear with multi-layer LSTMs, against emulation and the reference."""
    steps: list[Any] = [nn.LSTM(3, 5, layers), operator.itemgetter(0)]
    steps += [nn.LayerNorm(5)] if norm else []
    steps += [nn.Linear(5, 2)]
    check_case(_case("lstm", steps, {"l0": MASK5}, (4, 2, 3), approximate=norm))


def test_layernorm_over_pruned_channels_is_exact_by_default() -> None:
    """LSTM -> LayerNorm -> Linear: a PrunedLayerNorm by default (exact); a plain LayerNorm with approximate."""
    model = zoo.seeded(zoo.LSTMLM(), 0).double()
    mask, tokens = {"lstm": torch.tensor([True, False] * 3)}, torch.randint(0, 11, (4, 2))
    pruned = apply_patterns(model, mask)
    assert type(pruned.get_submodule("norm")) is PrunedLayerNorm and pruned.get_submodule("norm").full_width == 6
    close(pruned(tokens), zero_slices(model, plan_params(model, mask))(tokens))
    pruned = apply_patterns(model, mask, approximate=True)
    assert type(pruned.get_submodule("norm")) is nn.LayerNorm
    assert pruned.get_submodule("norm").normalized_shape == (3,)
    assert pruned.get_submodule("lstm").hidden_size == 3


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lstm_state_output(bidirectional: bool) -> None:
    """An LSTM whose state (h_n, c_n) reaches the output is refused by default and exact with prune_outputs."""
    model = zoo.seeded(zoo.LSTMStateOut(), 3)
    model.lstm = zoo.seeded(nn.LSTM(3, 5, 2, bidirectional=bidirectional), 4)
    model.linear = zoo.seeded(nn.Linear(10 if bidirectional else 5, 2), 5)
    mask, x = MASK5, torch.randn(4, 2, 3, dtype=torch.float64)
    with pytest.raises(UnprunableError, match="prune_outputs=True"):
        apply_patterns(model, {"lstm": mask})
    pruned = apply_patterns(model, {"lstm": mask}, prune_outputs=True)
    out, (h, c) = pruned(x)
    want_out, (want_h, want_c) = zero_slices(model, plan_params(model, {"lstm": mask}, prune_outputs=True))(x)
    close(out, want_out)
    close(h, want_h[..., mask])
    close(c, want_c[..., mask])


@pytest.mark.parametrize("name", sorted(zoo.REFERENCE_MODELS))
def test_reference_helper_models(name: str) -> None:
    """The reference's helper models: every prunable group pruned exactly; fold_bias equals the reference."""
    make, shape = zoo.REFERENCE_MODELS[name]
    model = zoo.seeded(make(), 7)
    lstm = name.startswith("LSTM")
    options = {"prune_outputs": lstm, "approximate": lstm}
    analysis = analyze(trace(model))
    generator = torch.Generator().manual_seed(1)
    masks = {}
    for group in analysis.groups:
        if group.prunable(Options(**options)) and (not lstm or group.name == "lstm"):
            mask = torch.rand(group.size, generator=generator) < 0.6
            mask[0] = True
            masks[group.name] = mask
    assert masks
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    pruned = apply_patterns(model, masks, **options)
    if not lstm or "LayerNorm" not in name:
        want = zero_slices(model, plan_params(model, masks, **options))(x)
        got = pruned(x)
        if lstm:
            got, want = got[0], want[0]
        close(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        folded = apply_patterns(model, masks, fold_bias=True, **options)
    reference = run_reference(model, masks, prune_bias=False)
    got, want = folded(x), reference(x.float())
    for a, b in zip(got if lstm else (got,), want if lstm else (want,)):
        if isinstance(a, tuple):
            for u, v in zip(a, b):
                close32(u, v)
        else:
            close32(a, b)
    if name == "Conv2dPadBias":
        # seq.2 has no bias and ReLU(0) = 0: nothing to fold, so fprune shrinks it; the reference
        # keeps it full because seq.0's fold gave it a bias before it was visited.
        assert folded.get_submodule("seq.2").out_channels == int(masks["seq.2"].sum())
        assert reference.get_submodule("seq.2").out_channels == 32
    else:
        assert_same_shapes(folded, reference)


# --------------------------------------------------------------------------- regressions for the reference's defects


def test_output_layer_keeps_its_bias() -> None:
    """Pruning an output layer (prune_outputs) keeps the kept rows' bias; the reference drops it."""
    model = zoo.seeded(zoo.MLP(), 0)
    mask = torch.tensor([True, False, True])
    x = torch.randn(4, 5, dtype=torch.float64)
    for fold in (False, True):
        pruned = apply_patterns(model, {"fc3": mask}, prune_outputs=True, fold_bias=fold)
        close(pruned.get_submodule("fc3").bias, model.fc3.bias[mask])
        close(pruned(x), model(x)[:, mask])
    reference = run_reference(model, {"fc3": mask}, prune_bias=False)
    assert reference.get_submodule("fc3").bias is None  # the reference's defect


def test_bias_free_conv_pool_flatten_linear() -> None:
    """A bias-free Conv2d -> pool -> flatten -> Linear folds fine (the reference crashes on it)."""
    model = zoo.seeded(zoo.ConvPoolFlattenNoBias(), 0)
    masks = {"conv2": torch.tensor([True, False, False, True])}
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    pruned = apply_patterns(model, masks, fold_bias=True)
    assert pruned.get_submodule("fc").in_features == 8
    assert pruned.get_submodule("fc").bias is None  # nothing to fold: no bias is invented
    close(pruned(x), zero_rows(model, masks)(x))
    with pytest.raises(TypeError):
        run_reference(model, masks, prune_bias=False)


def test_result_does_not_depend_on_a_forward_pass() -> None:
    """apply_patterns before and after a forward pass of the input gives identical models."""
    model = zoo.seeded(zoo.Conv2dPadBias(), 0)
    masks = {"seq.0": torch.arange(32) % 3 != 0, "conv2d1": torch.arange(48) % 2 == 0}
    x = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    for fold in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FpruneWarning)
            before = apply_patterns(model, masks, fold_bias=fold).state_dict()
            model(x)
            after = apply_patterns(model, masks, fold_bias=fold).state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_padded_conv_act_conv_is_shrunk_by_default() -> None:
    """A padded Conv2d(bias) -> act -> Conv2d is shrunk under default semantics, kept full (warned) with fold_bias."""
    model = zoo.seeded(zoo.PaddedConvAct(), 0)
    mask = torch.tensor([True, False, True, False, True, True])
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    pruned = apply_patterns(model, {"conv1": mask})
    assert pruned.get_submodule("conv1").out_channels == 4
    assert pruned.get_submodule("conv2").in_channels == 4
    close(pruned(x), zero_slices(model, plan_params(model, {"conv1": mask}))(x))
    with pytest.warns(FpruneWarning, match=r"'conv1'.*pads with zeros"):
        folded = apply_patterns(model, {"conv1": mask}, fold_bias=True)
    assert folded.get_submodule("conv1").out_channels == 6
    close(folded(x), zero_rows(model, {"conv1": mask})(x))


def test_fold_through_activation_with_nonzero_value_at_zero() -> None:
    """A bias-free producer before sigmoid folds sigmoid(0) = 0.5 into the consumer (the reference forgets it)."""
    model = zoo.seeded(zoo.Chain([nn.Linear(3, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 2, bias=False)]), 0)
    mask = torch.tensor([True, False, True, False])
    x = torch.randn(3, 3, dtype=torch.float64)
    pruned = apply_patterns(model, {"l0": mask}, fold_bias=True)
    close(pruned.get_submodule("l2").bias, 0.5 * model.l2.weight[:, ~mask].sum(1))
    close(pruned(x), zero_rows(model, {"l0": mask})(x))


def test_fold_in_conservative_consumer_keeps_removed_rows_bias() -> None:
    """A folded constant never reaches the zeroed rows of a consumer that is itself kept full size."""
    model = zoo.seeded(zoo.Chain([nn.Conv2d(1, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 3, padding=1)]), 0)
    masks = {"l0": torch.tensor([True, False, True]), "l1": torch.tensor([False, True, True])}
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    with pytest.warns(FpruneWarning, match="'l1'"):
        pruned = apply_patterns(model, masks, fold_bias=True)
    close(pruned.get_submodule("l1").bias[0], model.l1.bias[0])
    close(pruned(x), zero_rows(model, masks)(x))
    close32(pruned(x), run_reference(model, masks, prune_bias=False)(x.float()))


# --------------------------------------------------------------------------- other structures


def _exact(model: nn.Module, masks: dict[str, Tensor], x: Tensor, **options: bool) -> GraphModule:
    """Prunes, checks exactness against the zero-slice emulation and purity; returns the pruned model."""
    before = state_values(model)
    pruned = apply_patterns(model, masks, **options)
    close(pruned(x), zero_slices(model, plan_params(model, masks, **options))(x))
    assert_same_state(before, model)
    assert_no_sharing(model, pruned)
    return pruned


def test_residual_couples_producers() -> None:
    """a and b feed one add: one mask prunes both producers' rows and the consumers' columns."""
    model = zoo.seeded(zoo.Residual(), 0)
    mask = torch.tensor([True, False, False, True, True, False])
    pruned = _exact(model, {"a": mask}, torch.randn(3, 4, dtype=torch.float64))
    assert [pruned.get_submodule(n).weight.shape for n in ("a", "b", "head")] == [(3, 4), (3, 3), (2, 3)]
    with pytest.warns(FpruneWarning, match="'a'"):
        apply_patterns(model, {"a": mask}, fold_bias=True)


def test_every_user_is_followed() -> None:
    """A trunk read by two heads: both heads lose the trunk's removed columns."""
    model = zoo.seeded(zoo.TwoHeads(), 0)
    pruned = _exact(model, {"trunk": MASK5.repeat(2)[:6]}, torch.randn(3, 4, dtype=torch.float64))
    assert pruned.get_submodule("left").in_features == pruned.get_submodule("right").in_features == 4


def test_module_called_twice() -> None:
    """A Linear called on the input and on another producer: its own output channels still prune exactly."""
    model = zoo.seeded(zoo.TwiceCalled(), 0)
    pruned = _exact(model, {"shared": MASK5.repeat(2)[:6]}, torch.randn(3, 4, dtype=torch.float64))
    assert pruned.get_submodule("c1").in_features == pruned.get_submodule("c2").in_features == 4
    with pytest.raises(UnprunableError, match="called several times"):
        apply_patterns(model, {"pre": torch.tensor([True, False, True, True])})


def test_batchnorm_follows_its_producer() -> None:
    """Conv2d -> BatchNorm2d: BN parameters and running statistics are sliced with the channels."""
    model = zoo.seeded(zoo.ConvBN(), 0)
    mask = torch.tensor([True, False, True, True, False, True])
    pruned = _exact(model, {"conv1": mask}, torch.randn(2, 2, 7, 7, dtype=torch.float64))
    bn = pruned.get_submodule("bn1")
    assert bn.num_features == 4 and bn.running_mean.shape == (4,)
    close(bn.running_var, model.bn1.running_var[mask])


def test_per_channel_prelu_is_sliced() -> None:
    """PReLU(num_parameters=C) loses the removed channels' slopes; fold_bias keeps it full with a warning."""
    model = zoo.seeded(zoo.PerChannelPReLU(), 0)
    pruned = _exact(model, {"conv1": MASK5}, torch.randn(2, 2, 7, 7, dtype=torch.float64))
    assert pruned.get_submodule("act").num_parameters == 3
    with pytest.warns(FpruneWarning, match="PReLU"):
        folded = apply_patterns(model, {"conv1": MASK5}, fold_bias=True)
    assert folded.get_submodule("conv1").out_channels == 5


def test_functional_prelu_with_scalar_slope() -> None:
    """F.prelu(x, scalar weight) between Linears prunes exactly, also with fold_bias."""
    model = zoo.seeded(zoo.FunctionalPReLU(), 0)
    mask, x = torch.tensor([True, False, True, True, False, True]), torch.randn(3, 4, dtype=torch.float64)
    _exact(model, {"fc1": mask}, x)
    close(apply_patterns(model, {"fc1": mask}, fold_bias=True)(x), zero_rows(model, {"fc1": mask})(x))


def test_lstm_lm_with_unused_state() -> None:
    """`out, _ = lstm(x)` (the state unused) does not block the LSTM's group."""
    model = zoo.seeded(zoo.LSTMLM(norm=False), 0)
    tokens = torch.randint(0, 11, (5, 2), generator=torch.Generator().manual_seed(0))
    pruned = _exact(model, {"lstm": torch.tensor([True, True, False, True, False, True])}, tokens)
    assert pruned.get_submodule("lstm").weight_hh_l1.shape == (16, 4)


# --------------------------------------------------------------------------- pipelines


def test_readme_pipeline() -> None:
    """pipe(model, score_l1, topk_mask(0.5), apply_patterns) prunes; compose_left gives a reusable pruner."""
    model = zoo.seeded(zoo.MLP(), 0)
    before = state_values(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        pruned = pipe(model, score_l1, topk_mask(0.5), apply_patterns)
        again = compose_left(score_l1, topk_mask(0.5), apply_patterns)(model)
        plan = pipe(model, score_l1, topk_mask(0.5))
    assert pruned.get_submodule("fc1").out_features == 4 and pruned.get_submodule("fc2").out_features == 3
    x = torch.randn(3, 5, dtype=torch.float64)
    close(pruned(x), again(x))
    close(pruned(x), apply_patterns(model, dict(plan.masks))(x))
    close(pruned(x), zero_slices(model, plan.params())(x))
    assert_same_state(before, model)


def test_plan_options_apply() -> None:
    """apply_patterns(plan, fold_bias=True) overrides the plan's options."""
    model = zoo.seeded(zoo.MLP(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        plan = pipe(model, score_l1, topk_mask(0.5))
    x = torch.randn(3, 5, dtype=torch.float64)
    masks = {k: v for k, v in plan.masks.items()}
    close(apply_patterns(plan, fold_bias=True)(x), zero_rows(model, masks)(x))


# --------------------------------------------------------------------------- errors: named, all-or-nothing


def _raises(model: nn.Module, masks: Any, error: type[Exception], pattern: str, **options: bool) -> None:
    """apply_patterns raises `error` matching `pattern` and leaves the model as it was."""
    before = state_values(model)
    with pytest.raises(error, match=pattern) as info:
        apply_patterns(model, masks, **options)
    assert isinstance(info.value, FpruneError)
    assert_same_state(before, model)


def test_unknown_user_refuses_the_group() -> None:
    """A channel read by an op without a rule refuses its producer's group, naming the node and the fix."""
    model = zoo.seeded(zoo.ChannelSum(), 0)
    mask = torch.tensor([True, False, True, True, False, True])
    _raises(model, {"fc1": mask}, UnprunableError, r"(?s)'fc1'.*node 'sum_1'.*leave .* out of the masks")
    _raises(zoo.seeded(zoo.SoftmaxMiddle(), 0), {"fc1": mask}, UnprunableError, r"node 'softmax'")
    _raises(zoo.seeded(zoo.SoftmaxMiddle(), 0), {"fc1": mask}, ValueError, "softmax")


def test_output_layer_is_refused_by_default() -> None:
    """A layer whose output is the graph output is refused unless prune_outputs=True."""
    _raises(zoo.seeded(zoo.MLP(), 0), {"fc3": torch.tensor([True, False, True])}, UnprunableError,
            r"(?s)'fc3'.*node 'output'.*prune_outputs=True")


def test_shared_parameters_are_refused() -> None:
    """Tied weights and parameters read by get_attr refuse their groups."""
    mask4 = torch.tensor([True, False, True, True])
    _raises(zoo.seeded(zoo.TiedHeads(), 0), {"fc1": mask4}, UnprunableError, "shared")
    _raises(zoo.seeded(zoo.GetAttrRead(), 0), {"fc1": torch.ones(6, dtype=torch.bool).index_fill(0, torch.tensor([1]), False)},
            UnprunableError, "fc1_weight")


@pytest.mark.parametrize(
    ("masks", "error", "pattern"),
    [
        ({"nope": torch.ones(8, dtype=torch.bool)}, InvalidMaskError, r"'nope' is not a module.*'fc1'"),
        ({"fc1": torch.ones(7, dtype=torch.bool)}, InvalidMaskError, r"'fc1'.*8 entries.*\(7,\)"),
        ({"fc1": torch.ones(8)}, InvalidTypeError, r"'fc1'.*torch.bool.*float"),
        ({"fc1": [True] * 8}, InvalidTypeError, r"'fc1'.*list"),
        ({"fc1": torch.zeros(8, dtype=torch.bool)}, InvalidMaskError, r"'fc1' keeps no channel"),
        ([("fc1", torch.ones(8, dtype=torch.bool))], InvalidTypeError, "got list"),
        (None, InvalidTypeError, "needs masks"),
    ],
    ids=["unknown-key", "length", "dtype", "not-tensor", "keeps-nothing", "not-mapping", "no-masks"],
)
def test_bad_masks_are_named(masks: Any, error: type[Exception], pattern: str) -> None:
    """Malformed masks raise an error naming the module, what was expected and what was found."""
    _raises(zoo.seeded(zoo.MLP(), 0), masks, error, pattern)


def test_error_after_a_valid_mask_builds_nothing() -> None:
    """A bad mask after a valid one: nothing is pruned, the input is untouched."""
    model = zoo.seeded(zoo.MLP(), 0)
    masks = {"fc1": torch.tensor([True, False] * 4), "fc2": torch.zeros(6, dtype=torch.bool)}
    _raises(model, masks, InvalidMaskError, "'fc2'")


def test_coupled_masks_must_agree() -> None:
    """Different masks for two producers of one coupled group are refused, naming both."""
    model = zoo.seeded(zoo.Residual(), 0)
    a, b = torch.tensor([True, False, True, True, True, True]), torch.tensor([True, True, True, True, False, True])
    _raises(model, {"a": a, "b": b}, InvalidMaskError, r"'a'.*'b'.*coupled")


def test_non_module_input_and_plan_with_masks() -> None:
    """A non-module input and a Plan given together with masks are type errors."""
    with pytest.raises(InvalidTypeError, match="nn.Module"):
        apply_patterns("model", {})  # type: ignore[arg-type]
    model = zoo.seeded(zoo.MLP(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        plan = pipe(model, score_l1, topk_mask(0.5))
    with pytest.raises(InvalidTypeError, match="not a Plan with masks"):
        apply_patterns(plan, {"fc1": torch.ones(8, dtype=torch.bool)})


# --------------------------------------------------------------------------- regressions for fprune's own fixes


@pytest.mark.parametrize("norm", [nn.LayerNorm(5, elementwise_affine=False), nn.InstanceNorm2d(5)],
                         ids=["layernorm-no-affine", "instancenorm-no-affine"])
def test_norm_without_parameters_is_resized(norm: nn.Module) -> None:
    """A norm layer with no tensor to slice still gets its size attribute updated."""
    if isinstance(norm, nn.LayerNorm):
        model, x, options = zoo.Chain([nn.LSTM(3, 5), operator.itemgetter(0), norm, nn.Linear(5, 2)]), \
            torch.randn(4, 2, 3, dtype=torch.float64), {"approximate": True}
    else:
        model, x, options = zoo.Chain([nn.Conv2d(2, 5, 3), norm, nn.Conv2d(5, 2, 3)]), \
            torch.randn(2, 2, 7, 7, dtype=torch.float64), {}
    model = zoo.seeded(model, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # InstanceNorm warns when num_features disagrees with the input
        pruned = apply_patterns(model, {"l0": MASK5}, **options)
        pruned(x)
    pruned_norm = pruned.get_submodule("l1" if isinstance(norm, nn.InstanceNorm2d) else "l2")
    assert getattr(pruned_norm, "normalized_shape", (getattr(pruned_norm, "num_features", None),)) == (3,)


@pytest.mark.parametrize(
    "middle",
    [nn.LayerNorm([6, 6]), nn.AvgPool2d(2, divisor_override=3), nn.AvgPool2d(3, stride=1, padding=1)],
    ids=["spatial-layernorm", "divisor-override", "padded-avg-pool"],
)
def test_fold_is_conservative_where_a_constant_changes(middle: nn.Module) -> None:
    """Ops that do not map a constant channel to a constant keep the group full under fold_bias, with a warning."""
    model = zoo.seeded(zoo.Chain([nn.Conv2d(2, 5, 1), middle, nn.Conv2d(5, 2, 1)]), 0)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    with pytest.warns(FpruneWarning, match="'l0'"):
        folded = apply_patterns(model, {"l0": MASK5}, fold_bias=True)
    assert folded.get_submodule("l0").out_channels == 5
    close(folded(x), zero_rows(model, {"l0": MASK5})(x))
    _exact(model, {"l0": MASK5}, x)


def test_folded_bias_of_a_pruned_bias_free_consumer_is_sliced() -> None:
    """A bias created by folding into a bias-free consumer is sliced with that consumer's own mask."""
    model = zoo.seeded(zoo.Chain([nn.Linear(3, 5), nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)]), 0)
    masks = {"l0": MASK5, "l1": torch.tensor([True, False, True, True])}
    x = torch.randn(3, 3, dtype=torch.float64)
    pruned = apply_patterns(model, masks, fold_bias=True)
    assert pruned.get_submodule("l1").bias.shape == (3,)
    close(pruned(x), zero_rows(model, masks)(x))
    close32(pruned(x), run_reference(model, masks, prune_bias=False)(x.float()))


def test_parametrized_module_is_refused() -> None:
    """A module with a parametrization is refused with UnsupportedModelError, nothing built."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w: Tensor) -> Tensor:
            return 2 * w

    model = zoo.seeded(zoo.MLP(), 0)
    parametrize.register_parametrization(model.fc1, "weight", Double())
    _raises(model, {"fc1": torch.tensor([True, False] * 4)}, NotImplementedError, r"'fc1' is parametrized")
