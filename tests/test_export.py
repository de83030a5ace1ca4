"""The torch.export front-end and back-end: ExportedProgram in, a new ExportedProgram out.

Differential: on every architecture both front-ends read the same way, the plan JSON from torch.fx
and from torch.export is byte-identical, and a plan made on one applies to the other.  Exact: the
pruned program computes the original with every removed slice zeroed (float64).  Sound: a custom op
the analysis has no rule for keeps the channels it reads whole, whatever graph it is planted in.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import zero_slices
from models import ConvBN, seeded
from test_architectures import ARCHITECTURES
from torch import Tensor, nn
from torch.export import ExportedProgram

from fprune import analyze, apply_patterns, export, load_plan, score_l1, summary, topk_mask
from fprune.errors import InvalidTypeError, PlanMismatchError, TraceError, UnprunableError
from strategies import examples

# LSTMs are read by torch.fx as one module; torch.export lowers them to aten.lstm, which the export
# front-end does not read yet (their channels stay whole there), so the two plans differ.
BOTH = sorted(name for name in ARCHITECTURES if name != "LSTMLM")


def _case(name: str) -> tuple[nn.Module, Tensor]:
    arch = ARCHITECTURES[name]
    return seeded(arch.build(), 0).eval(), arch.make_input(torch.Generator().manual_seed(0))


def _quiet(fn, *args):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _fingerprint(ep: ExportedProgram) -> tuple[str, dict[str, Tensor]]:
    return str(ep.graph), {k: v.detach().clone() for k, v in ep.state_dict.items()}


@pytest.mark.parametrize("name", BOTH)
def test_plans_identical_and_exact(name: str) -> None:
    model, x = _case(name)
    ep = export(model, (x,))
    before = _fingerprint(ep)
    fx_plan = _quiet(lambda m: topk_mask(0.3)(score_l1(m)), model)
    ex_plan = _quiet(lambda m: topk_mask(0.3)(score_l1(m)), ep)
    assert ex_plan.to_json() == fx_plan.to_json()
    small = apply_patterns(ex_plan)
    assert isinstance(small, ExportedProgram)
    reference = zero_slices(model, ex_plan.params())(x)
    torch.testing.assert_close(small.module()(x), reference, rtol=1e-9, atol=1e-9)
    # a plan made on one front-end applies to the other's graph
    crossed = apply_patterns(load_plan(fx_plan.to_json(), ep))
    torch.testing.assert_close(crossed.module()(x), reference, rtol=1e-9, atol=1e-9)
    back = apply_patterns(load_plan(ex_plan.to_json(), model))
    torch.testing.assert_close(back(x), reference, rtol=1e-9, atol=1e-9)
    graph, state = _fingerprint(ep)  # the input program is unchanged
    assert graph == before[0] and state.keys() == before[1].keys()
    assert all(torch.equal(state[k], before[1][k]) for k in state)


@pytest.mark.parametrize("name", ["ResNetBasic", "MobileNetV3Block", "ViTBlockNet", "GroupNormNet"])
def test_program_round_trip(name: str) -> None:
    model, x = _case(name)
    ep = export(model, (x,))
    small = apply_patterns(_quiet(lambda m: topk_mask(0.3)(score_l1(m)), ep))
    expected = small.module()(x)
    # signature, lifted state and fake values agree with the new sizes
    placeholders = {n.name: n for n in small.graph.nodes if n.op == "placeholder"}
    for spec in small.graph_signature.input_specs:
        if spec.target in small.state_dict:
            assert tuple(placeholders[spec.arg.name].meta["val"].shape) == tuple(small.state_dict[spec.target].shape)
    buffer = io.BytesIO()
    torch.export.save(small, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    torch.testing.assert_close(loaded.module()(x), expected)
    torch.testing.assert_close(small.run_decompositions().module()(x), expected)
    again = apply_patterns(_quiet(lambda m: topk_mask(0.3)(score_l1(m)), small))  # and it can be pruned again
    assert sum(t.numel() for t in again.state_dict.values()) <= sum(t.numel() for t in small.state_dict.values())
    assert again.module()(x).shape == expected.shape


def test_dynamic_batch_is_kept() -> None:
    model, x = _case("ResNetBasic")
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = export(model, (x,), dynamic_shapes=({0: batch},))
    small = apply_patterns(_quiet(lambda m: topk_mask(0.5)(score_l1(m)), ep))
    big = torch.cat([x, x, x])
    plan = _quiet(lambda m: topk_mask(0.5)(score_l1(m)), model)
    torch.testing.assert_close(small.module()(big), zero_slices(model, plan.params())(big), rtol=1e-9, atol=1e-9)


def test_summary_reads_programs() -> None:
    model, x = _case("ResNetBasic")
    ep = export(model, (x,))
    small = apply_patterns(_quiet(lambda m: topk_mask(0.5)(score_l1(m)), ep))
    s = summary(ep, small, x)
    assert s.params_after < s.params_before and s.macs_after is not None and s.macs_after < s.macs_before


def test_training_batch_norm_is_refused_not_half_rewritten() -> None:
    model = seeded(ConvBN(), 0).train()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    ep = export(model, (x,))
    group = analyze(ep).groups[0]
    assert not group.prunable() and "training mode" in group.why_not()
    with pytest.raises(UnprunableError, match="training mode"):
        apply_patterns(ep, {group.name: torch.arange(group.size) % 2 == 0})


def test_export_failure_is_a_trace_error() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[: int(x.sum().item()) % 3 + 1] if x.sum() > 0 else x

    with pytest.raises(TraceError, match="use_cache=False"):
        export(DataDependent(), (torch.randn(4),), strict=True)
    with pytest.raises(InvalidTypeError):
        export(lambda x: x, (torch.randn(2),))  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"\(x,\)"):
        export(nn.Linear(2, 2), torch.randn(1, 2))  # type: ignore[arg-type]


def test_plan_naming_missing_tensors_is_refused() -> None:
    model, x = _case("ResNetBasic")
    text = '{"format": "fprune.plan/1", "params": {"nope.weight": [{"dim": 0, "keep": [0]}]}}'
    with pytest.raises(PlanMismatchError, match="nope.weight"):
        load_plan(text, export(model, (x,)))


# ---- soundness: an op without a rule keeps the channels it reads whole -----------------------

@torch.library.custom_op("fprune_test::mystery", mutates_args=())
def _mystery(x: Tensor) -> Tensor:
    return x.flip(-1)  # mixes channels: pruning across it could never be exact


@_mystery.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


class _Planted(nn.Module):
    def __init__(self, widths: list[int], at: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.at = at

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if i == self.at:
                x = _mystery(x)
        return x


@settings(max_examples=examples(10), deadline=None)
@given(widths=st.lists(st.integers(2, 6), min_size=3, max_size=5), data=st.data())
def test_unknown_op_blocks_only_its_group(widths: list[int], data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(widths) - 3))  # after a hidden layer
    model = seeded(_Planted(widths, at), data.draw(st.integers(0, 1000))).eval()
    x = torch.randn(3, widths[0], dtype=torch.float64)
    ep = export(model, (x,))
    analysis = analyze(ep)
    hidden = [f"layers.{i}" for i in range(len(widths) - 2)]
    for name in hidden:
        group = analysis.group(name)
        if name == f"layers.{at}":
            assert not group.prunable() and any(b.kind == "unknown" for b in group.blocks)
        else:
            assert group.prunable()
    plan = _quiet(lambda m: topk_mask(0.5)(score_l1(m)), ep)
    assert f"layers.{at}" not in {k for k, m in plan.masks.items() if not bool(m.all())}
    small = apply_patterns(plan)
    torch.testing.assert_close(small.module()(x), zero_slices(model, plan.params())(x), rtol=1e-9, atol=1e-9)
    assert copy.deepcopy(plan.params()) == plan.params()
