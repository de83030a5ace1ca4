"""Exactness of non-chain structures: attention heads, residual adds, concat, depthwise convs, SE gates."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import random_masks, randomised, zero_slices
from torch import Tensor, nn

from strategies import examples
from fprune import analyze, apply_patterns, load_plan, score_l1, topk_mask, trace
from fprune.errors import UnprunableError
from fprune.plan import Plan


# --------------------------------------------------------------------------------------
# Models


class Attention(nn.Module):
    """timm-style multi-head self-attention: fused qkv Linear, reshape into heads, proj."""

    def __init__(self, dim: int, heads: int, variant: str) -> None:
        super().__init__()
        self.heads, self.head_dim, self.variant = heads, dim // heads, variant
        if variant == "separate":
            self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.scale = self.head_dim**-0.5

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        if self.variant == "separate":
            q, k, v = (
                lin(x).view(b, n, self.heads, self.head_dim).transpose(1, 2) for lin in (self.q, self.k, self.v)
            )
        else:
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0) if self.variant != "index" else (qkv[0], qkv[1], qkv[2])
        if self.variant == "fused":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class AttentionNet(nn.Module):
    """Linear embedding -> attention -> MLP -> head."""

    def __init__(self, heads: int, head_dim: int, variant: str) -> None:
        super().__init__()
        dim = heads * head_dim
        self.embed = nn.Linear(5, dim)
        self.attn = Attention(dim, heads, variant)
        self.fc1, self.fc2 = nn.Linear(dim, 7), nn.Linear(7, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.attn(self.embed(x)))))


class ResidualConcat(nn.Module):
    """Stem, concat of two branches, a 1x1 mix, a depthwise conv with BN, a residual add, an SE gate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(2, c, 3, padding=1), nn.BatchNorm2d(c)
        self.branch = nn.Conv2d(c, c + 1, 3, padding=1)
        self.mix = nn.Conv2d(2 * c + 1, c, 1)
        self.dw, self.bn1 = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)
        self.se_reduce, self.se_expand = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        self.head = nn.Linear(c * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn0(self.stem(x)))
        h = self.mix(torch.cat([a, self.branch(a)], dim=1))
        h = h + self.pw(F.relu(self.bn1(self.dw(h))))
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        h = F.adaptive_avg_pool2d(h * s, 2)
        return self.head(h.view(h.size(0), -1))


class BatchNormAct2d(nn.BatchNorm2d):
    """timm-style: a BatchNorm2d subclass fx traces through, leaving F.batch_norm on get_attr tensors."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return F.relu(x)


class MobileBlock(nn.Module):
    """Conv -> BNAct -> depthwise -> BNAct -> SE -> 1x1 conv, with a residual back onto the stem."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.stem, self.bn1 = nn.Conv2d(2, c, 3, padding=1), BatchNormAct2d(c)
        self.dw, self.bn2 = nn.Conv2d(c, c, 3, padding=1, groups=c), BatchNormAct2d(c)
        self.se_reduce, self.se_expand = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        self.project = nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = self.bn1(self.stem(x))
        h = self.bn2(self.dw(a))
        h = h * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        h = self.project(h) + a
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


class LeakyStats(MobileBlock):
    """Reads a BatchNorm weight outside batch_norm: that group must be refused."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.bn1.weight.sum()


def _check_exact(model: nn.Module, masks: dict[str, Tensor], x: Tensor) -> nn.Module:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = apply_patterns(model, masks)
    analysis = analyze(trace(model))
    plan = Plan(analysis, {analysis.group(k).name: v for k, v in masks.items()})
    expected = zero_slices(model, plan.params())(x)
    torch.testing.assert_close(pruned(x), expected, rtol=1e-9, atol=1e-9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return pruned


# --------------------------------------------------------------------------------------
# Tests


@settings(max_examples=examples(20))
@given(
    heads=st.integers(2, 4),  # with one head, view(b, n, 1, hd) reads as a plain reshape: refused
    head_dim=st.integers(1, 3),
    variant=st.sampled_from(["unbind", "index", "fused", "separate"]),
    seed=st.integers(0, 2**16),
)
def test_attention_heads_exact(heads: int, head_dim: int, variant: str, seed: int) -> None:
    """Pruning heads (and the embedding and MLP) equals the original with those slices zeroed."""
    model = randomised(AttentionNet(heads, head_dim, variant), seed)
    analysis = analyze(trace(model))
    prunable = {g.name: g.size for g in analysis.groups if g.prunable()}
    head_group = "attn.q" if variant == "separate" else "attn.qkv"
    assert prunable[head_group] == heads
    masks = random_masks(prunable, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randn(2, 4, 5, dtype=torch.float64))
    kept = int(masks[head_group].sum())
    proj = pruned.get_submodule("attn.proj")
    assert proj.in_features == kept * head_dim


def test_attention_head_count_is_rewritten_in_the_graph() -> None:
    """The reshape into heads reads the kept head count; the merge back infers its size."""
    model = randomised(AttentionNet(4, 2, "unbind"), 0)
    pruned = apply_patterns(model, {"attn.qkv": torch.tensor([True, False, True, False])})
    assert "reshape(getitem, getitem_1, 3, 2, 2)" in pruned.code
    assert pruned.get_submodule("attn.qkv").out_features == 3 * 2 * 2


def test_attention_heads_scored_and_replayed() -> None:
    """score_l1 gives one score per head; the plan's JSON replays on a fresh copy."""
    model = randomised(AttentionNet(4, 3, "fused"), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scored = score_l1(model)
        plan = topk_mask(0.5)(scored)
    assert scored.scores["attn.qkv"].shape == (4,)
    fresh = randomised(AttentionNet(4, 3, "fused"), 1)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(apply_patterns(load_plan(plan.to_json(), fresh))(x), apply_patterns(plan)(x))


def test_softmax_over_heads_is_refused() -> None:
    """A softmax across the head dim makes the head group unprunable, naming the node."""

    class Bad(AttentionNet):
        def forward(self, x: Tensor) -> Tensor:
            b, n, c = x.shape
            qkv = self.attn.qkv(self.embed(x)).reshape(b, n, 3, self.attn.heads, self.attn.head_dim)
            return qkv.softmax(dim=3).sum()

    model = randomised(Bad(2, 2, "unbind"), 0)
    with pytest.raises(UnprunableError, match="softmax"):
        apply_patterns(model, {"attn.qkv": torch.tensor([True, False])})


@settings(max_examples=examples(15))
@given(c=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_residual_concat_depthwise_se_exact(c: int, seed: int) -> None:
    """Concat, residual add, depthwise conv + BN and an SE gate prune exactly and consistently."""
    model = randomised(ResidualConcat(c), seed)
    analysis = analyze(trace(model))
    prunable = {g.name: g.size for g in analysis.groups if g.prunable()}
    assert set(prunable) == {"stem", "branch", "mix", "se_reduce"}
    assert analysis.group("mix").producers == ("mix", "pw", "se_expand")
    masks = random_masks(prunable, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randn(2, 2, 6, 6, dtype=torch.float64))
    kept = int(masks["mix"].sum())
    assert pruned.get_submodule("dw").groups == kept
    assert pruned.get_submodule("bn1").num_features == kept
    assert pruned.get_submodule("head").in_features == 4 * kept


@settings(max_examples=examples(15))
@given(c=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_functional_batch_norm_se_residual_exact(c: int, seed: int) -> None:
    """A traced-through BatchNorm subclass, depthwise conv, SE gate and residual prune exactly."""
    model = randomised(MobileBlock(c), seed)
    analysis = analyze(trace(model))
    prunable = {g.name: g.size for g in analysis.groups if g.prunable()}
    assert set(prunable) == {"stem", "se_reduce"}
    assert analysis.group("stem").producers == ("stem", "se_expand", "project")
    masks = random_masks(prunable, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randn(2, 2, 5, 5, dtype=torch.float64))
    kept = int(masks["stem"].sum())
    assert pruned.get_submodule("bn1").running_var.shape == (kept,)


def test_batch_norm_tensor_read_elsewhere_is_refused() -> None:
    """A BatchNorm tensor also read by another op is never sliced: its group is refused, naming the op."""
    model = randomised(LeakyStats(3), 0)
    with pytest.raises(UnprunableError, match="bn1.weight"):
        apply_patterns(model, {"stem": torch.tensor([True, False, True])})


def test_attention_mask_argument_defaulting_to_none() -> None:
    """SDPA fed a model input that defaults to None (timm's attn_mask) still prunes heads exactly."""

    class MaskArg(AttentionNet):
        def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
            b, n, _ = x.shape
            h = self.embed(x)
            attn = self.attn
            q, k, v = attn.qkv(h).reshape(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            return self.fc2(F.gelu(self.fc1(attn.proj(out.transpose(1, 2).reshape(b, n, -1)))))

    model = randomised(MaskArg(3, 2, "fused"), 0)
    _check_exact(model, {"attn.qkv": torch.tensor([True, False, True])}, torch.randn(2, 4, 5, dtype=torch.float64))


class TokenStream(nn.Module):
    """Linear embedding, a class token concatenated, a position embedding and a layer scale, a residual MLP."""

    def __init__(self, leak: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.randn(1, 6, 4))
        self.gamma = nn.Parameter(torch.randn(4))
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.leak = leak

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed
        h = h + self.gamma * self.fc(h) * 0.5
        out = self.head(h[:, 0])
        return out + self.pos_embed.sum() if self.leak else out


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**16))
def test_model_tensors_on_the_channels_are_sliced(seed: int) -> None:
    """Class token, position embedding and layer scale (the model's own tensors) are sliced with the stream."""
    model = randomised(TokenStream(), seed)
    group = analyze(trace(model)).group("embed")
    assert group.producers == ("embed", "fc") and group.prunable()
    keep = random_masks({"embed": 4}, seed, keep=0.6)
    pruned = _check_exact(model, keep, torch.randn(2, 5, 3, dtype=torch.float64))
    kept = int(keep["embed"].sum())
    assert pruned.pos_embed.shape == (1, 6, kept) and pruned.cls_token.shape == (1, 1, kept)
    assert pruned.gamma.shape == (kept,)


def test_model_tensor_read_elsewhere_is_refused() -> None:
    """A position embedding also read by another op cannot be sliced: the stream is refused, naming it."""
    model = randomised(TokenStream(leak=True), 0)
    with pytest.raises(UnprunableError, match="pos_embed"):
        apply_patterns(model, {"embed": torch.tensor([True, False, True, True])})


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**16), stride=st.integers(1, 2), padding=st.integers(0, 1))
def test_conv_transpose_producer_and_consumer(seed: int, stride: int, padding: int) -> None:
    """ConvTranspose2d's channels are its weight's dim 1 (rows: dim 0 are its inputs); both sides prune exactly."""
    model = randomised(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 6, 3, stride, padding),
                                     nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)), seed)
    masks = random_masks({"0": 4, "2": 6}, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randn(1, 2, 7, 7, dtype=torch.float64))
    assert pruned.get_submodule("2").weight.shape[:2] == (int(masks["0"].sum()), int(masks["2"].sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert score_l1(model).scores["2"].shape == (6,)  # one score per output channel


def test_embedding_producer() -> None:
    """An Embedding's channels are its weight's columns; with max_norm they are inexact."""
    model = randomised(nn.Sequential(nn.Embedding(10, 5), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)), 0)
    keep = torch.tensor([True, False, True, True, False])
    pruned = _check_exact(model, {"0": keep}, torch.randint(0, 10, (4, 3)))
    assert pruned.get_submodule("0").weight.shape == (10, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert score_l1(model).scores["0"].shape == (5,)
    capped = nn.Sequential(nn.Embedding(10, 5, max_norm=1.0), nn.Linear(5, 2))
    with pytest.raises(UnprunableError, match="max_norm"):
        apply_patterns(capped, {"0": keep})


def test_grouped_conv_transpose_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ConvTranspose2d(4, 4, 3, groups=2), nn.Conv2d(4, 1, 1))
    with pytest.raises(UnprunableError, match="grouped transposed convolution"):
        apply_patterns(model, {"0": torch.tensor([True, False, True, True])})


class GatedMLP(nn.Module):
    """fc1 -> two halves along the channels (chunk, split(size) or split([sizes])) -> silu(a) * b -> fc2."""

    def __init__(self, how: str, hidden: int = 3) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 2 * hidden), nn.Linear(hidden, 4), nn.Linear(4, 2)
        self.how, self.hidden = how, hidden

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.how == "chunk":
            a, b = h.chunk(2, dim=-1)
        elif self.how == "split":
            a, b = torch.split(h, self.hidden, -1)
        elif self.how == "sections":
            a, b = h.split([self.hidden, self.hidden], -1)
        else:  # along the tokens: both halves keep every channel
            a, b = h.chunk(2, dim=-2)
            a, b = a[..., : self.hidden], b[..., : self.hidden]
        return self.head(x + self.fc2(F.silu(a) * b))


@settings(max_examples=examples(10))
@given(how=st.sampled_from(["chunk", "split", "sections"]), hidden=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_channel_split_prunes_both_halves_alike(how: str, hidden: int, seed: int) -> None:
    """Splitting a producer's channels into equal pieces makes a unit remove its channel from every piece."""
    model = randomised(GatedMLP(how, hidden), seed)
    group = analyze(trace(model)).group("fc1")
    assert group.size == hidden and group.prunable()
    masks = random_masks({"fc1": hidden}, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randn(2, 4, 4, dtype=torch.float64))
    kept = int(masks["fc1"].sum())
    assert pruned.get_submodule("fc1").out_features == 2 * kept and pruned.get_submodule("fc2").in_features == kept


def test_split_along_other_dims_and_slicing_channels() -> None:
    """chunk along the tokens passes the channels on; slicing the channels themselves is refused."""
    model = randomised(GatedMLP("tokens"), 0)
    with pytest.raises(UnprunableError, match="getitem"):
        apply_patterns(model, {"fc1": torch.tensor([True, False, True, True, False, True])})


class Recurrent(nn.Module):
    """Embedding -> GRU or RNN (layers, directions) -> Linear on the output, plus the final state h_n."""

    def __init__(self, kind: type[nn.RNNBase], layers: int, bidirectional: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(9, 4)
        self.rnn = kind(4, 5, layers, bidirectional=bidirectional)
        self.head = nn.Linear(5 * (2 if bidirectional else 1), 3)
        self.state_head = nn.Linear(5, 3)

    def forward(self, tokens: Tensor) -> Tensor:
        out, h_n = self.rnn(self.embed(tokens))
        return self.head(out).sum(0) + self.state_head(h_n).sum(0)


@settings(max_examples=examples(10), deadline=None)
@given(kind=st.sampled_from([nn.GRU, nn.RNN]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       seed=st.integers(0, 2**16))
def test_gru_and_rnn_hidden_units(kind: type[nn.RNNBase], layers: int, bidirectional: bool, seed: int) -> None:
    """A GRU's (3 gates) or RNN's hidden unit goes from every gate, layer and direction; h_n follows."""
    model = randomised(Recurrent(kind, layers, bidirectional), seed)
    masks = random_masks({"embed": 4, "rnn": 5}, seed, keep=0.6)
    pruned = _check_exact(model, masks, torch.randint(0, 9, (6, 2)))
    kept = int(masks["rnn"].sum())
    gates = 3 if kind is nn.GRU else 1
    assert pruned.get_submodule("rnn").weight_hh_l0.shape == (gates * kept, kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert score_l1(model).scores["rnn"].shape == (5,)


def test_model_tensor_expanded_and_read_twice_is_refused() -> None:
    """An expanded class token also read by another op is not sliced (that op would see it shrink)."""

    class Twice(TokenStream):
        def forward(self, x: Tensor) -> Tensor:
            h = self.embed(x)
            cls = self.cls_token.expand(h.shape[0], -1, -1)
            h = torch.cat([cls, h], dim=1) + self.pos_embed
            return self.head(h[:, 0]) + cls.sum()

    model = randomised(Twice(), 0)
    with pytest.raises(UnprunableError, match="cat"):
        apply_patterns(model, {"embed": torch.tensor([True, False, True, True])})
