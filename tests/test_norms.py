"""Norms over pruned channels stay exact: LayerNorm, RMSNorm, their functional and decomposed forms.

An RMSNorm over ``d'`` of ``d`` channels keeps its class with ``offset + w' = (offset + w) *
sqrt(d/d')`` and ``eps' = eps * d/d'``; a LayerNorm becomes a PrunedLayerNorm (statistics over the
original width).  Every case is checked against the float64 original with the removed slices zero,
on both front-ends (torch.fx and torch.export).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import masks_for, zero_slices
from models import NORMS, ConvNeXtish, PreNormNet, seeded
from torch import Tensor, nn
from torch.export import ExportedProgram

from fprune import Options, analyze, apply_patterns, export, score_l1, topk_mask, trace
from fprune.errors import InvalidMaskError, UnprunableError
from fprune.modules import PrunedLayerNorm
from fprune.plan import Plan
from strategies import examples, seeds

FRONT_ENDS = ("fx", "export")
RMS = ("rms_norm", "rms_norm_eps0", "llama", "gemma", "t5", "functional_rms_norm")


def _source(model: nn.Module, x: Tensor, front: str) -> nn.Module | ExportedProgram:
    return trace(model) if front == "fx" else export(model, (x,))


def _run(pruned: Any, x: Tensor) -> Tensor:
    return (pruned.module() if isinstance(pruned, ExportedProgram) else pruned)(x)


def _prune(model: nn.Module, x: Tensor, masks: dict[str, Tensor], front: str,
           **options: bool) -> tuple[Any, Tensor, Tensor]:
    """(pruned, its output, the zeroed original's output) for `masks` on `front`."""
    source = _source(model, x, front)
    plan = Plan(analyze(source), masks, Options(**options))
    pruned = apply_patterns(plan)
    return pruned, _run(pruned, x), zero_slices(model, plan.params())(x)


def _close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


STREAM = torch.tensor([True, False, True, True, False, True])  # 4 of the 6 hidden channels
HIDDEN = torch.tensor([True, True, False, True, True])


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_hidden_width_under_norms_is_exact(norm: str, front: str) -> None:
    """The residual stream under two norms of each form prunes exactly; the model is untouched."""
    model, x = seeded(PreNormNet(norm), 0), torch.randn(2, 5, 3, dtype=torch.float64)
    before = _state(model)
    analysis = analyze(_source(model, x, front))
    stream = next(g for g in analysis.groups if "embed" in g.producers)
    assert stream.prunable(), stream.why_not()
    assert len(analysis.norms) == 2 and {s.kind for s in analysis.norms} == {"rms" if norm in RMS else "layer"}
    _, got, expected = _prune(model, x, {"embed": STREAM, "fc1": HIDDEN}, front)
    _close(got, expected)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("norm", ["rms_norm", "rms_norm_eps0", "layer_norm", "layer_norm_no_affine"])
def test_norm_modules_keep_their_class(norm: str) -> None:
    """An nn.RMSNorm stays an nn.RMSNorm (weight and eps rescaled); an nn.LayerNorm becomes a PrunedLayerNorm."""
    model, x = seeded(PreNormNet(norm), 0), torch.randn(2, 5, 3, dtype=torch.float64)
    pruned, _, _ = _prune(model, x, {"embed": STREAM}, "fx")
    small, big = pruned.get_submodule("norm1"), model.norm1
    assert small.normalized_shape == (4,)
    if norm.startswith("rms"):
        assert type(small) is nn.RMSNorm and small.eps == big.eps * 6 / 4
        torch.testing.assert_close(small.weight, big.weight[STREAM] * (6 / 4) ** 0.5)
    else:
        assert type(small) is PrunedLayerNorm and small.full_width == 6 and small.eps == big.eps


def test_gemma_offset_weight() -> None:
    """Gemma applies 1 + weight: the stored weight is rescaled so that 1 + w' == (1 + w) * sqrt(d/d')."""
    model, x = seeded(PreNormNet("gemma"), 1), torch.randn(2, 5, 3, dtype=torch.float64)
    pruned, got, expected = _prune(model, x, {"embed": STREAM}, "fx")
    _close(got, expected)
    want = (1 + model.norm1.weight[STREAM]) * (6 / 4) ** 0.5 - 1
    torch.testing.assert_close(pruned.get_submodule("norm1").weight, want)


@settings(max_examples=examples(25))
@given(norm=st.sampled_from(sorted(NORMS)), front=st.sampled_from(FRONT_ENDS), width=st.integers(2, 7),
       hidden=st.integers(1, 5), seed=seeds(), data=st.data())
def test_any_mask_under_any_norm_is_exact(norm: str, front: str, width: int, hidden: int, seed: int,
                                          data: st.DataObject) -> None:
    """Any keep-masks of the stream and the hidden units, any widths and weights: exact on both front-ends."""
    model = seeded(PreNormNet(norm, width=width, hidden=hidden), seed % 1000)
    x = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    masks = {"embed": data.draw(masks_for(width), "stream"), "fc1": data.draw(masks_for(hidden), "hidden")}
    _, got, expected = _prune(model, x, masks, front)
    _close(got, expected)


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_channels_first_layer_norms(front: str) -> None:
    """timm's LayerNorm2d (permute, F.layer_norm, permute) and a channels-last nn.LayerNorm in a block."""
    model, x = seeded(ConvNeXtish(), 0), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    analysis = analyze(_source(model, x, front))
    assert next(g for g in analysis.groups if "stem" in g.producers).prunable()
    assert len(analysis.norms) == 2
    pruned, got, expected = _prune(model, x, {"stem": STREAM, "pw1": torch.arange(8) % 3 > 0}, front)
    _close(got, expected)


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_approximate_gives_plain_layer_norms(front: str) -> None:
    """approximate=True: a plain nn.LayerNorm(d') (F.layer_norm over d'), no fprune module, a different function."""
    model, x = seeded(PreNormNet("layer_norm"), 0), torch.randn(2, 5, 3, dtype=torch.float64)
    pruned, got, expected = _prune(model, x, {"embed": STREAM}, front, approximate=True)
    module = pruned.module() if isinstance(pruned, ExportedProgram) else pruned
    assert not any(type(m).__module__.startswith("fprune") for m in module.modules())
    if front == "fx":
        assert type(pruned.get_submodule("norm1")) is nn.LayerNorm
    else:
        assert "constant_pad_nd" not in str(pruned.graph)
    assert not torch.allclose(got, expected)
    exact, _, _ = _prune(model, x, {"embed": STREAM}, front)
    assert sum(p.numel() for p in _params(exact)) == sum(p.numel() for p in _params(pruned))
    functional = seeded(PreNormNet("functional_layer_norm"), 0)
    pruned, got, expected = _prune(functional, x, {"embed": STREAM}, front, approximate=True)
    assert "layer_norm_full" not in str(pruned.graph) and "constant_pad_nd" not in str(pruned.graph)


def _params(pruned: Any) -> list[Tensor]:
    return list((pruned.module() if isinstance(pruned, ExportedProgram) else pruned).parameters())


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm", "llama", "functional_layer_norm"])
def test_pruning_twice_stays_exact(norm: str) -> None:
    """A pruned model pruned again: a PrunedLayerNorm keeps its original full width; the RMS factors compose."""
    model, x = seeded(PreNormNet(norm), 0), torch.randn(2, 5, 3, dtype=torch.float64)
    once, got_once, expected_once = _prune(model, x, {"embed": STREAM}, "fx")
    _close(got_once, expected_once)
    twice, got, expected = _prune(once, x, {"embed": torch.tensor([True, False, True, True])}, "fx")
    _close(got, expected)
    if norm == "layer_norm":
        assert twice.get_submodule("norm1").full_width == 6
    if norm == "rms_norm":
        assert twice.get_submodule("norm1").eps == pytest.approx(model.norm1.eps * 6 / 3)


def test_topk_pipeline_prunes_the_stream() -> None:
    """score_l1 -> topk_mask prunes the hidden width of a pre-norm model by default, exactly."""
    model, x = seeded(PreNormNet("llama", width=8), 0), torch.randn(2, 5, 3, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head reaches the output
        plan = topk_mask(0.5)(score_l1(model))
    assert set(plan.masks) == {"embed", "fc1"}
    _close(apply_patterns(plan)(x), zero_slices(model, plan.params())(x))


# --------------------------------------------------------------------------- bad input


class _Wide(nn.Module):
    """Linear -> a norm over (4, 6), channels among the normalised dims -> Linear."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.fc, self.norm, self.out = nn.Linear(3, 6), norm, nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.norm(self.fc(x)))


@pytest.mark.parametrize("norm", [nn.LayerNorm((4, 6)), nn.RMSNorm((4, 6), eps=1e-6)], ids=["layer", "rms"])
def test_norm_over_several_dims_is_refused(norm: nn.Module) -> None:
    """normalized_shape of rank > 1 over the pruned channels: unprunable, with the reason."""
    model = _Wide(norm)
    group = next(g for g in analyze(trace(model)).groups if g.name == "fc")
    assert not group.prunable(Options(approximate=True)) and "rank > 1" in group.why_not()
    with pytest.raises(UnprunableError, match="rank > 1"):
        apply_patterns(model, {"fc": STREAM})


def test_rms_norm_without_eps_or_weight_needs_approximate() -> None:
    """eps=None (taken from the dtype at run time) or no weight: inexact, refused by default, with the reason."""
    for norm, reason in ((nn.RMSNorm(6), "eps=None"), (nn.RMSNorm(6, 1e-6, elementwise_affine=False), "without a weight")):
        model = nn.Sequential(nn.Linear(3, 6), norm, nn.Linear(6, 2))
        with pytest.raises(UnprunableError, match=reason):
            apply_patterns(model, {"0": STREAM})
        assert apply_patterns(model, {"0": STREAM}, approximate=True).get_submodule("1").normalized_shape == (4,)


class _RootNorm(nn.Module):
    """F.rms_norm / F.layer_norm on the root module's own weight, arguments by keyword."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.fc, self.out = kind, nn.Linear(3, 6), nn.Linear(6, 2)
        self.weight, self.bias = nn.Parameter(torch.ones(6)), nn.Parameter(torch.zeros(6))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "rms":
            return self.out(F.rms_norm(self.fc(x), (6,), weight=self.weight, eps=1e-3))
        return self.out(F.layer_norm(self.fc(x), (6,), weight=self.weight, bias=self.bias, eps=1e-3))


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_functional_norms_on_root_tensors_by_keyword(kind: str, front: str) -> None:
    """F.rms_norm / F.layer_norm on the root's tensors, weight and eps by keyword: eps rescaled where written."""
    model, x = seeded(_RootNorm(kind), 0), torch.randn(4, 3, dtype=torch.float64) * 0.01  # eps matters
    _, got, expected = _prune(model, x, {"fc": STREAM}, front)
    _close(got, expected)


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_a_mask_removing_every_channel_is_refused(norm: str) -> None:
    """Removing every channel of a norm (its whole width) is a clear InvalidMaskError, nothing changed."""
    model = seeded(PreNormNet(norm), 0)
    before = _state(model)
    with pytest.raises(InvalidMaskError):
        apply_patterns(model, {"embed": torch.zeros(6, dtype=torch.bool)})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class _SharedNorm(nn.Module):
    """One RMSNorm module (one eps) called on the channels of two producers."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.norm, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.RMSNorm(4, 1e-6), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.cat([self.norm(self.a(x)), self.norm(self.b(x))], -1))


def test_one_norm_on_two_groups_is_refused() -> None:
    """Its one eps and weight cannot follow two masks: both groups are refused, naming the module."""
    groups = {g.name: g for g in analyze(trace(_SharedNorm())).groups}
    for name in ("a", "b"):
        assert not groups[name].prunable(Options(approximate=True))
        assert "module 'norm' is called several times on different channels" in groups[name].why_not()
