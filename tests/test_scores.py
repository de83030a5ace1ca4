"""Tests for fprune.scores: properties, the torch.ao reference, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.ao.pruning._experimental.pruner import FPGMPruner

from fprune.errors import FpruneError, InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.masks import topk_mask
from fprune.scores import (
    lstm_unit_rows,
    score_bn_scale,
    score_fpgm,
    score_l1,
    score_l2,
    score_lstm,
    score_random,
    score_taylor,
    score_tensor,
)
from fprune.types import Scorer
from strategies import examples, lstm_weights, powers_of_two, seeds, sparsities, weights

WEIGHT_SCORERS = (score_l1, score_l2, score_fpgm(1), score_fpgm(2), score_random(0))


def with_grad(weight: Tensor, seed: int) -> Tensor:
    """A leaf copy of ``weight`` whose ``.grad`` is a seeded random tensor."""
    leaf = weight.clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    leaf.grad = torch.randn(weight.shape, generator=generator, dtype=torch.float64).to(weight.dtype)
    return leaf


# --------------------------------------------------------------------------- reference


@given(weights(ndim=None))
def test_l1_equals_saliency_pruner(w: Tensor) -> None:
    """score_l1 equals SaliencyPruner's saliency (without its sign) on 2-D to 4-D weights."""
    reference = -(-w.norm(dim=tuple(range(1, w.dim())), p=1))
    torch.testing.assert_close(score_l1(w), reference, rtol=0, atol=0)


@given(weights(ndim=None, dtypes=(torch.float64,)), st.sampled_from((1, 2)))
def test_fpgm_equals_reference(w: Tensor, dist: int) -> None:
    """score_fpgm(dist) equals FPGMPruner(dist=dist)._compute_distance (float64)."""
    reference = FPGMPruner(dist=dist)._compute_distance(w)
    torch.testing.assert_close(score_fpgm(dist)(w), reference)


@given(weights(ndim=None, dtypes=(torch.float64,)))
def test_fpgm_callable_dist_equals_reference(w: Tensor) -> None:
    """A callable dist gives the reference's result for the same callable."""

    def chebyshev(x: Tensor) -> Tensor:
        return torch.cdist(x, x, p=math.inf)

    reference = FPGMPruner(dist=chebyshev)._compute_distance(w)
    torch.testing.assert_close(score_fpgm(chebyshev)(w), reference)


@given(weights(ndim=None))
def test_l2_is_row_norm(w: Tensor) -> None:
    """score_l2 is the L2 norm of each flattened row."""
    torch.testing.assert_close(score_l2(w), w.flatten(1).pow(2).sum(1).sqrt())


@given(weights(ndim=None), seeds())
def test_taylor_is_abs_weight_times_grad(w: Tensor, seed: int) -> None:
    """score_taylor is sum(|w * grad|) over each row."""
    leaf = with_grad(w, seed)
    assert leaf.grad is not None
    expected = (w * leaf.grad).abs().flatten(1).sum(1)
    torch.testing.assert_close(score_taylor(leaf), expected)


@given(weights(ndim=1))
def test_bn_scale_on_1d_is_abs(gamma: Tensor) -> None:
    """score_bn_scale on a 1-D scale returns |gamma|."""
    assert torch.equal(score_bn_scale(gamma), gamma.abs())


@given(weights(ndim=None))
def test_bn_scale_on_rows_is_l1(w: Tensor) -> None:
    """score_bn_scale on a 2-D+ tensor is the L1 norm of each row."""
    assert torch.equal(score_bn_scale(w), score_l1(w))


# --------------------------------------------------------------------------- properties


@given(
    weights(ndim=None, ties=True),
    powers_of_two(),
    sparsities(),
    st.sampled_from((score_l1, score_l2)),
)
def test_norm_masks_are_scale_invariant(w: Tensor, c: float, s: float, scorer: Scorer) -> None:
    """Masks from L1/L2 scores of c * w equal those of w for c > 0 (powers of two: exact)."""
    rule = topk_mask(s)
    assert torch.equal(rule(scorer(c * w)), rule(scorer(w)))


@given(weights(ndim=None), st.sampled_from(WEIGHT_SCORERS + (score_bn_scale,)))
def test_scores_are_fresh_and_keep_dtype_device(w: Tensor, scorer: Scorer) -> None:
    """Scores are 1-D, one per row, new memory, same dtype/device, no autograd graph."""
    param = torch.nn.Parameter(w.clone())
    out = scorer(param)
    assert out.shape == (w.shape[0],)
    assert out.dtype == w.dtype and out.device == w.device
    assert not out.requires_grad and out.grad_fn is None
    assert out.untyped_storage().data_ptr() != param.untyped_storage().data_ptr()


@given(
    weights(ndim=None), seeds(), st.sampled_from(WEIGHT_SCORERS + (score_taylor, score_bn_scale))
)
def test_scoring_does_not_modify_input(w: Tensor, seed: int, scorer: Scorer) -> None:
    """The weight and its gradient are equal by value after scoring."""
    leaf = with_grad(w, seed)
    assert leaf.grad is not None
    before, grad_before = leaf.detach().clone(), leaf.grad.clone()
    scorer(leaf)
    assert torch.equal(leaf.detach(), before) and torch.equal(leaf.grad, grad_before)


def test_row_function_returning_a_view_is_copied() -> None:
    """A custom row function returning a view of the weight still yields fresh scores."""
    first = Scorer(name="first_column", rows=lambda m, g: m[:, 0])
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = first(w)
    out += 100
    assert torch.equal(w, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_half_precision_is_scored_and_returned_in_half() -> None:
    """16-bit weights are scored (in float32) and the scores come back in the weight's dtype."""
    w = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]], dtype=torch.float16)
    for scorer in (score_l1, score_fpgm(2)):
        assert scorer(w).dtype == torch.float16
    torch.testing.assert_close(score_fpgm(1)(w), torch.tensor([4.0, 5.0, 3.0], dtype=torch.float16))


@given(st.integers(1, 40), seeds(), seeds())
def test_random_is_seeded_and_leaves_global_rng_alone(n: int, seed: int, other: int) -> None:
    """score_random: same seed and n give the same scores whatever the global RNG state."""
    torch.manual_seed(other)
    state = torch.get_rng_state()
    first = score_random(seed)(torch.zeros(n, 3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(other + 1)
    second = score_random(seed)(torch.ones(n, 2, dtype=torch.float64))
    assert torch.equal(first.double(), second.to(torch.float32).double())
    assert first.shape == (n,) and bool(((first >= 0) & (first < 1)).all())


def test_factory_reprs_read_like_calls() -> None:
    """Scorer values print as their names; factory results print as their calls."""
    assert repr(score_l1) == "score_l1"
    assert repr(score_bn_scale) == "score_bn_scale"
    assert repr(score_fpgm()) == "score_fpgm(dist=2)"
    assert repr(score_fpgm(dist=1)) == "score_fpgm(dist=1)"
    assert repr(score_random(seed=7)) == "score_random(seed=7)"
    assert score_taylor.needs_grad and score_bn_scale.source == "norm"


def test_score_tensor_is_what_calling_a_scorer_does() -> None:
    """score_tensor(scorer, w) equals scorer(w)."""
    w = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(score_tensor(score_l2, w), score_l2(w))


# --------------------------------------------------------------------------- LSTM


@given(lstm_weights())
def test_lstm_l1_is_sum_of_gate_norms(packed: tuple[Tensor, int]) -> None:
    """score_lstm with L1 equals the sum of the four gate rows' L1 norms per unit."""
    w, hidden = packed
    expected = score_l1(w).reshape(4, hidden).sum(0)
    torch.testing.assert_close(score_lstm(w, hidden), expected)


@given(lstm_weights(), sparsities())
def test_lstm_mask_prunes_same_units_in_all_gates(packed: tuple[Tensor, int], s: float) -> None:
    """A mask from score_lstm, repeated per gate, keeps the same units in i, f, g and o."""
    w, hidden = packed
    mask = topk_mask(s)(score_lstm(w, hidden))
    kept_rows = w[mask.repeat(4)].reshape(4, -1, w.shape[1])
    for gate in range(4):
        assert torch.equal(kept_rows[gate], w[gate * hidden : (gate + 1) * hidden][mask])


@given(lstm_weights())
def test_lstm_unit_rows_round_trip(packed: tuple[Tensor, int]) -> None:
    """lstm_unit_rows regroups rows u, H+u, 2H+u, 3H+u and is invertible; input untouched."""
    w, hidden = packed
    before = w.clone()
    rows = lstm_unit_rows(w, hidden)
    assert rows.shape == (hidden, 4 * w.shape[1])
    back = rows.reshape(hidden, 4, -1).transpose(0, 1).reshape(w.shape)
    assert torch.equal(back, w) and torch.equal(w, before)
    assert rows.untyped_storage().data_ptr() != w.untyped_storage().data_ptr()


@given(lstm_weights(), seeds())
def test_lstm_taylor_uses_regrouped_grad(packed: tuple[Tensor, int], seed: int) -> None:
    """score_lstm with Taylor sums |w * grad| over the unit's four gate rows."""
    w, hidden = packed
    leaf = with_grad(w, seed)
    expected = score_taylor(leaf).reshape(4, hidden).sum(0)
    torch.testing.assert_close(score_lstm(leaf, hidden, score_taylor), expected)


def test_lstm_shape_mismatch_raises() -> None:
    """score_lstm rejects a weight whose rows are not 4 * hidden_size."""
    with pytest.raises(InvalidWeightError, match="4 \\* hidden_size"):
        score_lstm(torch.ones(12, 3), hidden_size=4)
    with pytest.raises(ValueError):
        lstm_unit_rows(torch.ones(12, 3), hidden_size=4)
    with pytest.raises(InvalidTypeError):
        score_lstm(torch.ones(8, 3), hidden_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        score_lstm(torch.ones(8, 3), hidden_size=0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("weight", "error", "builtin"),
    [
        (torch.ones(4), InvalidWeightError, ValueError),
        (torch.ones(0, 3), InvalidWeightError, ValueError),
        (torch.tensor([[1.0, math.nan]]), InvalidWeightError, ValueError),
        (torch.tensor([[1.0], [math.inf]]), InvalidWeightError, ValueError),
        (torch.ones(2, 2, dtype=torch.int64), InvalidTypeError, TypeError),
        ([[1.0, 2.0]], InvalidTypeError, TypeError),
    ],
    ids=["1-D", "no rows", "nan", "inf", "int", "list"],
)
def test_bad_weights_raise(
    weight: object, error: type[FpruneError], builtin: type[Exception]
) -> None:
    """Malformed weights raise the documented fprune error, which is also the builtin."""
    with pytest.raises(error):
        score_l1(weight)  # type: ignore[call-overload]
    with pytest.raises(builtin):
        score_l1(weight)  # type: ignore[call-overload]


@settings(max_examples=examples(30))
@given(rows=st.integers(1, 5), cols=st.integers(1, 6), data=st.data())
def test_finite_check_agrees_with_isfinite(rows: int, cols: int, data: st.DataObject) -> None:
    """The weight check (a float32 sum first) accepts exactly the finite tensors, also those whose
    finite values overflow the sum, and rejects +inf beside -inf (a sum of NaN)."""
    pool = st.sampled_from([0.0, 1.0, -2.5, 1e300, -1e300, 3e38, math.inf, -math.inf, math.nan])
    values = data.draw(st.lists(pool, min_size=rows * cols, max_size=rows * cols))
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16]))
    weight = torch.tensor(values, dtype=torch.float64).reshape(rows, cols).to(dtype)
    import fprune.scores as scores_module

    saved = scores_module._BLOCK
    try:
        for block in (saved, 1, cols + 1):  # one block; a row per block; two rows per block
            scores_module._BLOCK = block
            if bool(torch.isfinite(weight).all()):
                assert score_l1(weight).shape == (rows,)
            else:
                with pytest.raises(InvalidWeightError, match="NaN or inf"):
                    score_l1(weight)
    finally:
        scores_module._BLOCK = saved


def test_bn_scale_rejects_scalars_and_nan() -> None:
    """score_bn_scale accepts 1-D but not 0-D or non-finite scales."""
    with pytest.raises(InvalidWeightError):
        score_bn_scale(torch.tensor(1.0))
    with pytest.raises(ValueError):
        score_bn_scale(torch.tensor([1.0, math.nan]))


def test_taylor_without_grad_says_run_backward() -> None:
    """score_taylor on a weight without .grad asks for backward()."""
    with pytest.raises(InvalidWeightError, match="backward"):
        score_taylor(torch.ones(3, 2, requires_grad=True))
    with pytest.raises(ValueError):
        score_taylor(torch.ones(3, 2))


@pytest.mark.parametrize(
    ("dist", "error", "builtin"),
    [
        (3, InvalidArgumentError, ValueError),
        (0, InvalidArgumentError, ValueError),
        (2.0, InvalidTypeError, TypeError),
        ("l2", InvalidTypeError, TypeError),
        (True, InvalidTypeError, TypeError),
        (None, InvalidTypeError, TypeError),
    ],
)
def test_bad_fpgm_dist_raises(
    dist: object, error: type[FpruneError], builtin: type[Exception]
) -> None:
    """score_fpgm validates dist at construction."""
    with pytest.raises(error):
        score_fpgm(dist)  # type: ignore[arg-type]
    with pytest.raises(builtin):
        score_fpgm(dist)  # type: ignore[arg-type]


def test_fpgm_callable_with_wrong_shape_raises() -> None:
    """A distance callable must return an [n, n] matrix."""
    with pytest.raises(InvalidArgumentError, match=r"\[n, n\]"):
        score_fpgm(lambda x: x)(torch.ones(3, 2))


@pytest.mark.parametrize(
    ("seed", "error"),
    [
        (-1, InvalidArgumentError),
        (2**64, InvalidArgumentError),
        (1.5, InvalidTypeError),
        (True, InvalidTypeError),
    ],
)
def test_bad_random_seed_raises(seed: object, error: type[FpruneError]) -> None:
    """score_random validates its seed."""
    with pytest.raises(error):
        score_random(seed)  # type: ignore[arg-type]


def test_score_tensor_rejects_non_scorers() -> None:
    """score_tensor needs a Scorer value."""
    with pytest.raises(InvalidTypeError):
        score_tensor(len, torch.ones(2, 2))  # type: ignore[arg-type]


def test_error_names_the_tensor_when_given() -> None:
    """score_tensor's name argument appears in the message."""
    with pytest.raises(InvalidWeightError, match="fc.weight"):
        score_tensor(score_l1, torch.ones(3), name="fc.weight")


@settings(max_examples=examples(20))
@given(rows=st.integers(1, 9), cols=st.integers(1, 7), block=st.integers(1, 40), seed=seeds(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_rowwise_scorers_score_blocks_of_rows_alike(rows: int, cols: int, block: int, seed: int,
                                                    dtype: torch.dtype) -> None:
    """A rowwise scorer scores a large matrix a block of rows at a time (bounded temporaries): the
    scores are those of the whole matrix, also on a transposed view (an embedding's channels)."""
    import fprune.scores as scores_module

    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)
    whole = {s.name: s(weight) for s in (score_l1, score_l2)} | {"t": score_l1(weight.T)}
    saved = scores_module._BLOCK
    scores_module._BLOCK = block
    try:
        blocked = {s.name: s(weight) for s in (score_l1, score_l2)} | {"t": score_l1(weight.T)}
    finally:
        scores_module._BLOCK = saved
    for name, value in whole.items():
        torch.testing.assert_close(blocked[name], value, rtol=1e-6, atol=0)
    assert score_l1.rowwise and not score_fpgm().rowwise
