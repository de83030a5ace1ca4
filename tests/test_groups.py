"""Tests for fprune.groups: channel groups, members, blocks, the rule index, purity."""

from __future__ import annotations

import operator
from types import MappingProxyType

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import models as zoo
from strategies import examples
from fprune.groups import DEFAULT_OPTIONS, Block, ChannelGroup, Options, analyze, describe
from fprune.trace import trace
from model_strategies import FAMILIES, Case, chains


def groups_of(model: nn.Module) -> dict[str, ChannelGroup]:
    """The model's channel groups by name."""
    return {g.name: g for g in analyze(trace(model)).groups}


def kinds(group: ChannelGroup) -> set[str]:
    """The kinds of a group's blocks."""
    return {b.kind for b in group.blocks}


# --------------------------------------------------------------------------- random chains


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=examples(20))
@given(data=st.data())
def test_chain_groups(family: str, data: st.DataObject) -> None:
    """In a chain every producer is its own group, read by the next producer; only the last reaches the output."""
    case: Case = data.draw(chains(family), label="case")
    groups = groups_of(case.model)
    assert list(groups) == case.producers
    for producer, consumer in zip(case.producers, case.producers[1:]):
        group = groups[producer]
        assert group.producers == (producer,)
        assert group.members[0] == producer and group.members[-1] == consumer
        assert "output" not in kinds(group) and "unknown" not in kinds(group), group.blocks
        module = case.model.get_submodule(producer)
        assert group.size == (module.hidden_size if isinstance(module, nn.LSTM) else module.weight.shape[0])
    last = groups[case.producers[-1]]
    assert kinds(last) == {"output"} and last.members == (case.producers[-1],)
    assert not last.prunable() and last.prunable(Options(prune_outputs=True))


@settings(max_examples=examples(15))
@given(chains())
def test_analyze_is_pure_and_deterministic(case: Case) -> None:
    """analyze leaves the GraphModule unchanged and gives equal results on equal input."""
    gm = trace(case.model)
    code, state = gm.code, {k: v.clone() for k, v in gm.state_dict().items()}
    first, second = analyze(gm), analyze(gm)
    assert first.groups == second.groups and dict(first.roles) == dict(second.roles)
    assert gm.code == code
    assert all(torch.equal(v, gm.state_dict()[k]) for k, v in state.items())
    assert analyze(trace(case.model)).groups == first.groups  # a fresh trace too


# --------------------------------------------------------------------------- the rule index


def test_rule_index_covers_every_reference_activation() -> None:
    """Each of the reference's 21 module and 21 functional activations has a rule in the index."""
    from fprune.groups import _INDEX

    for module_type in zoo.MODULE_ACTIVATIONS:
        assert module_type in _INDEX.modules, module_type
    for function in zoo.FUNCTIONAL_ACTIVATIONS:
        # F.sigmoid / F.tanh trace as the methods x.sigmoid() / x.tanh()
        assert function in _INDEX.functions or function.__name__ in _INDEX.methods, function


def test_rule_index_is_immutable() -> None:
    """The rule index is built once and cannot be changed (no module-level mutable state)."""
    from fprune.groups import _INDEX

    assert all(isinstance(m, MappingProxyType) for m in (_INDEX.modules, _INDEX.functions, _INDEX.methods))
    with pytest.raises(TypeError):
        _INDEX.modules[nn.Softmax] = None  # type: ignore[index]


# --------------------------------------------------------------------------- structures


def test_residual_add_couples_producers() -> None:
    """A residual add merges both producers into one group read by the head."""
    group = groups_of(zoo.Residual())["a"]
    assert group.producers == ("a", "b") and group.members == ("a", "b", "head")
    assert kinds(group) == {"fold"} and group.prunable()


def test_every_user_is_followed() -> None:
    """A producer read by two consumers lists both as members."""
    assert groups_of(zoo.TwoHeads())["trunk"].members == ("trunk", "left", "right")


def test_unknown_user_blocks_with_node_name() -> None:
    """A channel read by an op without a rule blocks the group, naming the node and how to proceed."""
    for model, node in ((zoo.SoftmaxMiddle(), "softmax"), (zoo.ChannelSum(), "sum_1")):
        group = groups_of(model)["fc1"]
        assert kinds(group) == {"unknown"} and not group.prunable(Options(True, True, True))
        assert [b.node for b in group.blocks] == [node]
        assert f"node '{node}'" in group.why_not() and "out of the masks" in group.why_not()


def test_lstm_state_unused_or_to_output() -> None:
    """An unused LSTM state does not block; a state reaching the output is an 'output' block."""
    lm = groups_of(zoo.LSTMLM())["lstm"]
    assert kinds(lm) == {"fold"} and lm.members == ("lstm", "norm", "decoder")
    assert lm.prunable()
    state = groups_of(zoo.LSTMStateOut())["lstm"]
    assert kinds(state) == {"output"} and state.members == ("lstm", "linear")


def test_lstm_state_read_by_linear() -> None:
    """h_n read by a Linear makes the Linear a member of the LSTM's group."""

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.fc = nn.LSTM(3, 4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(x)
            return self.fc(h)

    group = groups_of(Head())["lstm"]
    assert group.members == ("lstm", "fc") and not group.blocks


def test_lstm_indexed_otherwise_is_unknown() -> None:
    """Indexing an LSTM's result with anything but 0 or 1 blocks its group."""

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.fc = nn.LSTM(3, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.lstm(x)
            return self.fc(out[0]) + out[1][0][-1].sum()

    group = groups_of(Odd())["lstm"]
    assert "unknown" in kinds(group)


def test_module_called_twice_keeps_its_output_tracked() -> None:
    """A producer called on different inputs blocks those inputs but its own output stays a group."""
    groups = groups_of(zoo.TwiceCalled())
    assert kinds(groups["pre"]) == {"unknown"} and "called several times" in groups["pre"].why_not()
    assert groups["shared"].members == ("shared", "c1", "c2") and groups["shared"].prunable()


def test_shared_parameters_block() -> None:
    """Tied weights and weights read by get_attr block the groups touching them."""
    tied = groups_of(zoo.TiedHeads())
    assert "unknown" in kinds(tied["fc1"]) and "unknown" in kinds(tied["fc2"])
    assert "fc1_weight" in {b.node for b in groups_of(zoo.GetAttrRead())["fc1"].blocks}


def test_fold_blocks() -> None:
    """Normalisation, per-channel PReLU, padded average pooling, divisor_override and spatial LayerNorm block only the fold."""
    cases = [
        zoo.ConvBN(),
        zoo.PerChannelPReLU(),
        zoo.Chain([nn.Conv2d(2, 3, 1), nn.AvgPool2d(2, padding=1), nn.Conv2d(3, 2, 1)]),
        zoo.Chain([nn.Conv2d(2, 3, 1), nn.AvgPool2d(2, divisor_override=3), nn.Conv2d(3, 2, 1)]),
        zoo.Chain([nn.Conv2d(2, 3, 1), nn.LayerNorm([6, 6]), nn.Conv2d(3, 2, 1)]),
    ]
    for model in cases:
        group = analyze(trace(model)).groups[0]
        assert kinds(group) == {"fold"}, (model, group.blocks)
        assert group.prunable()


def test_padded_avg_pool_without_count_include_pad_folds() -> None:
    """Average pooling that excludes its padding keeps a constant constant: no block."""
    model = zoo.Chain([nn.Conv2d(2, 3, 1), nn.AvgPool2d(3, padding=1, count_include_pad=False), nn.Conv2d(3, 2, 1)])
    assert analyze(trace(model)).groups[0].blocks == ()


def test_functional_prelu() -> None:
    """F.prelu with a single slope passes channels through; with a per-channel weight it blocks."""
    assert groups_of(zoo.FunctionalPReLU())["fc1"].members == ("fc1", "fc2")

    class PerChannel(zoo.FunctionalPReLU):
        def __init__(self) -> None:
            super().__init__()
            self.slope = nn.Parameter(torch.full((6,), 0.25))

    group = groups_of(PerChannel())["fc1"]
    assert kinds(group) == {"unknown"} and "nn.PReLU" in group.why_not()


def test_flatten_expansion_recorded_in_roles() -> None:
    """Conv -> AdaptiveAvgPool2d(2) -> flatten -> Linear: the Linear reads 4 columns per channel."""
    analysis = analyze(trace(zoo.ConvPoolFlatten()))
    role = analysis.roles["fc"]
    assert role.in_layout is not None
    assert role.in_layout.width == 16 and role.in_layout.factor == 4
    assert analysis.group_of(role.in_layout.segs[0]).name == "conv2"


def test_layer_norm_exact_and_weightless_rms_norm_inexact() -> None:
    """LayerNorm over the channels is recorded as a norm site (kept exact); an RMSNorm without a weight
    is 'inexact': refused by default, tolerated with approximate=True."""
    analysis = analyze(trace(zoo.LSTMLayerNormLinearModel(3, 4, 2, 2)))
    group = {g.name: g for g in analysis.groups}["lstm"]
    assert kinds(group) == {"fold", "output"} and group.prunable(Options(prune_outputs=True))
    assert [(site.kind, site.module) for site in analysis.norms] == [("layer", "norm")]
    model = nn.Sequential(nn.Linear(3, 4), nn.RMSNorm(4, 1e-6, elementwise_affine=False), nn.Linear(4, 2))
    group = groups_of(model)["0"]
    assert kinds(group) == {"inexact", "fold"}
    assert not group.prunable() and group.prunable(Options(approximate=True))
    assert "approximate=True" in group.why_not() and "without a weight" in group.why_not()


# --------------------------------------------------------------------------- small values


def test_options_tolerates() -> None:
    """Options tolerate exactly: fold always, output with prune_outputs, inexact with approximate, unknown never."""
    assert DEFAULT_OPTIONS == Options()
    table = {
        Options(): {"fold"},
        Options(prune_outputs=True): {"fold", "output"},
        Options(approximate=True): {"fold", "inexact"},
        Options(True, True, True): {"fold", "output", "inexact"},
    }
    for options, tolerated in table.items():
        assert {k for k in ("unknown", "inexact", "output", "fold") if options.tolerates(k)} == tolerated


def test_group_prunable_and_why_not() -> None:
    """why_not joins the messages of the blocks the options do not tolerate."""
    group = ChannelGroup("x", 4, ("x",), ("x",), (Block("output", "output", "m1"), Block("fold", "add", "m2")))
    assert not group.prunable() and group.why_not() == "m1"
    assert group.prunable(Options(prune_outputs=True)) and group.why_not(Options(prune_outputs=True)) == ""


def test_describe_names_the_node() -> None:
    """describe gives the node name, op and target."""
    gm = trace(zoo.MLP())
    nodes = {n.name: n for n in gm.graph.nodes}
    assert describe(nodes["fc1"]) == "node 'fc1' (call_module 'fc1')"
    assert describe(nodes["relu"]) == "node 'relu' (call_function 'relu')"
    assert describe(nodes["tanh"]) == "node 'tanh' (call_function 'tanh')"


def test_groups_follow_graph_order_and_producer_index() -> None:
    """Groups come in graph order of their first producer; by_producer maps every producer to its group."""
    analysis = analyze(trace(zoo.Residual()))
    assert [g.name for g in analysis.groups] == ["a", "head"]
    assert analysis.group("b").name == "a" and analysis.group("head").name == "head"


def test_getitem_on_lstm_output_in_chain() -> None:
    """operator.getitem(lstm(x), 0) in a Chain reads the LSTM output."""
    model = zoo.Chain([nn.LSTM(3, 4), operator.itemgetter(0), F.relu, nn.Linear(4, 2)])
    group = groups_of(model)["l0"]
    assert group.members == ("l0", "l3") and not group.blocks


def test_per_channel_prelu_after_linear_needs_a_known_rank() -> None:
    """PReLU(C) scales dim 1: after a Linear of unknown input rank that may not be the channels, so it blocks."""
    group = groups_of(zoo.Chain([nn.Linear(3, 4), nn.PReLU(4), nn.Linear(4, 2)]))["l0"]
    assert kinds(group) == {"unknown"} and "dim 1" in group.why_not()
