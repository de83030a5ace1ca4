"""timm idioms that used to keep channels whole, now exact on both front-ends (issue #14, item 3).

* a layer scale viewed onto the channel dim (ConvNeXt's ``x.mul(gamma.reshape(1, -1, 1, 1))``);
* ``F.linear`` on a module's own tensors (timm's ``Linear`` subclass, traced through);
* GhostNet's ``cat([a, b], 1)[:, :out]`` when ``out`` is the whole width.

Each is checked against the float64 original with the removed slices zero; the unsupported
variants are refused with a reason, never sliced wrongly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import masks_for, zero_slices
from models import seeded
from torch import Tensor, nn
from torch.export import ExportedProgram

from fprune import Options, analyze, apply_patterns, export, trace
from fprune.plan import Plan
from strategies import examples

FRONT_ENDS = ("fx", "export")


def _check(model: nn.Module, x: Tensor, masks: dict[str, Tensor], front: str) -> None:
    """Pruned == zeroed original, on `front`."""
    source = trace(model) if front == "fx" else export(model, (x,))
    plan = Plan(analyze(source), masks, Options())
    pruned = apply_patterns(plan)
    got = (pruned.module() if isinstance(pruned, ExportedProgram) else pruned)(x)
    torch.testing.assert_close(got, zero_slices(model, plan.params())(x), rtol=1e-9, atol=1e-9)


def _group(model: nn.Module, producer: str) -> object:
    return next(g for g in analyze(trace(model)).groups if producer in g.producers)


VIEWS = {  # name -> (gamma, its width) -> gamma on dim 1 of 4
    "reshape(1, -1, 1, 1)": lambda g, c: g.reshape(1, -1, 1, 1),
    "view(1, C, 1, 1)": lambda g, c: g.view(1, c, 1, 1),
    "reshape((1, C, 1, 1))": lambda g, c: g.reshape((1, c, 1, 1)),
    "[:, None, None]": lambda g, c: g[:, None, None],
}


class LayerScale(nn.Module):
    """conv -> x + x * gamma viewed onto dim 1 -> conv."""

    def __init__(self, view: str, width: int) -> None:
        super().__init__()
        self.view, self.width = view, width
        self.conv, self.out = nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 2, 1)
        self.gamma = nn.Parameter(torch.randn(width))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return self.out(y + y.mul(VIEWS[self.view](self.gamma, self.width)))


@settings(max_examples=examples(15))
@given(view=st.sampled_from([v for v in VIEWS if "None" not in v]), front=st.sampled_from(FRONT_ENDS), width=st.integers(2, 7),
       data=st.data())
def test_layer_scale_views_are_exact(view: str, front: str, width: int, data: st.DataObject) -> None:
    """A per-channel scale reshaped or viewed onto the channels is sliced with them (an explicit count becomes -1)."""
    model = seeded(LayerScale(view, width), width)
    _check(model, torch.randn(2, 3, 4, 4, dtype=torch.float64), {"conv": data.draw(masks_for(width))}, front)


def test_layer_scale_by_indexing_is_refused_with_a_reason() -> None:
    """gamma[:, None, None] (indexing, not a view) is not read as a layer scale: the group stays whole."""
    group = _group(LayerScale("[:, None, None]", 4), "conv")
    assert not group.prunable() and "untracked" in group.why_not()


class ViewNotScale(nn.Module):
    """A model tensor viewed to a shape with two non-unit dims: not a per-channel scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
        self.bias_map = nn.Parameter(torch.randn(16))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(x) + self.bias_map.view(1, 4, 4, 1))


def test_a_view_that_is_not_a_channel_scale_is_refused() -> None:
    group = _group(ViewNotScale(), "conv")
    assert not group.prunable() and "untracked" in group.why_not()


class TimmLinear(nn.Linear):
    """timm's Linear: an nn.Linear subclass whose forward calls F.linear (traced through)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias)


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_functional_linear_on_own_tensors_is_a_consumer(front: str) -> None:
    """F.linear(x, m.weight, m.bias) slices the weight's columns with x's channels; its output stays whole."""
    model = seeded(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), TimmLinear(6, 2)), 0)
    assert _group(model, "0").prunable()
    _check(model, torch.randn(4, 3, dtype=torch.float64), {"0": torch.tensor([1, 0, 1, 1, 0, 1]).bool()}, front)


class Tied(nn.Module):
    """F.linear on a weight another op reads too: not sliced."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.weight = nn.Linear(3, 4), nn.Parameter(torch.randn(4, 4))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.fc(x), self.weight) + self.weight.sum()


def test_functional_linear_on_a_shared_weight_is_refused() -> None:
    group = _group(Tied(), "fc")
    assert not group.prunable() and "also read" in group.why_not()


class Ghost(nn.Module):
    """GhostNet's module: primary conv, cheap depthwise conv on it, concat, slice to `out` channels."""

    def __init__(self, out: int) -> None:
        super().__init__()
        init = -(-out // 2)
        self.width = out
        self.primary = nn.Conv2d(3, init, 1)
        self.cheap = nn.Conv2d(init, init, 3, padding=1, groups=init)
        self.head = nn.Conv2d(out, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.primary(x)
        return self.head(torch.cat([a, self.cheap(a)], dim=1)[:, :self.width, :, :])


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_ghost_slice_of_the_whole_width_is_exact(front: str) -> None:
    model = seeded(Ghost(8), 0)
    _check(model, torch.randn(2, 3, 4, 4, dtype=torch.float64), {"primary": torch.tensor([1, 0, 1, 1]).bool()}, front)


def test_ghost_slice_inside_the_channels_is_refused() -> None:
    """An odd width drops the last cheap channel: refused, the reason naming the supported form."""
    group = _group(Ghost(7), "primary")
    assert not group.prunable() and "x[..., :n]" in group.why_not()


class GhostBottleneck(nn.Module):
    """A conv shortcut (one space of 2k channels) added to a Ghost module's [a, cheap(a)] (k channels twice),
    then an identity residual around a second Ghost module."""

    def __init__(self, tied: bool = True) -> None:
        super().__init__()
        self.stem, self.g1, self.short, self.g2 = nn.Conv2d(3, 6, 1), Ghost(8), nn.Conv2d(6, 8, 1), Ghost(8)
        self.g1.primary, self.g2.primary = nn.Conv2d(6, 4, 1), nn.Conv2d(8, 4, 1)
        self.other = None if tied else nn.Conv2d(6, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.other is None:
            a = self.g1.primary(x)
            y = torch.cat([a, self.g1.cheap(a)], dim=1)[:, :8] + self.short(x)
        else:  # two different producers side by side: the shortcut's halves would need two masks
            y = torch.cat([self.g1.primary(x), self.other(x)], dim=1) + self.short(x)
        a = self.g2.primary(y)
        return self.head(y + torch.cat([a, self.g2.cheap(a)], dim=1)[:, :8])


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_ghost_shortcut_is_tiled_exactly(front: str) -> None:
    """The shortcut's channel u and k + u go with a's channel u: one unit, exact."""
    model, x = seeded(GhostBottleneck(), 0), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    group = _group(model, "short")
    assert group.prunable() and group.size == 4
    _check(model, x, {"short": torch.tensor([1, 0, 1, 1]).bool(), "stem": torch.tensor([1, 1, 0, 1, 0, 1]).bool()},
           front)


def test_shortcut_over_two_producers_is_refused() -> None:
    group = _group(GhostBottleneck(tied=False), "short")
    assert not group.prunable() and "n copies" in group.why_not()


class SwinWindows(nn.Module):
    """Swin's window padding and shifted windows on channels-last tokens: F.pad of other dims, torch.roll."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm, self.out = nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = F.pad(self.norm(self.fc(x)), (0, 0, 0, 1, 0, 1))
        y = torch.roll(y, shifts=(-1, -1), dims=(1, 2))
        return self.out(y[:, :4, :4, :].contiguous())


class LinearNorm(nn.Module):
    """LeViT's LinearNorm: Linear, then BatchNorm1d over the flattened tokens, reshaped back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x)
        return self.out(self.bn(y.flatten(0, 1)).reshape_as(y))


@pytest.mark.parametrize("model, x", [(SwinWindows(), torch.randn(2, 4, 4, 3)), (LinearNorm(), torch.randn(2, 5, 3))],
                         ids=["swin-windows", "levit-linear-norm"])
def test_pad_roll_and_reshape_as_under_export(model: nn.Module, x: Tensor) -> None:
    """Exact through torch.export, which records every rank; torch.fx, which does not, refuses with the reason."""
    model = seeded(model, 0)
    mask = torch.tensor([1, 0, 1, 1, 0, 1]).bool()
    _check(model, x.double(), {"fc": mask}, "export")
    assert "rank" in str(_group(model, "fc").why_not())


class PadChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(3, 4), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.pad(self.fc(x), (1, 1)))


def test_pad_of_the_channel_dim_is_refused() -> None:
    model = PadChannels()
    program = export(model, (torch.randn(2, 3),))
    group = next(g for g in analyze(program).groups if "fc" in g.producers)
    assert not group.prunable() and "pads the channel dim" in group.why_not()


@pytest.mark.parametrize("model, x", [(seeded(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), TimmLinear(6, 2)), 0),
                                        torch.randn(4, 3)), (seeded(SwinWindows(), 0), torch.randn(2, 4, 4, 3))],
                         ids=["functional-linear", "pad"])
def test_fold_bias_keeps_these_groups_whole(model: nn.Module, x: Tensor) -> None:
    """fold_bias=True cannot fold a removed channel's constant through them: the group keeps its size."""
    first = "0" if isinstance(model, nn.Sequential) else "fc"
    program = export(model, (x.double(),))
    group = next(g for g in analyze(program).groups if first in g.producers)
    assert group.prunable() and "fold" in {b.kind for b in group.blocks}


class PatchMerging(nn.Module):
    """Swin's patch merging: (B, H, W, C) -> (B, H/2, W/2, 2, 2, C) -> flatten -> LayerNorm(4C) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm, self.reduction, self.out = nn.Linear(3, 4), nn.LayerNorm(16), nn.Linear(16, 5), \
            nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x)
        b, h, w, c = y.shape
        y = y.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.out(self.reduction(self.norm(y)))


class SwinQKV(nn.Module):
    """Swin's qkv split with the head dim inferred: reshape(B, N, 3, heads, -1), then attention."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(4, 24), nn.Linear(8, 3), 2

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_patch_merging_copies_the_channels_four_times() -> None:
    """flatten(3) of (..., 2, 2, C): the channels in four blocks, one mask for all four (export records the sizes)."""
    model = seeded(PatchMerging(), 0)
    _check(model, torch.randn(2, 4, 4, 3, dtype=torch.float64), {"fc": torch.tensor([1, 0, 1, 1]).bool()}, "export")


def test_qkv_split_with_inferred_head_dim_prunes_heads() -> None:
    model, x = seeded(SwinQKV(), 0), torch.randn(2, 5, 4, dtype=torch.float64)
    program = export(model, (x,))
    group = next(g for g in analyze(program).groups if "qkv" in g.producers)
    assert group.prunable() and group.size == 2  # one unit per head
    _check(model, x, {"qkv": torch.tensor([False, True])}, "export")


class GroupedQueryAttention(nn.Module):
    """Llama's attention written out: q/k/v heads, k and v repeated with ``repeat_kv``
    (``x[:, :, None].expand(...).reshape(...)``), SDPA or the eager ``softmax(q @ k^T) @ v``."""

    def __init__(self, heads: int, kv: int, eager: bool) -> None:
        super().__init__()
        self.heads, self.kv, self.dim, self.eager = heads, kv, 4, eager
        self.q, self.k, self.v = nn.Linear(6, heads * 4), nn.Linear(6, kv * 4), nn.Linear(6, kv * 4)
        self.o = nn.Linear(heads * 4, 3)

    def _repeat(self, x: Tensor) -> Tensor:
        b, kv, s, d = x.shape
        n_rep = self.heads // self.kv
        return x[:, :, None, :, :].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)

    def forward(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, -1, self.dim).transpose(1, 2)
        k = self._repeat(self.k(x).view(b, s, -1, self.dim).transpose(1, 2))
        v = self._repeat(self.v(x).view(b, s, -1, self.dim).transpose(1, 2))
        if self.eager:
            out = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(2, 3)) * 0.5, dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


@settings(max_examples=examples(6))
@given(kv=st.sampled_from([2, 3]), n_rep=st.sampled_from([1, 2]), eager=st.booleans(), data=st.data())
def test_grouped_query_attention_prunes_whole_kv_groups(kv: int, n_rep: int, eager: bool, data: st.DataObject) -> None:
    """repeat_kv ties n_rep query heads to each key/value head: one group of kv units, removed whole
    with their query heads, exact (the reshape and expand sizes follow)."""
    model = seeded(GroupedQueryAttention(kv * n_rep, kv, eager), 0)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    groups = [g for g in analyze(export(model, (x,))).groups if "k" in g.producers]
    assert len(groups) == 1 and groups[0].prunable() and groups[0].size == kv
    assert {"q", "k", "v", "o"} <= set(groups[0].members)
    keep = data.draw(st.lists(st.booleans(), min_size=kv, max_size=kv).filter(any))
    _check(model, x, {groups[0].name: torch.tensor(keep)}, "export")


class TiedLM(nn.Module):
    """A token embedding whose weight the output projection reuses (tied embeddings), a block between."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mid = nn.Embedding(11, 6), nn.Linear(6, 6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        return self.head(x + torch.relu(self.mid(x)))


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_tied_embeddings_prune_the_hidden_width(front: str) -> None:
    """Both users of the tied weight slice its dim 1 by the hidden group; its rows (the vocabulary) stay."""
    model = seeded(TiedLM(), 0)
    ids = torch.tensor([[1, 4, 7, 10]])
    source = trace(model) if front == "fx" else export(model, (ids,))
    groups = analyze(source).groups
    hidden = next(g for g in groups if "embed" in g.producers)
    assert hidden.prunable() and "head" in hidden.members
    assert not next(g for g in groups if g.producers == ("head",)).prunable(Options(prune_outputs=True))
    plan = Plan(analyze(source), {hidden.name: torch.tensor([1, 0, 1, 1, 0, 1]).bool()}, Options())
    pruned = apply_patterns(plan)
    got = (pruned.module() if isinstance(pruned, ExportedProgram) else pruned)(ids)
    torch.testing.assert_close(got, zero_slices(model, plan.params())(ids), rtol=1e-9, atol=1e-9)
