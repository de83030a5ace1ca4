"""Groups pruned in whole units: grouped convolutions, GroupNorm groups, nn.MultiheadAttention heads."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from model_strategies import random_masks, randomised, zero_slices
from toolz import pipe
from torch import Tensor, nn

from fprune import Options, analyze, apply_patterns, load_plan, score_l1, topk_mask, trace
from fprune.errors import InvalidMaskError, UnprunableError
from fprune.modules import PrunedMultiheadAttention
from fprune.plan import Plan
from strategies import examples


def _exact(model: nn.Module, masks: dict[str, Tensor], *inputs: Tensor, **options: bool) -> nn.Module:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = apply_patterns(model, masks, **options)
    analysis = analyze(trace(model))
    plan = Plan(analysis, {analysis.group(k).name: v for k, v in masks.items()}, Options(**options))
    torch.testing.assert_close(pruned(*inputs), zero_slices(model, plan.params())(*inputs), rtol=1e-9, atol=1e-9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fresh = copy.deepcopy(model)  # the portable plan replays on a copy
    torch.testing.assert_close(apply_patterns(load_plan(plan.to_json(), fresh, Options(**options)))(*inputs),
                               pruned(*inputs))
    return pruned


# --------------------------------------------------------------------------------------
# Grouped convolutions and GroupNorm


class GroupedBlock(nn.Module):
    """1x1 conv -> BN or GroupNorm -> grouped 3x3 conv -> GroupNorm -> 1x1 conv (ResNeXt-like)."""

    def __init__(self, groups: int, per_in: int, per_out: int, gn_in: int, gn_out: int) -> None:
        super().__init__()
        width, out = groups * per_in, groups * per_out
        self.reduce = nn.Conv2d(3, width, 1)
        self.norm1 = nn.GroupNorm(gn_in, width) if gn_in else nn.BatchNorm2d(width)
        self.grouped = nn.Conv2d(width, out, 3, padding=1, groups=groups)
        self.norm2 = nn.GroupNorm(gn_out, out)
        self.expand = nn.Conv2d(out, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.reduce(x)))
        return self.expand(F.relu(self.norm2(self.grouped(h))))


@settings(max_examples=examples(25), deadline=None)
@given(
    groups=st.sampled_from([2, 4]),
    per_in=st.integers(1, 3),
    per_out=st.integers(1, 3),
    gn_in=st.sampled_from([0, 1, 2, 4]),
    gn_out=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_grouped_conv_and_group_norm_prune_whole_groups(
    groups: int, per_in: int, per_out: int, gn_in: int, gn_out: int, seed: int
) -> None:
    """The coarsest of the conv and norm groups is the unit; pruning units is exact."""
    assume((groups * per_in) % max(gn_in, 1) == 0 and (groups * per_out) % gn_out == 0)
    model = randomised(GroupedBlock(groups, per_in, per_out, gn_in, gn_out), seed)
    group = analyze(trace(model)).group("reduce")
    depthwise = per_in == per_out == 1  # channels pass through: no new producer
    assert group.producers == (("reduce",) if depthwise else ("reduce", "grouped"))
    units = min(groups, gn_out, gn_in or groups)  # every tiling here nests (powers of two)
    assert group.size == units
    masks = random_masks({"reduce": units}, seed)
    pruned = _exact(model, masks, torch.randn(2, 3, 5, 5, dtype=torch.float64))
    kept = int(masks["reduce"].sum())
    conv = pruned.get_submodule("grouped")
    assert conv.groups * units == groups * kept
    assert pruned.get_submodule("norm2").num_groups * units == gn_out * kept
    assert conv.in_channels == pruned.get_submodule("reduce").out_channels


def test_group_norm_unit_count_in_mask_error() -> None:
    """A mask sized by channels for a group pruned in whole units says what a unit is."""
    model = randomised(GroupedBlock(4, 2, 2, 0, 2), 0)
    with pytest.raises(InvalidMaskError, match="whole attention heads, conv groups or norm groups"):
        apply_patterns(model, {"reduce": torch.ones(8, dtype=torch.bool)})


def test_grouped_conv_on_model_input_is_refused() -> None:
    """A grouped conv whose input nothing prunes cannot lose conv groups: refused, naming it."""
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 2, 1))
    with pytest.raises(UnprunableError, match="grouped convolution"):
        apply_patterns(model, {"0": torch.tensor([True, False] * 4)})


def test_depthwise_multiplier_conv() -> None:
    """groups == in_channels with out = 2 x in (a depthwise multiplier) prunes per input channel."""
    model = randomised(nn.Sequential(nn.Conv2d(2, 3, 1), nn.Conv2d(3, 6, 3, groups=3), nn.ReLU(),
                                     nn.Conv2d(6, 2, 1)), 1)
    pruned = _exact(model, {"0": torch.tensor([True, False, True])}, torch.randn(1, 2, 5, 5, dtype=torch.float64))
    assert pruned.get_submodule("1").weight.shape == (4, 1, 3, 3)


def test_concat_into_group_norm_is_refused() -> None:
    """GroupNorm groups spanning a concatenation cannot be tiled: refused, not mis-pruned."""

    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
            self.gn, self.out = nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.out(self.gn(torch.cat([self.a(x), self.b(x)], 1)))

    with pytest.raises(UnprunableError, match="GroupNorm"):
        apply_patterns(Cat(), {"a": torch.tensor([True, False])})


# --------------------------------------------------------------------------------------
# nn.MultiheadAttention


class MHABlock(nn.Module):
    """Embedding Linear -> nn.MultiheadAttention (self-attention) -> residual -> MLP -> head."""

    def __init__(self, dim: int, heads: int, batch_first: bool, bias: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first, bias=bias)
        self.fc1, self.fc2, self.head = nn.Linear(dim, 5), nn.Linear(5, dim), nn.Linear(dim, 2)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        h = self.embed(x)
        h = h + self.attn(h, h, h, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=False)[0]
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.head(h)


@settings(max_examples=examples(25), deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 3),
    batch_first=st.booleans(),
    bias=st.booleans(),
    masked=st.sampled_from(["none", "padding", "causal", "float"]),
    seed=st.integers(0, 2**16),
)
def test_multihead_attention_heads_and_stream_exact(
    heads: int, head_dim: int, batch_first: bool, bias: bool, masked: str, seed: int
) -> None:
    """Heads, the residual stream (in_proj columns, out_proj rows) and the MLP prune exactly."""
    model = randomised(MHABlock(heads * head_dim, heads, batch_first, bias), seed)
    analysis = analyze(trace(model))
    prunable = {g.name: g.size for g in analysis.groups if g.prunable()}
    assert prunable == {"embed": heads * head_dim, "attn": heads, "fc1": 5}
    assert analysis.group("embed").producers == ("embed", "attn.out_proj", "fc2")
    n, length = 2, 4
    x = torch.randn((n, length, 3) if batch_first else (length, n, 3), dtype=torch.float64)
    padding = torch.tensor([[False] * length, [False, False, True, True]]) if masked == "padding" else None
    attn_mask = None
    if masked == "causal":
        attn_mask = torch.ones(length, length, dtype=torch.bool).triu(1)
    elif masked == "float":
        attn_mask = torch.randn(length, length, dtype=torch.float64)
    masks = random_masks(prunable, seed)
    pruned = _exact(model, masks, x, padding, attn_mask)
    attn = pruned.get_submodule("attn")
    assert isinstance(attn, nn.MultiheadAttention)
    if not (masks["attn"].all() and masks["embed"].all()):
        assert isinstance(attn, PrunedMultiheadAttention)
    assert attn.num_heads == int(masks["attn"].sum())
    assert attn.in_proj_weight.shape == (3 * attn.num_heads * head_dim, int(masks["embed"].sum()))


@settings(max_examples=examples(20), deadline=None)
@given(
    heads=st.integers(1, 3),
    batch_first=st.booleans(),
    batched=st.booleans(),
    average=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pruned_attention_class_matches_torch_when_nothing_is_pruned(
    heads: int, batch_first: bool, batched: bool, average: bool, seed: int
) -> None:
    """PrunedMultiheadAttention computes nn.MultiheadAttention's outputs and weights (masks included)."""
    torch.manual_seed(seed)
    original = nn.MultiheadAttention(2 * heads, heads, batch_first=batch_first).double().eval()
    ours = copy.deepcopy(original)
    ours.__class__ = PrunedMultiheadAttention
    length, n = 3, 2
    shape = ((n, length) if batch_first else (length, n)) if batched else (length,)
    q, k = torch.randn(*shape, 2 * heads, dtype=torch.float64), torch.randn(*shape, 2 * heads, dtype=torch.float64)
    padding = torch.tensor([[False, True, False], [False, False, False]]) if batched else torch.tensor([False, True, False])
    attn_mask = torch.randn(n * heads if batched else heads, length, length, dtype=torch.float64)
    for args in ({}, {"key_padding_mask": padding}, {"attn_mask": attn_mask}):
        want = original(q, k, k, average_attn_weights=average, **args)
        got = ours(q, k, k, average_attn_weights=average, **args)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
        fused = ours(q, k, k, need_weights=False, **args)  # the scaled_dot_product_attention path
        torch.testing.assert_close(fused[0], want[0])
        assert fused[1] is None


def test_attention_weights_read_after_head_pruning() -> None:
    """Averaged attention weights change with the head count: inexact, allowed only with approximate."""

    class Weights(MHABlock):
        def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
            h = self.embed(x)
            out, weights = self.attn(h, h, h)
            return self.head(out) + weights.sum()

    model = randomised(Weights(4, 2, True), 0)
    keep = torch.tensor([True, False])
    with pytest.raises(UnprunableError, match="attention weights"):
        apply_patterns(model, {"attn": keep})
    pruned = apply_patterns(model, {"attn": keep}, approximate=True)
    assert pruned.get_submodule("attn").num_heads == 1


def test_cross_attention_prunes_heads_but_not_inputs() -> None:
    """Key/value from another tensor: heads still prune; the inputs' groups are refused."""

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.kv = nn.Linear(3, 4), nn.Linear(3, 4)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x: Tensor, memory: Tensor) -> Tensor:
            kv = self.kv(memory)
            return self.head(self.attn(self.q(x), kv, kv, need_weights=False)[0])

    model = randomised(Cross(), 0)
    analysis = analyze(trace(model))
    assert not analysis.group("q").prunable() and not analysis.group("kv").prunable()
    x, memory = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    pruned = _exact(model, {"attn": torch.tensor([False, True])}, x, memory)
    assert pruned.get_submodule("attn").num_heads == 1


def test_add_bias_kv_is_refused() -> None:
    model = randomised(MHABlock(4, 2, True), 0)
    model.attn = nn.MultiheadAttention(4, 2, batch_first=True, add_bias_kv=True).double()
    analysis = analyze(trace(model))
    assert "attn" not in analysis.by_producer
    assert "add_bias_kv" in analysis.group("embed").why_not()


def test_pruned_attention_prunes_again_and_scores() -> None:
    """A pruned model traces with the pruned attention as a leaf; scoring and pruning again stay exact."""
    model = randomised(MHABlock(6, 3, True), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once = pipe(model, score_l1, topk_mask(0.34), apply_patterns)
        scored = score_l1(once)
    assert scored.scores["attn"].shape == (2,)
    assert any(n.op == "call_module" and n.target == "attn" for n in once.graph.nodes)
    twice = _exact(once, {"attn": torch.tensor([True, False])}, torch.randn(2, 3, 3, dtype=torch.float64))
    assert twice.get_submodule("attn").num_heads == 1


def test_heads_under_fold_bias_are_zeroed_not_indexed_wrongly() -> None:
    """fold_bias keeps a head group whole with its rows zeroed (once an IndexError: mask over heads)."""
    model = randomised(MHABlock(4, 2, True), 0)
    with pytest.warns(UserWarning, match="kept at full size"):
        pruned = apply_patterns(model, {"attn": torch.tensor([True, False])}, fold_bias=True)
    weight = pruned.get_submodule("attn").in_proj_weight
    assert weight.shape == (12, 4)
    assert [bool(weight[r].eq(0).all()) for r in range(0, 12, 2)] == [False, True] * 3


def test_attention_macs_follow_the_heads() -> None:
    """summary counts nn.MultiheadAttention's projections and attention, before and after pruning."""
    from fprune.summary import macs_by_module

    model = randomised(MHABlock(4, 2, True), 0)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    pruned = apply_patterns(model, {"attn": torch.tensor([True, False])})
    before, after = macs_by_module(model, x)["attn"], macs_by_module(pruned, x)["attn"]
    tokens, inner = 15, 4
    assert before == tokens * 4 * inner * 3 + 2 * tokens * 5 * inner + tokens * inner * 4
    assert after == tokens * 4 * 2 * 3 + 2 * tokens * 5 * 2 + tokens * 2 * 4


def test_attention_called_twice_couples_both_outputs() -> None:
    """One nn.MultiheadAttention on two inputs: both outputs are its out_proj channels (never untracked)."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head, self.other = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h, g = self.a(x), self.b(x)
            return self.head(self.attn(h, h, h, need_weights=False)[0]) + self.other(self.attn(g, g, g)[0])

    model = randomised(Twice(), 0)
    analysis = analyze(trace(model))
    assert set(analysis.group("attn.out_proj").members) >= {"head", "other"}
    assert not analysis.group("a").prunable()  # the two calls read different channels
    pruned = _exact(model, {"attn.out_proj": torch.tensor([True, False, True, True])},
                    torch.randn(2, 3, 3, dtype=torch.float64))
    assert pruned.get_submodule("other").in_features == 3
