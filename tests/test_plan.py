"""Tests for fprune.plan: the Plan value, its JSON form, load_plan and its errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toolz import pipe
from torch import nn

import models as zoo
from strategies import examples
from fprune import apply_patterns, load_plan, score_l1, topk_mask
from fprune.errors import FpruneError, FpruneWarning, PlanFormatError, PlanMismatchError
from fprune.groups import Options, analyze
from fprune.plan import FORMAT, Plan, Scored
from fprune.trace import trace
from model_strategies import FAMILIES, Case, chains


def case_plan(case: Case) -> Plan:
    """The Plan of a drawn case, with the options it needs."""
    options = Options(prune_outputs=case.prune_outputs, approximate=case.approximate)
    return Plan(analyze(trace(case.model)), case.masks, options)


def case_options(case: Case) -> Options:
    """The options a drawn case needs."""
    return Options(prune_outputs=case.prune_outputs, approximate=case.approximate)


def mlp_plan() -> tuple[nn.Module, Plan]:
    """A seeded MLP and a plan pruning half of each hidden layer."""
    model = zoo.seeded(zoo.MLP(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        return model, pipe(model, score_l1, topk_mask(0.5))


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers under the same names."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=examples(15))
@given(data=st.data())
def test_json_round_trip(family: str, data: st.DataObject) -> None:
    """load_plan(plan.to_json(), fresh copy) gives the same JSON and the same pruned model."""
    case: Case = data.draw(chains(family), label="case")
    plan = case_plan(case)
    text = plan.to_json()
    fresh = copy.deepcopy(case.model)
    loaded = load_plan(text, fresh, case_options(case))
    assert loaded.to_json() == text
    assert {k: v.tolist() for k, v in loaded.masks.items()} == {
        k: v.tolist() for k, v in case.masks.items() if not bool(v.all())}
    assert same_state(apply_patterns(loaded), apply_patterns(plan))
    assert same_state(fresh, case.model)  # load_plan does not modify the model


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=examples(10))
@given(data=st.data())
def test_params_list_exactly_the_changed_tensors(family: str, data: st.DataObject) -> None:
    """params() lists every parameter and buffer whose shape changes, one entry per sliced dim, keep sorted."""
    case: Case = data.draw(chains(family), label="case")
    plan = case_plan(case)
    params = plan.params()
    before = case.model.state_dict()
    after = apply_patterns(plan).state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        expected = list(tensor.shape)
        for entry in params.get(name, []):
            assert entry["keep"] == sorted(set(entry["keep"])) and entry["keep"]
            assert entry["keep"][-1] < tensor.shape[entry["dim"]]
            expected[entry["dim"]] = len(entry["keep"])
        assert list(after[name].shape) == expected, name
        assert (name in params) == (list(tensor.shape) != expected), name


def test_json_form_of_a_middle_linear_and_an_lstm() -> None:
    """A middle Linear loses rows and columns; an LSTM's weight_hh loses packed gate rows and columns."""
    model, plan = mlp_plan()
    doc = json.loads(plan.to_json())
    assert doc["format"] == FORMAT == "fprune.plan/1"
    keep1 = plan.masks["fc1"].nonzero().squeeze(1).tolist()
    keep2 = plan.masks["fc2"].nonzero().squeeze(1).tolist()
    assert doc["params"]["fc2.weight"] == [{"dim": 0, "keep": keep2}, {"dim": 1, "keep": keep1}]
    assert doc["params"]["fc1.bias"] == [{"dim": 0, "keep": keep1}]
    assert "fc3.bias" not in doc["params"]

    lstm = zoo.LSTMLM(norm=False)
    mask = torch.tensor([True, False, True, True, False, True])
    params = Plan(analyze(trace(lstm)), {"lstm": mask}).params()
    gates = [u + 6 * g for g in range(4) for u in (0, 2, 3, 5)]
    assert params["lstm.weight_hh_l1"] == [{"dim": 0, "keep": gates}, {"dim": 1, "keep": [0, 2, 3, 5]}]
    assert params["lstm.weight_ih_l1"] == [{"dim": 0, "keep": gates}, {"dim": 1, "keep": [0, 2, 3, 5]}]
    assert params["lstm.weight_ih_l0"] == [{"dim": 0, "keep": gates}]
    assert params["decoder.weight"] == [{"dim": 1, "keep": [0, 2, 3, 5]}]


def test_plan_on_a_fresh_architecture_copy() -> None:
    """A plan applied to a freshly built copy (other weights) gives the same shapes, sliced from the new weights."""
    model, plan = mlp_plan()
    other = zoo.seeded(zoo.MLP(), 1)
    pruned = apply_patterns(load_plan(plan.to_json(), other))
    reference = apply_patterns(plan)
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    keep = plan.masks["fc1"]
    assert torch.equal(pruned.get_submodule("fc1").weight, other.fc1.weight[keep])


def test_plan_is_immutable() -> None:
    """A Plan is a frozen value; its masks cannot be reassigned."""
    _, plan = mlp_plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.masks = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.masks["fc1"] = torch.ones(8, dtype=torch.bool)  # type: ignore[index]
    assert repr(plan) == "Plan(pruned={'fc1': '4/8', 'fc2': '3/6'})"


def test_scored_repr_and_warning() -> None:
    """score_model leaves out unprunable groups with one warning naming each and why."""
    with pytest.warns(FpruneWarning, match=r"'fc3'.*prune_outputs=True"):
        scored = score_l1(zoo.MLP())
    assert isinstance(scored, Scored) and list(scored.scores) == ["fc1", "fc2"]
    assert repr(scored) == "Scored(scorer=score_l1, groups=['fc1', 'fc2'])"


# --------------------------------------------------------------------------- load_plan errors


def _plan_text(params: dict[str, Any], fmt: str = FORMAT) -> str:
    return json.dumps({"format": fmt, "params": params})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("{not json", r"not JSON.*expected \{\"format\": \"fprune.plan/1\""),
        ("", "not JSON"),
        ('["fprune.plan/1"]', "format is 'list'"),
        ('{"format": "fprune.plan/2", "params": {}}', r"format is 'fprune.plan/2'"),
        ('{"params": {}}', "format is None"),
        ('{"format": "fprune.plan/1"}', "'params' is missing"),
        ('{"format": "fprune.plan/1", "params": []}', "'params' is missing or not an object"),
        (_plan_text({"fc1.weight": {"dim": 0, "keep": [0]}}), "'fc1.weight' must be a list"),
        (_plan_text({"fc1.weight": [{"dim": "0", "keep": [0]}]}), "'fc1.weight'"),
        (_plan_text({"fc1.weight": [{"dim": 0, "keep": [2, 1]}]}), "sorted unique"),
        (_plan_text({"fc1.weight": [{"dim": 0, "keep": [-1]}]}), "'fc1.weight'"),
        (_plan_text({"fc1.weight": [{"dim": 0, "keep": [0], "extra": 1}]}), "'fc1.weight'"),
    ],
    ids=["not-json", "empty", "not-object", "wrong-tag", "no-tag", "no-params", "params-list", "entry-dict",
         "dim-str", "unsorted", "negative", "extra-key"],
)
def test_load_plan_format_errors(text: str, pattern: str) -> None:
    """Text that is not an fprune.plan/1 document raises PlanFormatError (a ValueError) saying what was expected."""
    with pytest.raises(PlanFormatError, match=pattern) as info:
        load_plan(text, zoo.MLP())
    assert isinstance(info.value, ValueError) and isinstance(info.value, FpruneError)


def test_load_plan_rejects_non_text() -> None:
    """A dict or bytes instead of the JSON text is a PlanFormatError naming the type."""
    _, plan = mlp_plan()
    with pytest.raises(PlanFormatError, match="got dict"):
        load_plan(json.loads(plan.to_json()), zoo.MLP())  # type: ignore[arg-type]
    with pytest.raises(PlanFormatError, match="got bytes"):
        load_plan(plan.to_json().encode(), zoo.MLP())  # type: ignore[arg-type]


def test_load_plan_into_another_architecture() -> None:
    """A plan for one architecture is refused by another: missing tensors, out-of-range indices, other groups."""
    _, plan = mlp_plan()
    text = plan.to_json()
    with pytest.raises(PlanMismatchError, match=r"'fc1.weight'.*ConvNet does not have"):
        load_plan(text, zoo.ConvNet())
    with pytest.raises(PlanMismatchError, match=r"'fc1.weight', whose shape is \(4, 5\)"):
        load_plan(text, zoo.MLP(sizes=(5, 4, 6, 3)))

    class Branch(zoo.MLP):
        """fc1 also feeds fc3 directly: the plan's slicing misses fc3's columns."""

        def __init__(self) -> None:
            super().__init__(sizes=(5, 8, 8, 3))
            self.skip = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            return self.fc3(torch.tanh(self.fc2(h))) + self.skip(h)

    with pytest.raises(PlanMismatchError, match="another architecture"):
        load_plan(text, Branch())


@pytest.mark.parametrize("drop", ["fc1.bias", "fc2.weight", "fc3.weight"])
def test_load_plan_with_missing_params(drop: str) -> None:
    """A plan missing a tensor its groups must slice is refused, naming that tensor."""
    model, plan = mlp_plan()
    doc = json.loads(plan.to_json())
    del doc["params"][drop]
    with pytest.raises(PlanMismatchError, match=f"differing tensor: .*{drop}"):
        load_plan(json.dumps(doc), model)


def test_load_plan_with_inconsistent_keeps() -> None:
    """Producer rows and consumer columns that disagree are refused."""
    model, plan = mlp_plan()
    doc = json.loads(plan.to_json())
    doc["params"]["fc2.weight"][1]["keep"] = [0, 1, 2, 3]
    with pytest.raises(PlanMismatchError, match="'fc2.weight'"):
        load_plan(json.dumps(doc), model)


def test_load_plan_of_an_unprunable_group() -> None:
    """A plan pruning an output layer needs prune_outputs=True when loaded."""
    model = zoo.seeded(zoo.MLP(), 0)
    mask = torch.tensor([True, False, True])
    text = Plan(analyze(trace(model)), {"fc3": mask}, Options(prune_outputs=True)).to_json()
    with pytest.raises(PlanMismatchError, match="prune_outputs=True"):
        load_plan(text, model)
    plan = load_plan(text, model, Options(prune_outputs=True))
    assert apply_patterns(plan).get_submodule("fc3").out_features == 2


def test_empty_plan_is_a_copy() -> None:
    """A plan with no params loads and applies to an equal, unshared copy."""
    model = zoo.seeded(zoo.MLP(), 0)
    plan = load_plan(_plan_text({}), model)
    assert repr(plan) == "Plan(pruned={})" and plan.params() == {}
    pruned = apply_patterns(plan)
    assert same_state(pruned, model)
    assert not {id(p) for p in pruned.parameters()} & {id(p) for p in model.parameters()}
