"""Tests for fprune.masks: counting, ordering and tie rules, bounds, purity, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from fprune.errors import FpruneError, InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.masks import GlobalTopK, TopK, global_topk_mask, threshold_mask, topk_mask
from strategies import TIE_VALUES, named_score_vectors, score_vectors, sparsities

counts = st.integers(0, 6)
round_tos = st.integers(1, 5)
normalizers = st.sampled_from(("mean", "max", "l2", "none"))


def oracle_prune(scores: Tensor, n_prune: int) -> Tensor:
    """Reference mask: prune the n lowest by (score, index), written with Python sorting."""
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    mask = torch.ones(len(values), dtype=torch.bool)
    mask[order[:n_prune]] = False
    return mask


def expected_kept(n: int, s: float, round_to: int = 1, min_keep: int = 1) -> int:
    """The documented kept count of topk_mask."""
    keep = max(n - int(n * s), min(min_keep, n))
    return min(n, math.ceil(keep / round_to) * round_to)


def oracle_global(
    scores: dict[str, Tensor], s: float, normalize: str, min_keep: int, max_sparsity: float | None
) -> dict[str, Tensor]:
    """Reference global ranking: a Python greedy walk over (value, name position, index)."""
    divisors = {"mean": torch.mean, "max": torch.amax, "l2": torch.linalg.vector_norm}
    normed, caps = {}, {}
    for name, v in scores.items():
        d = divisors[normalize](v.abs()).item() if normalize != "none" else 1.0
        normed[name] = (v / (d if d > 0 and math.isfinite(d) else 1.0)).tolist()
        n = v.numel()
        caps[name] = n - min(min_keep, n)
        if max_sparsity is not None:
            caps[name] = min(caps[name], int(n * max_sparsity))
    names = list(scores)
    entries = sorted(
        (value, pos, i) for pos, name in enumerate(names) for i, value in enumerate(normed[name])
    )
    target = int(sum(v.numel() for v in scores.values()) * s)
    pruned = {name: 0 for name in names}
    masks = {name: torch.ones(v.numel(), dtype=torch.bool) for name, v in scores.items()}
    for _, pos, i in entries:
        if sum(pruned.values()) == target:
            break
        name = names[pos]
        if pruned[name] < caps[name]:
            pruned[name] += 1
            masks[name][i] = False
    return masks


# --------------------------------------------------------------------------- topk


@given(score_vectors(), sparsities())
def test_topk_prunes_exactly_int_n_times_s(scores: Tensor, s: float) -> None:
    """With default options topk prunes exactly int(n * s) channels."""
    mask = topk_mask(s)(scores)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int((~mask).sum()) == int(scores.numel() * s)


@given(score_vectors(), sparsities())
def test_topk_kept_scores_dominate_pruned(scores: Tensor, s: float) -> None:
    """Every kept score is >= every pruned score."""
    mask = topk_mask(s)(scores)
    if mask.any() and (~mask).any():
        assert scores[mask].min() >= scores[~mask].max()


@given(score_vectors(), sparsities())
def test_topk_tie_rule_lower_index_pruned_first(scores: Tensor, s: float) -> None:
    """topk equals pruning the lowest by (score, index): among ties the lower index goes."""
    n = scores.numel()
    assert torch.equal(topk_mask(s)(scores), oracle_prune(scores, int(n * s)))


@given(score_vectors(), sparsities(), sparsities())
def test_topk_masks_nest(scores: Tensor, s1: float, s2: float) -> None:
    """The mask at the higher sparsity keeps a subset of the mask at the lower one."""
    low, high = sorted((s1, s2))
    assert not bool((topk_mask(high)(scores) & ~topk_mask(low)(scores)).any())


@given(score_vectors(distinct=True), sparsities(), st.data())
def test_topk_is_permutation_equivariant(scores: Tensor, s: float, data: st.DataObject) -> None:
    """For distinct scores, permuting the scores permutes the mask."""
    perm = torch.tensor(data.draw(st.permutations(range(scores.numel()))))
    rule = topk_mask(s)
    assert torch.equal(rule(scores[perm]), rule(scores)[perm])


@given(score_vectors(min_size=0), sparsities(), round_tos, counts)
def test_topk_round_to_and_min_keep(scores: Tensor, s: float, round_to: int, min_keep: int) -> None:
    """The kept count follows the documented formula and the kept channels are the top ones."""
    n = scores.numel()
    keep = expected_kept(n, s, round_to, min_keep)
    mask = topk_mask(s, round_to=round_to, min_keep=min_keep)(scores)
    assert torch.equal(mask, oracle_prune(scores, n - keep))
    assert keep == n or keep % round_to == 0
    assert keep >= min(min_keep, n)


@given(
    score_vectors(), sparsities(), st.sampled_from((topk_mask, threshold_mask, global_topk_mask))
)
def test_masks_do_not_modify_scores(scores: Tensor, s: float, factory: object) -> None:
    """Scores are equal by value after every mask rule."""
    before = scores.clone()
    rule = factory(s)  # type: ignore[operator]
    rule(scores)
    rule.select_many({"a": scores, "b": scores})
    assert torch.equal(scores, before)


def test_topk_edge_cases() -> None:
    """Empty scores, infinities, sparsity 0 and min_keep=0."""
    assert topk_mask(0.5)(torch.empty(0)).shape == (0,)
    inf = torch.tensor([math.inf, -math.inf, 0.0, 1.0])
    assert torch.equal(topk_mask(0.5)(inf), torch.tensor([True, False, False, True]))
    assert bool(topk_mask(0.0)(torch.ones(5)).all())
    assert torch.equal(topk_mask(0.5, min_keep=0)(torch.ones(1)), torch.tensor([True]))
    keep_three = topk_mask(0.5, min_keep=3)(torch.ones(4))
    assert torch.equal(keep_three, torch.tensor([False, True, True, True]))


def test_local_select_many_applies_select_to_each() -> None:
    """select_many of a local rule is select per entry, names and order preserved."""
    rule = topk_mask(0.5)
    scores = {"b": torch.tensor([1.0, 0.0]), "a": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    out = rule.select_many(scores)
    assert list(out) == ["b", "a"]
    assert all(torch.equal(out[k], rule(v)) for k, v in scores.items())


# --------------------------------------------------------------------------- threshold


@given(score_vectors(min_size=0), st.sampled_from(TIE_VALUES + (-math.inf, math.inf)), counts)
def test_threshold_keeps_above_or_top_min_keep(scores: Tensor, t: float, min_keep: int) -> None:
    """threshold keeps score > t, or the min_keep highest (ties: lower index pruned) if fewer."""
    n = scores.numel()
    above = int((scores > t).sum())
    keep = max(above, min(min_keep, n))
    mask = threshold_mask(t, min_keep=min_keep)(scores)
    assert torch.equal(mask, oracle_prune(scores, n - keep))
    if above >= min(min_keep, n):
        assert torch.equal(mask, scores > t)


def test_threshold_min_keep_zero_allows_all_false() -> None:
    """min_keep=0 allows pruning every channel; the default keeps one."""
    scores = torch.tensor([0.0, 0.0, 0.0])
    assert not bool(threshold_mask(0.0, min_keep=0)(scores).any())
    assert torch.equal(threshold_mask(0.0)(scores), torch.tensor([False, False, True]))


# --------------------------------------------------------------------------- global


@given(named_score_vectors(), sparsities(), normalizers, counts, st.none() | sparsities())
def test_global_matches_greedy_oracle(
    scores: dict[str, Tensor], s: float, normalize: str, min_keep: int, max_sparsity: float | None
) -> None:
    """global_topk equals a greedy walk over (normalised score, name order, index) with bounds."""
    rule = global_topk_mask(
        s,
        normalize=normalize,  # type: ignore[arg-type]
        min_keep=min_keep,
        max_sparsity=max_sparsity,
    )
    out = rule.select_many(scores)
    expected = oracle_global(scores, s, normalize, min_keep, max_sparsity)
    assert list(out) == list(scores)
    assert all(torch.equal(out[k], expected[k]) for k in scores)


@given(named_score_vectors(), sparsities(), counts, st.none() | sparsities(), round_tos)
def test_global_counts_and_bounds(
    scores: dict[str, Tensor], s: float, min_keep: int, max_sparsity: float | None, round_to: int
) -> None:
    """Each vector respects min_keep, max_sparsity and round_to; total = min(target, bounds)."""
    rule = global_topk_mask(s, min_keep=min_keep, max_sparsity=max_sparsity, round_to=round_to)
    out = rule.select_many(scores)
    total_cap = 0
    for name, v in scores.items():
        n, kept = v.numel(), int(out[name].sum())
        cap = n - min(min_keep, n)
        if max_sparsity is not None:
            cap = min(cap, int(n * max_sparsity))
        total_cap += cap
        assert out[name].dtype == torch.bool and out[name].shape == v.shape
        assert n - kept <= cap
        assert kept == n or kept % round_to == 0
    pruned = sum(int((~m).sum()) for m in out.values())
    target = int(sum(v.numel() for v in scores.values()) * s)
    if round_to == 1:
        assert pruned == min(target, total_cap)
    else:
        assert pruned <= min(target, total_cap)


@given(named_score_vectors(), sparsities())
def test_global_none_equals_topk_on_concatenation(scores: dict[str, Tensor], s: float) -> None:
    """Unbounded, unnormalised global ranking is topk on the concatenated scores, split back."""
    out = global_topk_mask(s, normalize="none", min_keep=0).select_many(scores)
    joint = topk_mask(s, min_keep=0)(torch.cat(list(scores.values())))
    assert torch.equal(torch.cat(list(out.values())), joint)


@given(score_vectors(), sparsities(), normalizers, counts, round_tos)
def test_global_on_one_vector_equals_topk(
    scores: Tensor, s: float, normalize: str, min_keep: int, round_to: int
) -> None:
    """On one vector, global select == select_many with one entry == topk with the same options."""
    rule = global_topk_mask(
        s, normalize=normalize, min_keep=min_keep, round_to=round_to  # type: ignore[arg-type]
    )
    mask = rule(scores)
    assert torch.equal(mask, rule.select_many({"only": scores})["only"])
    assert torch.equal(mask, topk_mask(s, min_keep=min_keep, round_to=round_to)(scores))


@given(named_score_vectors(min_groups=2), sparsities(), st.sampled_from((0.25, 0.5, 2.0, 8.0)))
def test_global_mean_normalisation_ignores_vector_scale(
    scores: dict[str, Tensor], s: float, c: float
) -> None:
    """Scaling one vector by a power of two leaves "mean"/"max"/"l2"-normalised masks unchanged."""
    first = next(iter(scores))
    scaled = {**scores, first: scores[first] * c}
    for how in ("mean", "max", "l2"):
        rule = global_topk_mask(s, normalize=how)
        a, b = rule.select_many(scores), rule.select_many(scaled)
        assert all(torch.equal(a[k], b[k]) for k in scores)


def test_global_ties_follow_name_order() -> None:
    """Equal normalised scores in different vectors: the earlier name is pruned first."""
    rule = global_topk_mask(0.5, normalize="none", min_keep=0)
    out = rule.select_many({"z": torch.ones(2), "a": torch.ones(2)})
    assert torch.equal(out["z"], torch.tensor([False, False]))
    assert torch.equal(out["a"], torch.tensor([True, True]))
    assert rule.select_many({}) == {}


def test_global_zero_vector_is_not_divided_by_zero() -> None:
    """An all-zero vector normalises to zeros (guarded divisor) and is pruned first."""
    scores = {"dead": torch.zeros(2), "live": torch.ones(2)}
    out = global_topk_mask(0.5, min_keep=0).select_many(scores)
    assert torch.equal(out["dead"], torch.tensor([False, False]))


# --------------------------------------------------------------------------- values and errors


def test_reprs_read_like_calls_and_values_are_frozen() -> None:
    """repr shows the call with non-default options; values compare by parameters and are frozen."""
    assert repr(topk_mask(0.5)) == "topk_mask(sparsity=0.5)"
    assert repr(topk_mask(0.5, round_to=8)) == "topk_mask(sparsity=0.5, round_to=8)"
    assert repr(threshold_mask(0.1)) == "threshold_mask(threshold=0.1)"
    assert repr(threshold_mask(1, min_keep=0)) == "threshold_mask(threshold=1.0, min_keep=0)"
    assert (
        repr(global_topk_mask(0.3, max_sparsity=0.9))
        == "global_topk_mask(sparsity=0.3, max_sparsity=0.9)"
    )
    assert topk_mask(0.5) == TopK(0.5) and hash(topk_mask(0.5)) == hash(TopK(0.5))
    assert isinstance(global_topk_mask(0.5), GlobalTopK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topk_mask(0.5).sparsity = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "error", "builtin"),
    [
        (lambda: topk_mask(1.0), InvalidArgumentError, ValueError),
        (lambda: topk_mask(-0.1), InvalidArgumentError, ValueError),
        (lambda: topk_mask(math.nan), InvalidArgumentError, ValueError),
        (lambda: topk_mask(True), InvalidTypeError, TypeError),
        (lambda: topk_mask("0.5"), InvalidTypeError, TypeError),
        (lambda: topk_mask(0.5, round_to=0), InvalidArgumentError, ValueError),
        (lambda: topk_mask(0.5, round_to=2.0), InvalidTypeError, TypeError),
        (lambda: topk_mask(0.5, min_keep=-1), InvalidArgumentError, ValueError),
        (lambda: TopK(1.5), InvalidArgumentError, ValueError),
        (lambda: threshold_mask(math.nan), InvalidArgumentError, ValueError),
        (lambda: threshold_mask(None), InvalidTypeError, TypeError),
        (lambda: global_topk_mask(1.0), InvalidArgumentError, ValueError),
        (lambda: global_topk_mask(0.5, normalize="sum"), InvalidArgumentError, ValueError),
        (lambda: global_topk_mask(0.5, normalize=1), InvalidTypeError, TypeError),
        (lambda: global_topk_mask(0.5, max_sparsity=1.5), InvalidArgumentError, ValueError),
        (lambda: global_topk_mask(0.5, round_to=0), InvalidArgumentError, ValueError),
    ],
)
def test_bad_arguments_raise_at_construction(
    build: object, error: type[FpruneError], builtin: type[Exception]
) -> None:
    """Factories check their arguments when called, with fprune errors that are also builtins."""
    with pytest.raises(error) as info:
        build()  # type: ignore[operator]
    assert isinstance(info.value, builtin)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize(
    ("scores", "error", "builtin"),
    [
        (torch.ones(2, 2), InvalidWeightError, ValueError),
        (torch.tensor([1.0, math.nan]), InvalidWeightError, ValueError),
        (torch.tensor([1, 2]), InvalidTypeError, TypeError),
        ([1.0, 2.0], InvalidTypeError, TypeError),
    ],
    ids=["2-D", "nan", "int", "list"],
)
@pytest.mark.parametrize(
    "rule", [topk_mask(0.5), threshold_mask(0.5), global_topk_mask(0.5)], ids=repr
)
def test_bad_scores_raise(
    rule: object, scores: object, error: type[FpruneError], builtin: type[Exception]
) -> None:
    """select and select_many reject malformed scores with the documented errors."""
    with pytest.raises(error) as info:
        rule.select(scores)  # type: ignore[attr-defined]
    assert isinstance(info.value, builtin)
    with pytest.raises(error):
        rule.select_many({"layer": scores})  # type: ignore[attr-defined]
