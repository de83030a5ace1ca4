"""Never silently wrong, never a crash: random soups of understood and not-understood ops.

Every drawn graph either prunes exactly (pruned == original with the plan's slices zeroed) or is
refused with an :class:`fprune.errors.FpruneError` naming the op, whatever masks are asked for.
Peers hang or raise IndexError on unusual graphs; these properties pin that fprune does neither.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import randomised, zero_slices
from torch import Tensor, nn

from fprune import Options, analyze, apply_patterns, trace
from fprune.errors import FpruneError, UnprunableError
from fprune.plan import Plan
from strategies import examples

WIDTH = 4  # channels of the stream (even: chunk and head splits need it)

# name -> op on (model, step index, stream): some have exact rules, some are refused by design
OPS: dict[str, Callable[[SoupNet, int, Tensor], Tensor]] = {
    "linear": lambda m, i, h: m.lins[i](h),
    "relu": lambda m, i, h: F.relu(h),
    "residual": lambda m, i, h: h + m.lins[i](F.gelu(h)),
    "gamma": lambda m, i, h: h * m.gammas[i],  # a per-channel model tensor
    "norm": lambda m, i, h: m.norms[i](h),  # LayerNorm over the channels: inexact
    "softmax_tokens": lambda m, i, h: h.softmax(dim=-2),
    "softmax_channels": lambda m, i, h: h.softmax(dim=-1),
    "swap_halves": lambda m, i, h: torch.cat(h.chunk(2, dim=-1)[::-1], dim=-1),
    "heads_round_trip": lambda m, i, h: h.reshape(h.shape[0], h.shape[1], 2, WIDTH // 2).flatten(2),
    "transpose_twice": lambda m, i, h: h.transpose(-1, -2).transpose(-1, -2),
    "cumsum": lambda m, i, h: torch.cumsum(h, dim=-1),
    "flip": lambda m, i, h: torch.flip(h, [-1]),
    "shift": lambda m, i, h: F.pad(h[..., 1:], (0, 1)),
    "center": lambda m, i, h: h - h.mean(-1, keepdim=True),
    "gram": lambda m, i, h: (h @ h.transpose(-1, -2)) @ h,
    "sort": lambda m, i, h: torch.sort(h, dim=-1)[0],
    "gate_by_norm": lambda m, i, h: h * h.sum(-1, keepdim=True),
    "first_token": lambda m, i, h: h * h[:, :1],
    "where": lambda m, i, h: torch.where(h > 0, h, torch.zeros_like(h)),
    "normalize": lambda m, i, h: F.normalize(h, dim=-1),
    "stack_mean": lambda m, i, h: torch.stack([h, F.relu(h)]).mean(0),
    "max_channels": lambda m, i, h: h + h.amax(-1, keepdim=True),
    "max_tokens": lambda m, i, h: h + h.amax(-2, keepdim=True),
    "split_unequal": lambda m, i, h: torch.cat(torch.split(h, [1, WIDTH - 1], dim=-1), dim=-1),
    "flat_round_trip": lambda m, i, h: h.reshape(-1, WIDTH).reshape(h.shape),
    "repeat_tokens": lambda m, i, h: h.repeat(1, 2, 1)[:, : h.shape[1]],
    "einsum": lambda m, i, h: torch.einsum("bnc,bmc->bnm", h, h) @ h,
    "unsqueeze_squeeze": lambda m, i, h: h.unsqueeze(-1).squeeze(-1),
    "conv_tokens": lambda m, i, h: m.convs[i](h.transpose(1, 2)).transpose(1, 2),
}


class SoupNet(nn.Module):
    """Linear(3 -> WIDTH), then the drawn ops on the stream, then a Linear head."""

    def __init__(self, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.ops = ops
        self.embed = nn.Linear(3, WIDTH)
        self.lins = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in ops)
        self.norms = nn.ModuleList(nn.LayerNorm(WIDTH) for _ in ops)
        self.gammas = nn.ParameterList(nn.Parameter(torch.ones(WIDTH)) for _ in ops)
        self.convs = nn.ModuleList(nn.Conv1d(WIDTH, WIDTH, 3, padding=1) for _ in ops)
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for i, op in enumerate(self.ops):
            h = OPS[op](self, i, h)
        return self.head(h)


@settings(max_examples=examples(60), deadline=None)
@given(
    ops=st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=5).map(tuple),
    seed=st.integers(0, 2**16),
    prune_outputs=st.booleans(),
    data=st.data(),
)
def test_any_mask_is_exact_or_refused(ops: tuple[str, ...], seed: int, prune_outputs: bool, data: st.DataObject) -> None:
    """Masks on prunable groups prune exactly; a mask on any other group raises UnprunableError."""
    model = randomised(SoupNet(ops), seed)
    options = Options(prune_outputs=prune_outputs)
    analysis = analyze(trace(model))  # never raises on a traceable model
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    masks: dict[str, Tensor] = {}
    refused: dict[str, Tensor] = {}
    for group in analysis.groups:
        if group.size < 2 or not data.draw(st.booleans(), label=f"mask {group.name}"):
            continue
        keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=group.size, max_size=group.size)))
        keep[data.draw(st.integers(0, group.size - 1))] = True
        if bool(keep.all()):
            continue
        (masks if group.prunable(options) else refused)[group.name] = keep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = apply_patterns(model, masks, prune_outputs=prune_outputs)
        plan = Plan(analysis, masks, options)
        expected = zero_slices(model, plan.params())(x)
        if "head" in masks:  # the output channels themselves were pruned (prune_outputs)
            expected = expected[..., masks["head"]]
        torch.testing.assert_close(pruned(x), expected, rtol=1e-9, atol=1e-9)
        for name, keep in refused.items():
            try:
                apply_patterns(model, {name: keep}, prune_outputs=prune_outputs)
            except UnprunableError as exc:
                assert "node" in str(exc)  # names the op
            else:
                raise AssertionError(f"group {name!r} is not prunable, yet its mask was applied")


@settings(max_examples=examples(30), deadline=None)
@given(ops=st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_scoring_pipeline_never_crashes(ops: tuple[str, ...], seed: int) -> None:
    """The whole pipe either returns a pruned model or raises an FpruneError: no IndexError, no hang."""
    from toolz import pipe

    from fprune import score_l1, score_with, topk_mask

    model = randomised(SoupNet(ops), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pruned = pipe(model, score_with(score_l1, prune_outputs=True), topk_mask(0.5), apply_patterns)
        except FpruneError:
            return
    assert pruned(torch.randn(2, 5, 3, dtype=torch.float64)).shape[:2] == (2, 5)


C = 4  # channels of the image stream (even: groups, chunks and shuffles need it)

IMAGE_OPS: dict[str, Callable[[ImageSoup, int, Tensor], Tensor]] = {
    "conv": lambda m, i, h: m.convs[i](h),
    "bn_relu": lambda m, i, h: F.relu(m.bns[i](h)),
    "grouped": lambda m, i, h: m.grouped[i](h),
    "group_norm": lambda m, i, h: m.gns[i](h),
    "depthwise": lambda m, i, h: m.dws[i](h),
    "residual": lambda m, i, h: h + m.convs[i](F.relu(h)),
    "se": lambda m, i, h: h * torch.sigmoid(m.convs[i](h.mean((2, 3), keepdim=True))),
    "max_pool": lambda m, i, h: F.max_pool2d(h, 3, 1, 1),
    "avg_pool": lambda m, i, h: m.avg(h),
    "concat_mix": lambda m, i, h: m.mixes[i](torch.cat([h, m.convs[i](h)], dim=1)),
    "shuffle": lambda m, i, h: h.view(h.shape[0], 2, C // 2, h.shape[2], h.shape[3]).transpose(1, 2).reshape(h.shape),
    "halves_swap": lambda m, i, h: torch.cat(h.chunk(2, dim=1)[::-1], dim=1),
    "channel_mean": lambda m, i, h: h - h.mean(1, keepdim=True),
    "cumsum": lambda m, i, h: torch.cumsum(h, dim=1),
    "interpolate": lambda m, i, h: F.interpolate(h, scale_factor=1.0),
    "crop_pad": lambda m, i, h: F.pad(h[:, :, 1:, 1:], (1, 0, 1, 0)),
    "flip_channels": lambda m, i, h: torch.flip(h, [1]),
    "scale_param": lambda m, i, h: h * m.scales[i],
}


class ImageSoup(nn.Module):
    """Conv(2 -> C), then the drawn ops on the image stream, then pool, flatten and a Linear head."""

    def __init__(self, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.ops = ops
        self.stem = nn.Conv2d(2, C, 3, padding=1)
        n = len(ops)
        self.convs = nn.ModuleList(nn.Conv2d(C, C, 3, padding=1) for _ in range(n))
        self.mixes = nn.ModuleList(nn.Conv2d(2 * C, C, 1) for _ in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(C) for _ in range(n))
        self.gns = nn.ModuleList(nn.GroupNorm(2, C) for _ in range(n))
        self.grouped = nn.ModuleList(nn.Conv2d(C, C, 3, padding=1, groups=2) for _ in range(n))
        self.dws = nn.ModuleList(nn.Conv2d(C, C, 3, padding=1, groups=C) for _ in range(n))
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(1, C, 1, 1)) for _ in range(n))
        self.avg = nn.AvgPool2d(3, 1, 1)
        self.head = nn.Linear(C * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for i, op in enumerate(self.ops):
            h = IMAGE_OPS[op](self, i, h)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 2), 1))


@settings(max_examples=examples(60), deadline=None)
@given(
    ops=st.lists(st.sampled_from(sorted(IMAGE_OPS)), min_size=1, max_size=5).map(tuple),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_image_soup_is_exact_or_refused(ops: tuple[str, ...], seed: int, data: st.DataObject) -> None:
    """Convolutional soups (groups, norms, concat, shuffles, crops): exact where prunable, refused elsewhere."""
    model = randomised(ImageSoup(ops), seed)
    analysis = analyze(trace(model))
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    masks: dict[str, Tensor] = {}
    for group in analysis.groups:
        if group.size < 2 or not group.prunable() or not data.draw(st.booleans(), label=f"mask {group.name}"):
            continue
        keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=group.size, max_size=group.size)))
        keep[data.draw(st.integers(0, group.size - 1))] = True
        masks[group.name] = keep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = apply_patterns(model, masks)
    plan = Plan(analysis, masks)
    torch.testing.assert_close(pruned(x), zero_slices(model, plan.params())(x), rtol=1e-9, atol=1e-9)
