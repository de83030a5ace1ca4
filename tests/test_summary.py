"""fprune.summary: per-layer channels, params and MACs before and after pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from toolz import pipe
from torch import Tensor, nn

from fprune import apply_patterns, score_l1, topk_mask
from fprune.demo import DigitsNet
from fprune.errors import InvalidArgumentError, InvalidTypeError, TraceError
from fprune.summary import LayerRow, Summary, count_macs, count_params, macs_by_module, summary

pytestmark = pytest.mark.filterwarnings("ignore::fprune.errors.FpruneWarning")


def _net(groups: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=groups), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    )


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_macs_by_module_by_hand() -> None:
    """Conv MACs = output elements x in/groups x kernel; Linear MACs = output elements x in_features."""
    macs = macs_by_module(_net(groups=2), torch.zeros(2, 3, 6, 6))
    assert macs == {
        "0": 2 * 8 * 6 * 6 * 3 * 9,
        "3": 2 * 4 * 3 * 3 * (8 // 2) * 9,
        "6": 2 * 5 * 36,
    }


def test_macs_sum_over_repeated_calls_and_lstm() -> None:
    """A module called twice counts twice; an LSTM counts 4 gates x (input + hidden) per step and layer."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)

        def forward(self, x: Tensor) -> Tensor:
            out, _ = self.lstm(self.lin(self.lin(x)))
            return out

    macs = macs_by_module(Twice(), torch.zeros(2, 5, 3))
    assert macs["lin"] == 2 * (2 * 5 * 3 * 3)
    assert macs["lstm"] == 2 * 5 * (4 * 4 * (3 + 4) + 4 * 4 * (4 + 4))


def test_summary_rows_and_totals() -> None:
    """Rows list every module holding state, with channels, params and MACs before and after."""
    net = _net()
    pruned = apply_patterns(net, {"0": torch.tensor([True, False] * 4)})
    example = torch.zeros(1, 3, 6, 6)
    s = summary(net, pruned, example)
    assert isinstance(s, Summary)
    assert [r.name for r in s.rows] == ["0", "1", "3", "6"]
    assert s.rows[0] == LayerRow("0", "Conv2d", "3→8", "3→4", 224, 112, 8 * 36 * 27, 4 * 36 * 27)
    assert (s.rows[1].channels_before, s.rows[1].channels_after) == ("8", "4")
    assert s.rows[2].channels_after == "4→4" and s.rows[2].params_after == 4 * 4 * 9 + 4
    assert s.params_before == count_params(net) and s.params_after == count_params(pruned)
    assert s.macs_before == count_macs(net, example) and s.macs_after == count_macs(pruned, example)
    assert s.macs_after is not None and s.macs_before is not None
    assert s.macs_ratio == s.macs_after / s.macs_before
    assert s.params_ratio == s.params_after / s.params_before


def test_summary_renders_text_and_markdown() -> None:
    """str() is an aligned table with a total row; to_markdown() is a table notebooks display."""
    net = _net()
    s = summary(net, apply_patterns(net, {"0": torch.tensor([True, False] * 4)}), torch.zeros(1, 3, 6, 6))
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "type", "channels"]
    assert any(line.startswith("total") and f"{s.params_before:,}" in line for line in lines)
    assert "BatchNorm2d" in text and "3→4" in text and repr(s) == text
    md = s.to_markdown()
    assert md.splitlines()[0].startswith("| layer | type | channels before | channels after | params before")
    assert "| `1` | BatchNorm2d | 8 | 4 |" in md
    assert f"**{s.params_after:,}**" in md and md == s._repr_markdown_()


def test_summary_without_example_input_has_no_macs() -> None:
    """Without an example input the MAC columns are empty ("-") and the totals None."""
    net = _net()
    s = summary(net, net)
    assert s.macs_before is None and s.macs_ratio is None
    assert all(r.macs_before is None and r.macs_after is None for r in s.rows)
    assert "-" in str(s)


def test_summary_leaves_both_models_untouched() -> None:
    """Counting MACs runs a deep copy in eval mode: no BN statistics, flags or node meta change."""
    net = _net().train()
    pruned = apply_patterns(net, {"0": torch.tensor([True, False] * 4)}).train()
    before, before_pruned = _state(net), _state(pruned)
    metas = [copy.copy(n.meta) for n in pruned.graph.nodes]
    summary(net, pruned, torch.randn(4, 3, 6, 6))
    for model, state in ((net, before), (pruned, before_pruned)):
        assert model.training
        now = _state(model)
        assert all(torch.equal(now[k], state[k]) for k in state)
    assert [n.meta for n in pruned.graph.nodes] == metas


def test_summary_of_residual_pipeline() -> None:
    """On the demo CNN, the coupled residual group and the flattened head show up in the table."""
    net = DigitsNet(width=8)
    pruned = pipe(net, score_l1, topk_mask(0.5), apply_patterns)
    s = summary(net, pruned, torch.zeros(1, 1, 8, 8))
    rows = {r.name: r for r in s.rows}
    assert rows["stem.0"].channels_after == "1→4" and rows["res.3"].channels_after == "4→4"
    assert rows["head"].channels_after == f"{16 * 8}→10"
    assert s.macs_after == count_macs(pruned, torch.zeros(1, 1, 8, 8)) < s.macs_before


def test_summary_errors() -> None:
    """Bad arguments give fprune errors that say what to pass."""
    net = _net()
    with pytest.raises(InvalidTypeError, match="nn.Module"):
        summary(net, "pruned")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="example_input"):
        summary(net, net, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"example input of shape \(1, 5, 6, 6\)") as info:
        summary(net, net, torch.zeros(1, 5, 6, 6))
    assert info.value.__cause__ is not None

    class Branchy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(TraceError):
        count_macs(Branchy(), torch.zeros(1))


def test_summary_measures_the_output_error_of_a_plan() -> None:
    """With plan=, summary measures pruned vs zeroed original: rounding when exact, the cost of approximate."""
    from fprune import export, score_with

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 2)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    exact = topk_mask(0.5)(score_l1(net))
    approx = topk_mask(0.5)(score_with(score_l1, approximate=True)(net))
    s_exact = summary(net, apply_patterns(exact), x, plan=exact)
    s_approx = summary(net, apply_patterns(approx), x, plan=approx)
    assert s_exact.output_error is not None and s_exact.output_error < 1e-12 and not s_exact.approximate
    assert s_approx.output_error is not None and s_approx.output_error > 1e-6 and s_approx.approximate
    assert "approximate=True" in str(s_approx) and "relative error" in s_approx.to_markdown()
    assert summary(net, apply_patterns(exact), x).output_error is None  # no plan, nothing measured
    program = export(net, (x,))  # a program: its own example inputs are the tracing input
    plan = topk_mask(0.5)(score_with(score_l1, approximate=True)(program))
    measured = summary(program, apply_patterns(plan), plan=plan).output_error
    assert measured is not None and measured == pytest.approx(s_approx.output_error, rel=1e-6)
