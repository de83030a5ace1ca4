"""Tests for choosing what to prune: strict mode, ignore(), per-module sparsity, score_with."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toolz import compose_left, pipe
from torch import Tensor, nn

from fprune import (
    Options,
    apply_patterns,
    global_topk_mask,
    ignore,
    score_l1,
    score_l2,
    score_model,
    score_with,
    threshold_mask,
    topk_mask,
)
from fprune.errors import (
    FpruneError,
    FpruneWarning,
    InvalidArgumentError,
    InvalidTypeError,
    UnsupportedModelError,
)
from fprune.masks import TopK
from fprune.plan import Plan, Scored, ScoreStage, plan_from_scored
from fprune.select import Ignore
from strategies import examples, layer_widths, sparsities

OUTPUTS = Options(prune_outputs=True)


# --------------------------------------------------------------------------- models and helpers


def mlp(widths: Sequence[int], seed: int = 0) -> nn.Sequential:
    """Linear layers of the given widths with a ReLU between each pair (names "0", "2", "4", ...)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def quiet(fn: Callable[[], object]) -> object:
    """Runs fn with fprune's 'left unpruned' warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        return fn()


def scored_mlp(widths: Sequence[int], seed: int = 0) -> Scored:
    """Every group of an MLP scored with score_l1, the output layer included."""
    return score_model(score_l1, mlp(widths, seed), OUTPUTS)


def as_lists(scores: Mapping[str, Tensor]) -> dict[str, list[float]]:
    """Scores by value, in order."""
    return {k: v.tolist() for k, v in scores.items()}


class OnOp(nn.Module):
    """A Linear whose output goes through `op` along the channel dim before the next Linear."""

    def __init__(self, op: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.op = op
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.op(self.a(x)))


class TwoUnknown(nn.Module):
    """Two groups, each read by an op fprune has no rule for."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(torch.cumsum(self.b(torch.cumsum(self.a(x), dim=1)), dim=1))


class NormHead(nn.Module):
    """Linear -> RMSNorm without weight -> Linear -> ReLU -> Linear: an inexact group and an output group."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2, self.fc3 = nn.Linear(4, 8), nn.RMSNorm(8, 1e-6, False), nn.Linear(8, 6), \
            nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(torch.relu(self.fc2(self.norm(self.fc1(x)))))


class Residual(nn.Module):
    """y = a(x); z = y + b(y): one group with producers ("a", "b"), then a head "c"."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        return self.c(torch.relu(y + self.b(y)))


class Nested(nn.Module):
    """Named blocks: block1.{0,2}, block2.{0,2} and a head fc."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        self.block2 = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU())
        self.fc = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.block2(self.block1(x)))


# --------------------------------------------------------------------------- strict


@pytest.mark.parametrize(
    ("op", "node"),
    [(lambda y: torch.cumsum(y, dim=1), "cumsum"), (lambda y: torch.sort(y, dim=1).values, "sort")],
    ids=["cumsum", "sort"],
)
def test_strict_raises_on_an_unknown_op(op: Callable[[Tensor], Tensor], node: str) -> None:
    """Under strict, a group read by an op without a rule is an UnsupportedModelError naming group, node and op."""
    model = OnOp(op)
    for run in (lambda: score_model(score_l1, model, Options(strict=True)),
                lambda: pipe(model, score_with(score_l1, strict=True), topk_mask(0.5), apply_patterns)):
        with pytest.raises(UnsupportedModelError) as info:
            run()
        message = str(info.value)
        assert isinstance(info.value, NotImplementedError)
        assert "group 'a'" in message and f"node '{node}'" in message and f"call_function '{node}'" in message
        assert "Fix:" in message


def test_without_strict_an_unknown_op_warns_and_leaves_the_group_out() -> None:
    """By default the same group is left out with a warning naming the node."""
    with pytest.warns(FpruneWarning, match="node 'cumsum'"):
        scored = score_model(score_l1, OnOp(lambda y: torch.cumsum(y, dim=1)), OUTPUTS)
    assert list(scored.scores) == ["b"]


def test_strict_names_every_blocked_group() -> None:
    """One error lists every group an unknown op blocks."""
    with pytest.raises(UnsupportedModelError) as info:
        score_with(score_l1, prune_outputs=True, strict=True)(TwoUnknown())
    message = str(info.value)
    assert "group 'a'" in message and "group 'b'" in message and "2 place(s)" in message


def test_strict_still_only_warns_for_output_and_inexact_blocks() -> None:
    """Output and inexact blocks are exactness guards, not ignorance: strict keeps them warnings."""
    with pytest.warns(FpruneWarning) as record:
        scored = score_with(score_l1, strict=True)(NormHead())
    text = " ".join(str(w.message) for w in record)
    assert "'fc1'" in text and "'fc3'" in text
    assert list(scored.scores) == ["fc2"]
    assert scored.options.strict


# --------------------------------------------------------------------------- score_with


def test_score_with_is_score_model_with_options() -> None:
    """score_with(s, **kw)(model) equals score_model(s, model, Options(**kw)), and carries the options on."""
    model = mlp([4, 6, 5, 2])
    stage = score_with(score_l2, prune_outputs=True, fold_bias=True)
    a, b = stage(model), score_model(score_l2, model, Options(prune_outputs=True, fold_bias=True))
    assert as_lists(a.scores) == as_lists(b.scores)
    assert a.options == b.options == stage.options
    plan = topk_mask(0.5)(a)
    assert plan.options == stage.options
    assert pipe(model, stage, topk_mask(0.5), apply_patterns).get_submodule("4").out_features == 1


def test_score_with_value_and_errors() -> None:
    """score_with is a frozen value with a call-like repr; bad arguments raise TypeErrors with a fix."""
    assert repr(score_with(score_l1)) == "score_with(score_l1)"
    assert repr(score_with(score_l1, strict=True)) == "score_with(score_l1, strict=True)"
    assert score_with(score_l1, strict=True) == ScoreStage(score_l1, Options(strict=True))
    assert hash(score_with(score_l1)) == hash(score_with(score_l1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        score_with(score_l1).options = OUTPUTS  # type: ignore[misc]
    for build in (lambda: score_with("l1"), lambda: score_with(score_l1, strict=1)):  # type: ignore[arg-type]
        with pytest.raises(InvalidTypeError, match="Fix:"):
            build()


# --------------------------------------------------------------------------- ignore: selection


def test_ignore_inputs_and_outputs_by_name() -> None:
    """inputs=["2"] keeps the channels "2" reads (group "0"); outputs=["2"] keeps those it produces."""
    scored = scored_mlp([4, 6, 5, 4, 2])
    assert list(scored.scores) == ["0", "2", "4", "6"]
    assert list(ignore(inputs=["2"])(scored).scores) == ["2", "4", "6"]
    assert list(ignore(outputs=["2"])(scored).scores) == ["0", "4", "6"]
    assert list(ignore(outputs="0", inputs="6")(scored).scores) == ["2", "6"]


def test_ignore_by_glob_type_and_predicate() -> None:
    """Globs, module types and predicates select modules like names do."""
    scored = scored_mlp([4, 6, 5, 4, 2])
    assert list(ignore(outputs="[46]")(scored).scores) == ["0", "2"]
    assert list(ignore(outputs=nn.Linear)(scored).scores) == []
    assert list(ignore(inputs=lambda name, module: module.in_features == 5)(scored).scores) == ["0", "4", "6"]
    assert list(ignore(outputs=[lambda name, module: name == "6", "0"])(scored).scores) == ["2", "4"]
    norm = score_with(score_l1, prune_outputs=True, approximate=True)(NormHead())
    assert list(norm.scores) == ["fc1", "fc2", "fc3"]
    assert list(ignore(inputs=nn.RMSNorm)(norm).scores) == ["fc2", "fc3"]
    assert list(ignore(outputs=nn.LayerNorm)(norm).scores) == ["fc1", "fc2", "fc3"]  # not a producer


def test_ignore_a_name_covers_the_modules_inside() -> None:
    """A container's name (or a glob ending in .*) selects every module inside it."""
    scored = quiet(lambda: score_l1(Nested()))
    assert isinstance(scored, Scored)
    assert list(scored.scores) == ["block1.0", "block1.2", "block2.0", "block2.2"]
    assert list(ignore(outputs="block1")(scored).scores) == ["block2.0", "block2.2"]
    assert list(ignore(outputs="block2.*")(scored).scores) == ["block1.0", "block1.2"]
    assert list(ignore(inputs="fc")(scored).scores) == ["block1.0", "block1.2", "block2.0"]


def test_ignore_residual_group_through_any_producer() -> None:
    """Selecting any producer of a residual sum keeps the whole sum, named after its first producer."""
    scored = quiet(lambda: score_l1(Residual()))
    assert isinstance(scored, Scored) and list(scored.scores) == ["a"]
    assert list(ignore(outputs="b")(scored).scores) == []
    assert list(ignore(inputs="c")(scored).scores) == []
    assert list(ignore(inputs="b")(scored).scores) == []  # "b" reads the sum too


def test_ignore_typos_raise_with_suggestions() -> None:
    """A name or glob matching no module raises InvalidArgumentError naming it and the closest names."""
    scored = quiet(lambda: score_l1(Nested()))
    assert isinstance(scored, Scored)
    cases = [(ignore(outputs="fcc"), "'fcc'", "'fc'"), (ignore(inputs=["fc", "blok1"]), "'blok1'", "'block1'"),
             (ignore(outputs="block"), "'block'", "'block1'"), (ignore(outputs="zzz*"), "'zzz*'", "candidates")]
    for stage, pattern, hint in cases:
        with pytest.raises(InvalidArgumentError) as info:
            stage(scored)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert pattern in message and hint in message and "Fix:" in message


@pytest.mark.parametrize(
    "build",
    [lambda: ignore(outputs=3), lambda: ignore(inputs=[int]), lambda: ignore(outputs=nn.Linear(2, 2)),
     lambda: ignore(outputs=["fc", None]), lambda: Ignore(outputs=(1.5,))],  # type: ignore[arg-type]
    ids=["int", "non-module type", "module instance", "None in list", "class"],
)
def test_ignore_bad_selectors_raise_at_construction(build: Callable[[], object]) -> None:
    """Selectors of the wrong kind raise InvalidTypeError with a fix when the stage is built."""
    with pytest.raises(InvalidTypeError) as info:
        build()
    assert isinstance(info.value, TypeError) and "Fix:" in str(info.value)


def test_ignore_rejects_what_is_not_scored() -> None:
    """The stage takes a Scored value; a model or plan raises InvalidTypeError saying where it goes."""
    model = mlp([4, 6, 2])
    for value in (model, quiet(lambda: topk_mask(0.5)(score_l1(model)))):
        with pytest.raises(InvalidTypeError, match=r"pipe\(model, score_l1, ignore\(outputs='0'\)"):
            ignore(outputs="0")(value)  # type: ignore[arg-type]


def test_ignore_value_repr_and_equality() -> None:
    """ignore is a frozen value, equal by its selectors, with a call-like repr."""

    def is_head(name: str, module: nn.Module) -> bool:
        return name.startswith("head")

    assert repr(ignore()) == "ignore()"
    assert repr(ignore(outputs="fc")) == "ignore(outputs='fc')"
    assert repr(ignore(outputs=["fc", nn.LayerNorm], inputs=is_head)) == (
        "ignore(outputs=['fc', nn.LayerNorm], inputs=test_ignore_value_repr_and_equality.<locals>.is_head)"
    )
    assert ignore(outputs=["a", "b"]) == ignore(outputs=("a", "b")) == Ignore(outputs=("a", "b"))
    assert ignore(outputs="a") == ignore(outputs=["a"]) and hash(ignore(outputs="a")) == hash(ignore(outputs=["a"]))
    assert ignore(outputs="a") != ignore(inputs="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ignore().outputs = ("x",)  # type: ignore[misc]


# --------------------------------------------------------------------------- ignore: properties


@settings(max_examples=examples(15))
@given(widths=layer_widths(), data=st.data())
def test_ignore_is_pure_and_keeps_the_rest(widths: list[int], data: st.DataObject) -> None:
    """ignore leaves its input equal by value and returns the other groups unchanged, in order."""
    scored = scored_mlp(widths)
    names = list(scored.scores)
    outs = data.draw(st.lists(st.sampled_from(names), max_size=3), label="outputs")
    ins = data.draw(st.lists(st.sampled_from(names), max_size=3), label="inputs")
    before = as_lists(scored.scores)
    result = ignore(outputs=outs, inputs=ins)(scored)
    assert as_lists(scored.scores) == before
    readers = {names[i - 1] for i, name in enumerate(names) if name in ins and i > 0}
    expected = [n for n in names if n not in set(outs) | readers]
    assert list(result.scores) == expected
    assert as_lists(result.scores) == {n: before[n] for n in expected}
    assert result.analysis is scored.analysis and result.options == scored.options and result.scorer == scored.scorer


@settings(max_examples=examples(15))
@given(widths=layer_widths(), data=st.data())
def test_ignore_composes_and_is_idempotent(widths: list[int], data: st.DataObject) -> None:
    """Two ignore stages equal one with both selections; applying one twice equals once."""
    scored = scored_mlp(widths)
    names = list(scored.scores)
    a = data.draw(st.lists(st.sampled_from(names), max_size=3), label="a")
    b = data.draw(st.lists(st.sampled_from(names), max_size=3), label="b")
    both = ignore(outputs=a, inputs=b)
    stepwise = compose_left(ignore(outputs=a), ignore(inputs=b))(scored)
    assert list(stepwise.scores) == list(both(scored).scores)
    assert list(both(both(scored)).scores) == list(both(scored).scores)


@settings(max_examples=examples(10))
@given(widths=layer_widths(min_layers=3), s=sparsities())
def test_ignored_groups_are_kept_whole_in_the_pruned_model(widths: list[int], s: float) -> None:
    """In the full pipe, an ignored layer keeps its outputs; a layer whose inputs are ignored keeps its inputs."""
    model = mlp(widths)
    pruned = pipe(model, score_with(score_l1, prune_outputs=True), ignore(outputs="0", inputs="4"),
                  topk_mask(s), apply_patterns)
    assert pruned.get_submodule("0").out_features == widths[1]
    assert pruned.get_submodule("4").in_features == widths[2]
    last = 2 * (len(widths) - 2)
    assert pruned.get_submodule(str(last)).out_features == widths[-1] - int(widths[-1] * s)


def test_ignore_before_global_ranking() -> None:
    """Ignored groups take no part in a global ranking and keep every channel."""
    scored = scored_mlp([4, 8, 8, 8, 2])
    plan = pipe(scored, ignore(outputs=["2", "6"]), global_topk_mask(0.5))
    assert isinstance(plan, Plan) and set(plan.masks) == {"0", "4"}
    assert sum(int((~m).sum()) for m in plan.masks.values()) == 8


# --------------------------------------------------------------------------- per-module sparsity


def pruned_counts(plan: Plan) -> dict[str, int]:
    """How many channels each group of a plan loses."""
    return {k: int((~m).sum()) for k, m in plan.masks.items()}


@settings(max_examples=examples(20))
@given(widths=layer_widths(max_width=24), data=st.data())
def test_per_module_counts_are_exact(widths: list[int], data: st.DataObject) -> None:
    """Each group named in per_module loses exactly int(n * s) channels; the others use the default."""
    scored = scored_mlp(widths)
    names = list(scored.scores)
    default = data.draw(sparsities(), label="default")
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True), label="named")
    own = {name: data.draw(sparsities(), label=f"s[{name}]") for name in chosen}
    plan = topk_mask(default, per_module=own, min_keep=0)(scored)
    sizes = {name: v.numel() for name, v in scored.scores.items()}
    assert pruned_counts(plan) == {n: int(sizes[n] * own.get(n, default)) for n in names}


@settings(max_examples=examples(20))
@given(widths=layer_widths(), data=st.data())
def test_per_module_equals_topk_at_that_sparsity(widths: list[int], data: st.DataObject) -> None:
    """A group's mask under per_module is topk_mask at its sparsity (same round_to and min_keep)."""
    scored = scored_mlp(widths, seed=data.draw(st.integers(0, 99), label="seed"))
    names = list(scored.scores)
    own = {name: data.draw(sparsities(), label=f"s[{name}]") for name in names[::2]}
    round_to, min_keep = data.draw(st.integers(1, 4), label="round_to"), data.draw(st.integers(0, 3), label="min_keep")
    plan = topk_mask(0.5, per_module=own, round_to=round_to, min_keep=min_keep)(scored)
    for name, scores in scored.scores.items():
        alone = topk_mask(own.get(name, 0.5), round_to=round_to, min_keep=min_keep)(scores)
        assert torch.equal(plan.masks[name], alone)


def test_per_module_first_match_wins_and_globs() -> None:
    """Keys are tried in insertion order; the first matching one sets the group's sparsity."""
    scored = quiet(lambda: score_l1(Nested()))
    assert isinstance(scored, Scored)
    rule = topk_mask(0.0, per_module={"block1.2": 0.25, "block1": 0.5, "*": 0.75}, min_keep=0)
    assert rule.sparsities(list(scored.scores)) == {
        "block1.0": 0.5, "block1.2": 0.25, "block2.0": 0.75, "block2.2": 0.75}
    assert pruned_counts(rule(scored)) == {"block1.0": 4, "block1.2": 2, "block2.0": 6, "block2.2": 4}
    reordered = topk_mask(0.0, per_module={"block1": 0.5, "block1.2": 0.25}, min_keep=0)
    assert pruned_counts(reordered(scored))["block1.2"] == 4
    assert reordered != rule


def test_per_module_matches_a_residual_group_through_any_producer() -> None:
    """A key naming the second producer of a residual sum sets the sparsity of the whole group."""
    scored = quiet(lambda: score_l1(Residual()))
    assert isinstance(scored, Scored)
    assert pruned_counts(topk_mask(0.5, per_module={"b": 0.25})(scored)) == {"a": 2}
    assert pruned_counts(topk_mask(0.5, per_module={"c": 0.25, "b": 0.75})(scored)) == {"a": 6}
    # "c" is a producer of an (unscored) group of the model: not a typo
    assert pruned_counts(topk_mask(0.5, per_module={"c": 0.25})(scored)) == {"a": 4}


def test_per_module_key_matching_no_producer_raises() -> None:
    """A key matching no producer of the model raises InvalidArgumentError with the closest names."""
    scored = quiet(lambda: score_l1(Nested()))
    for key, hint in (("block1.3", "'block1.2'"), ("fc1", "'fc'"), ("layer4.*", "candidates")):
        with pytest.raises(InvalidArgumentError) as info:
            topk_mask(0.5, per_module={key: 0.5})(scored)  # type: ignore[arg-type]
        assert f"'{key}'" in str(info.value) and hint in str(info.value) and "Fix:" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="'c'"):
        topk_mask(0.5, per_module={"c": 0.5}).select_many({"a": torch.ones(2), "b": torch.ones(2)})


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: topk_mask(0.5, per_module={"fc": 1.0}), InvalidArgumentError),
        (lambda: topk_mask(0.5, per_module={"fc": -0.1}), InvalidArgumentError),
        (lambda: topk_mask(0.5, per_module={"fc": math.nan}), InvalidArgumentError),
        (lambda: topk_mask(0.5, per_module={"fc": True}), InvalidTypeError),
        (lambda: topk_mask(0.5, per_module={"fc": "0.5"}), InvalidTypeError),
        (lambda: topk_mask(0.5, per_module={3: 0.5}), InvalidTypeError),
        (lambda: topk_mask(0.5, per_module={"": 0.5}), InvalidTypeError),
        (lambda: topk_mask(0.5, per_module=["fc"]), InvalidTypeError),
        (lambda: topk_mask(0.5, per_module=0.5), InvalidTypeError),
        (lambda: TopK(0.5, per_module=(("fc", 0.1), ("fc", 0.2))), InvalidArgumentError),
    ],
    ids=["1.0", "negative", "nan", "bool", "str value", "int key", "empty key", "list", "float", "duplicate"],
)
def test_per_module_validated_at_construction(build: Callable[[], object], error: type[FpruneError]) -> None:
    """Every per_module key and value is checked when the rule is built, like sparsity."""
    with pytest.raises(error) as info:
        build()
    assert "Fix:" in str(info.value)


def test_per_module_value_repr_and_tensor_level_use() -> None:
    """The rule stays a frozen, hashable value; on one tensor it uses the default sparsity."""
    rule = topk_mask(0.5, per_module={"layer4.*": 0.7, "fc1": 0})
    assert repr(rule) == "topk_mask(sparsity=0.5, per_module={'layer4.*': 0.7, 'fc1': 0.0})"
    assert rule == TopK(0.5, per_module=(("layer4.*", 0.7), ("fc1", 0.0))) and hash(rule) == hash(
        topk_mask(0.5, per_module={"layer4.*": 0.7, "fc1": 0.0}))
    assert repr(topk_mask(0.5, per_module={})) == "topk_mask(sparsity=0.5)"
    scores = torch.arange(10.0)
    assert int(rule(scores).sum()) == 5
    named = topk_mask(0.5, per_module={"b": 0.2}).select_many({"a": scores, "b": scores})
    assert {k: int(v.sum()) for k, v in named.items()} == {"a": 5, "b": 8}


def test_user_written_mask_rules_still_work() -> None:
    """plan_from_scored calls a user's MaskFn with the plain protocol (no producers keyword)."""

    class KeepAll:
        def select(self, scores: Tensor) -> Tensor:
            return torch.ones(scores.numel(), dtype=torch.bool)

        def select_many(self, scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {k: self.select(v) for k, v in scores.items()}

    plan = plan_from_scored(KeepAll(), scored_mlp([4, 6, 2]))  # type: ignore[arg-type]
    assert pruned_counts(plan) == {"0": 0, "2": 0}
    plan = plan_from_scored(threshold_mask(-1.0), scored_mlp([4, 6, 2]))
    assert pruned_counts(plan) == {"0": 0, "2": 0}


def test_readme_pipeline_of_choices() -> None:
    """The composed pipeline of the README section runs and respects every choice."""
    model = Nested()
    pruner = compose_left(
        score_with(score_l1, strict=True),
        ignore(inputs="fc"),
        topk_mask(0.5, per_module={"block1": 0.25}),
        apply_patterns,
    )
    pruned = quiet(lambda: pruner(model))
    assert isinstance(pruned, nn.Module)
    outs = {n: pruned.get_submodule(n).out_features for n in ("block1.0", "block1.2", "block2.0", "block2.2")}
    assert outs == {"block1.0": 6, "block1.2": 6, "block2.0": 4, "block2.2": 6}
    assert pruned(torch.randn(3, 4)).shape == (3, 2)
