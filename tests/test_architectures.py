"""Real architectures, written by hand in models.py: expected groups, exact pruning, plan replay.

Every model is float64, seeded and in eval mode.  "Exact" means the pruned model computes the
original with every slice the plan's portable form removes set to zero (``zero_slices``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from model_strategies import BlockCase, GroupedBottleneck, MHABlock, block_nets, zero_slices
from models import (
    LSTMLM,
    DenseNetish,
    GroupNormNet,
    MHAEncoderLayer,
    MobileNetV2Block,
    MobileNetV3Block,
    ResNetBasic,
    ResNetBottleneck,
    ResNeXtBlock,
    ViTBlockNet,
    seeded,
)
from toolz import pipe
from torch import Tensor, nn

from fprune import Options, analyze, apply_patterns, load_plan, score_l1, topk_mask, trace
from fprune.modules import PrunedLayerNorm
from fprune.plan import Plan
from strategies import examples



@dataclass(frozen=True)
class Arch:
    """An architecture under test: how to build it, an input, and the groups an expert expects prunable."""

    build: Callable[[], nn.Module]  # an unseeded, float32 model
    make_input: Callable[[torch.Generator], Tensor]  # a float64 input (or int64 tokens)
    prunable: frozenset[str]  # group names prunable under the default Options()
    output: str  # the group reaching the model output: prunable only with prune_outputs=True
    marks: tuple[Any, ...] = field(default=())  # pytest marks for every test of this architecture


def _image(g: torch.Generator) -> Tensor:
    return torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)


def _tokens(g: torch.Generator) -> Tensor:
    return torch.randn(2, 4, 5, generator=g, dtype=torch.float64)


def _words(g: torch.Generator) -> Tensor:
    return torch.randint(0, 11, (5, 2), generator=g)


# Expected prunable groups (group name = its first producer in graph order), and the output group
# (the last Linear / conv: its channels reach the model output, so it waits for prune_outputs=True).
ARCHITECTURES: dict[str, Arch] = {
    # The stem and layer1.conv2 are coupled by layer1's identity add; in layer2 the downsample (called
    # first, so it names the group) and conv2 are coupled by the add; each block's conv1 is on its own.
    "ResNetBasic": Arch(ResNetBasic, _image, frozenset({"conv1", "layer1.conv1", "layer2.conv1", "layer2.downsample.0"}), "fc"),
    # The stem feeds layer1.0's conv1 and downsample only (no add): on its own.  The residual stream
    # (downsample, both conv3) is one group; every 1x1 reduce and 3x3 conv is its own group.
    "ResNetBottleneck": Arch(ResNetBottleneck, _image, frozenset({
        "conv1", "layer1.0.downsample.0", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
    }), "fc"),
    # Stream 8 (stem + blocks.0 project, coupled by the residual); each expand conv with its depthwise;
    # stream 12 (blocks.1 project + blocks.2 project, whose depthwise runs on the stream: t=1); last conv.
    "MobileNetV2Block": Arch(MobileNetV2Block, _image, frozenset({
        "stem.0", "blocks.0.conv.0", "blocks.1.conv.0", "blocks.1.conv.6", "last.0",
    }), "classifier.1"),
    # As V2, plus: the SE expand conv (se.fc2) gates the depthwise output, so it joins the expand group;
    # each SE reduce conv (se.fc1) is its own group; the classifier's hidden Linear is prunable.
    "MobileNetV3Block": Arch(MobileNetV3Block, _image, frozenset({
        "stem.0", "blocks.0.expand.0", "blocks.0.se.fc1", "blocks.1.expand.0", "blocks.1.se.fc1",
        "blocks.1.project.0", "last.0", "classifier.0",
    }), "classifier.3"),
    # Concatenation keeps each producer's channels apart: the stem and every layer's growth channels are
    # separate groups, read (BN-sliced) by every later layer and the transition; the transition conv too.
    "DenseNetish": Arch(DenseNetish, _image, frozenset({
        "conv0", "layers.0.conv", "layers.1.conv", "layers.2.conv", "transition.2",
    }), "classifier"),
    # The residual stream (patch_embed, cls/pos tokens, proj, fc2) is one group, prunable exactly: its
    # LayerNorms compute over their original width.  Attention heads (qkv, one unit per head) and MLP
    # hidden units are prunable too.
    "ViTBlockNet": Arch(ViTBlockNet, _image, frozenset({
        "patch_embed", "blocks.0.attn.qkv", "blocks.0.fc1", "blocks.1.attn.qkv", "blocks.1.fc1",
    }), "head"),
    # The stream (embed, attn's out_proj, fc2) under its LayerNorms, heads and MLP hidden units.
    "MHAEncoderLayer": Arch(MHAEncoderLayer, _tokens, frozenset({"embed", "attn", "fc1"}), "head"),
    # The stream (stem + conv3) is coupled by the add; the grouped 3x3 couples conv1's rows and conv2's
    # rows in blocks of 2 (one unit per conv group); conv1, called first, names that group.
    "ResNeXtBlock": Arch(ResNeXtBlock, _image, frozenset({"conv1", "block.conv1"}), "fc"),
    # conv1's channels are pruned by whole GroupNorm groups; conv2 reaches the output.
    "GroupNormNet": Arch(GroupNormNet, _image, frozenset({"conv1"}), "conv2"),
    # No LayerNorm: the embedding's channels (the LSTM's input) and the LSTM's hidden units (every gate and
    # layer) are prunable; the decoder is the output.
    "LSTMLM": Arch(lambda: LSTMLM(norm=False), _words, frozenset({"embed", "lstm"}), "decoder"),
}


ALL = [pytest.param(name, id=name, marks=arch.marks) for name, arch in ARCHITECTURES.items()]


def _build(name: str, seed: int) -> nn.Module:
    return seeded(ARCHITECTURES[name].build(), seed)


def _input(name: str, seed: int = 7) -> Tensor:
    return ARCHITECTURES[name].make_input(torch.Generator().manual_seed(seed))


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls fn, ignoring fprune's warnings about the groups it leaves alone (the output layer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _prune(model: nn.Module) -> tuple[Plan, nn.Module]:
    plan = _quiet(pipe, model, score_l1, topk_mask(0.5))
    return plan, _quiet(apply_patterns, plan)


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _storages(model: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in _tensors(model).values() if t.numel()}


def _close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------
# Groups


@pytest.mark.parametrize("name", ALL)
def test_expected_prunable_groups(name: str) -> None:
    """The groups prunable under default Options are the ones an expert expects."""
    analysis = _quiet(analyze, trace(_build(name, 0)))
    prunable = {g.name for g in analysis.groups if g.prunable()}
    assert prunable == ARCHITECTURES[name].prunable, {g.name: g.why_not() for g in analysis.groups}


@pytest.mark.parametrize("name", ALL)
def test_output_group_needs_prune_outputs(name: str) -> None:
    """The group reaching the model output is blocked only by that, and prune_outputs=True allows it."""
    group = _quiet(analyze, trace(_build(name, 0))).group(ARCHITECTURES[name].output)
    assert {b.kind for b in group.blocks} == {"output"}
    assert not group.prunable() and group.prunable(Options(prune_outputs=True))


def test_lstm_lm_with_layer_norm_is_exact() -> None:
    """LayerNorm over the LSTM's output: prunable by default, and the pruned norm is a PrunedLayerNorm."""
    model, x = seeded(LSTMLM(), 0).double().eval(), _input("LSTMLM")
    group = _quiet(analyze, trace(model)).group("lstm")
    assert group.prunable() and {b.kind for b in group.blocks} == {"fold"}
    plan = _quiet(lambda: topk_mask(0.5)(score_l1(model)))
    small = apply_patterns(plan)
    assert type(small.norm) is PrunedLayerNorm and small.norm.full_width == 6
    _close(small(x), zero_slices(model, plan.params())(x))


def test_group_structure_of_coupled_producers() -> None:
    """Residual adds, SE gates and stride-1 inverted residuals couple exactly the expected producers."""
    resnet = _quiet(analyze, trace(_build("ResNetBottleneck", 0)))
    assert set(resnet.group("layer1.1.conv3").producers) == {"layer1.0.downsample.0", "layer1.0.conv3", "layer1.1.conv3"}
    v3 = _quiet(analyze, trace(_build("MobileNetV3Block", 0)))
    assert set(v3.group("blocks.0.se.fc2").producers) == {"blocks.0.expand.0", "blocks.0.se.fc2"}
    assert set(v3.group("blocks.0.project.0").producers) == {"stem.0", "blocks.0.project.0"}
    v2 = _quiet(analyze, trace(_build("MobileNetV2Block", 0)))
    assert set(v2.group("blocks.2.conv.3").producers) == {"blocks.1.conv.6", "blocks.2.conv.3"}
    assert "blocks.2.conv.0" in v2.group("blocks.2.conv.3").members  # the t=1 depthwise runs on the stream
    vit = _quiet(analyze, trace(_build("ViTBlockNet", 0)))
    assert vit.group("blocks.0.attn.qkv").size == 2  # one unit per head


def test_vit_residual_stream_is_one_exact_group() -> None:
    """ViT's residual stream (patch embed, cls/pos tokens, proj, fc2) is one group, under exact LayerNorms."""
    analysis = _quiet(analyze, trace(_build("ViTBlockNet", 0)))
    group = analysis.group("patch_embed")
    assert set(group.producers) >= {"patch_embed", "blocks.0.attn.proj", "blocks.0.fc2", "blocks.1.attn.proj", "blocks.1.fc2"}
    assert {b.kind for b in group.blocks} == {"fold"}  # fold: biases are not folded through a norm
    assert group.prunable()
    assert "" in group.members  # the root module: cls_token and pos_embed are its own tensors
    assert {site.module for site in analysis.norms if site.kind == "layer"} >= {"blocks.0.norm1", "blocks.1.norm2"}


# --------------------------------------------------------------------------------------
# Pruning


@pytest.mark.parametrize("name", ALL)
def test_pruned_equals_zeroed_original(name: str) -> None:
    """pipe(model, score_l1, topk_mask(0.5)) then apply_patterns: smaller, exact, input untouched, no sharing."""
    model, x = _build(name, 0), _input(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan, pruned = _prune(model)
    assert set(plan.masks) == ARCHITECTURES[name].prunable
    params = plan.params()
    original, smaller = _tensors(model), _tensors(pruned)
    assert sum(t.numel() for t in pruned.parameters()) < sum(t.numel() for t in model.parameters())
    for fqn, tensor in smaller.items():  # every shape is the one the plan's portable form says
        shape = list(original[fqn].shape)
        for entry in params.get(fqn, []):
            shape[entry["dim"]] = len(entry["keep"])
        assert list(tensor.shape) == shape, fqn
    with torch.no_grad():
        _close(pruned(x), zero_slices(model, params)(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not _storages(model) & _storages(pruned)


@pytest.mark.parametrize("name", ALL)
def test_plan_json_replays_on_a_fresh_model(name: str) -> None:
    """load_plan(plan.to_json(), fresh) gives the same shapes, and the same outputs given the same weights."""
    model, x = _build(name, 0), _input(name)
    plan, pruned = _prune(model)
    text = plan.to_json()
    fresh = _build(name, 1)
    replayed = _quiet(apply_patterns, _quiet(load_plan, text, fresh))
    shapes = {k: v.shape for k, v in _tensors(pruned).items()}
    assert {k: v.shape for k, v in _tensors(replayed).items()} == shapes
    same = _build(name, 2)
    same.load_state_dict(model.state_dict())
    replayed_same = _quiet(apply_patterns, _quiet(load_plan, text, same))
    with torch.no_grad():
        assert torch.equal(replayed_same(x), pruned(x))
    assert _quiet(load_plan, text, fresh).to_json() == text


def test_train_mode_batch_norm_statistics_carried_over() -> None:
    """Kept channels keep their BatchNorm running statistics, and train-mode updates match the zeroed original."""
    model, x = _build("ResNetBasic", 0), _input("ResNetBasic")
    with torch.no_grad():  # move the statistics away from their seeded values first
        model.train()(x)
    model.eval()
    plan, pruned = _prune(model)
    params = plan.params()
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(f"{n}.running_mean" in params for n in norms)  # every BN touches a pruned group
    smaller = _tensors(pruned)
    for n in norms:
        for stat in ("running_mean", "running_var"):
            keep = params[f"{n}.{stat}"][0]["keep"]
            assert torch.equal(smaller[f"{n}.{stat}"], _tensors(model)[f"{n}.{stat}"][keep])
    oracle = zero_slices(model, params).train()
    pruned.train()
    with torch.no_grad():
        _close(pruned(x), oracle(x))
    oracle_tensors, smaller = _tensors(oracle), _tensors(pruned)
    for n in norms:
        keep = params[f"{n}.running_mean"][0]["keep"]
        for stat in ("running_mean", "running_var"):
            _close(smaller[f"{n}.{stat}"], oracle_tensors[f"{n}.{stat}"][keep])
        assert torch.equal(smaller[f"{n}.num_batches_tracked"], oracle_tensors[f"{n}.num_batches_tracked"])


# --------------------------------------------------------------------------------------
# Pending features: what the pruned modules look like


def test_resnext_prunes_whole_conv_groups() -> None:
    """Removing conv-group j of the grouped 3x3 removes conv1's rows and conv2's rows of block j; groups shrinks."""
    model, x = _build("ResNeXtBlock", 0), _input("ResNeXtBlock")
    analysis = _quiet(analyze, trace(model))
    group = analysis.group("block.conv1")
    assert group.size == 4 and set(group.producers) == {"block.conv1", "block.conv2"}
    keep = torch.tensor([True, False, True, True])
    pruned = _quiet(apply_patterns, model, {"block.conv1": keep})
    conv2 = pruned.get_submodule("block.conv2")
    assert (conv2.groups, conv2.in_channels, conv2.out_channels) == (3, 6, 6)
    plan = Plan(analysis, {"block.conv1": keep})
    with torch.no_grad():
        _close(pruned(x), zero_slices(model, plan.params())(x))


def test_group_norm_prunes_whole_norm_groups() -> None:
    """Removing a GroupNorm group removes its channels from conv1, the norm and conv2; num_groups shrinks."""
    model, x = _build("GroupNormNet", 0), _input("GroupNormNet")
    analysis = _quiet(analyze, trace(model))
    assert analysis.group("conv1").size == 4
    keep = torch.tensor([False, True, True, False])
    pruned = _quiet(apply_patterns, model, {"conv1": keep})
    norm = pruned.get_submodule("norm")
    assert (norm.num_groups, norm.num_channels) == (2, 4)
    plan = Plan(analysis, {"conv1": keep})
    with torch.no_grad():
        _close(pruned(x), zero_slices(model, plan.params())(x))


def test_multihead_attention_prunes_heads() -> None:
    """Removing a head removes its q, k, v rows of in_proj and its out_proj columns; num_heads shrinks."""
    model, x = _build("MHAEncoderLayer", 0), _input("MHAEncoderLayer")
    analysis = _quiet(analyze, trace(model))
    assert analysis.group("attn").size == 2
    pruned = _quiet(apply_patterns, model, {"attn": torch.tensor([False, True])})
    attn = pruned.get_submodule("attn")
    assert isinstance(attn, nn.MultiheadAttention) and attn.num_heads == 1
    assert attn.in_proj_weight.shape == (3 * 4, 8) and attn.out_proj.weight.shape == (8, 4)
    plan = Plan(analysis, {"attn": torch.tensor([False, True])})
    with torch.no_grad():
        _close(pruned(x), zero_slices(model, plan.params())(x))


# --------------------------------------------------------------------------------------
# Random networks of blocks


def _check_block_case(case: BlockCase) -> None:
    model = case.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = _quiet(apply_patterns, model, case.masks)
    plan = Plan(case.analysis, case.masks)
    with torch.no_grad():
        _close(pruned(case.x), zero_slices(model, plan.params())(case.x))
    for name, mask in case.masks.items():  # heads and channels shrink in proportion
        rows, full = (_rows(m.get_submodule(name)) for m in (pruned, model))
        assert rows * mask.numel() == full * int(mask.sum()), name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _rows(module: nn.Module) -> int:
    weight = module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else module.weight
    return int(weight.shape[0])


@settings(max_examples=examples(25))
@given(case=block_nets())
def test_random_block_networks_exact(case: BlockCase) -> None:
    """Random residual/concat/depthwise/SE/attention networks with random masks prune exactly."""
    _check_block_case(case)


@settings(max_examples=examples(15))
@given(case=block_nets(pending=True))
def test_random_block_networks_with_grouped_conv_group_norm_mha_exact(case: BlockCase) -> None:
    """Adding ResNeXt grouped convs, GroupNorm and nn.MultiheadAttention blocks: still exact, and their units prunable."""
    for name, module in case.model.named_modules():
        if isinstance(module, GroupedBottleneck):  # conv1 -> grouped conv2: one unit per conv group
            group = case.analysis.group(f"{name}.conv1")
            assert group.prunable() and group.size == module.conv2.groups, group.why_not()
        elif isinstance(module, MHABlock):
            group = case.analysis.group(f"{name}.attn")
            assert group.prunable() and group.size == module.attn.num_heads, group.why_not()
    _check_block_case(case)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_pruning_twice_gives_the_same_plan_and_outputs(name: str) -> None:
    """Tracing leaves no state behind in the model: a second prune is the first one again."""
    model = _build(name, 0).double()
    x = _input(name)
    x = x.double() if x.is_floating_point() else x
    first_plan, first = _prune(model)
    second_plan, second = _prune(model)
    assert first_plan.to_json() == second_plan.to_json()
    torch.testing.assert_close(second(x), first(x), rtol=0, atol=0)
