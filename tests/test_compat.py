"""fprune.compat against torch.ao.pruning._experimental.pruner, the reference it replaces.

Differential tests run the same model, config and seed through the reference and the adapter
and compare the masks, every parameter of the pruned model (names, shapes, values) and the
outputs; they also check that the adapter's pruned model computes what the prepared (masked)
model computed, which holds wherever the reference is right.  Models: the reference's own
helper models (torch.testing._internal.common_pruning) and hypothesis-drawn chains.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.ao.pruning._experimental.pruner as reference
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.ao.pruning import BaseSparsifier
from torch.nn.utils import parametrize
from torch.testing._internal import common_pruning as cp

import fprune
from fprune import compat
from fprune.errors import (
    FpruneError,
    FpruneWarning,
    InvalidArgumentError,
    InvalidMaskError,
    UnprunableError,
    UnsupportedModelError,
)

MODULES = {"reference": reference, "compat": compat}
# the reference's conv -> flatten -> linear bias propagation warns about its own tensor handling
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")


# ---------------------------------------------------------------------------------------------- helpers


class Functional(nn.Module):
    """Calls a functional activation or pool, so the traced graph holds a call_function node."""

    def __init__(self, fn: Callable[..., Tensor], **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, **self.kwargs)


def random_pruner(base: type) -> type:
    """A pruner dropping int(n * sparsity_level) seeded random rows of each tensor (arbitrary masks)."""

    class RandomPruner(base):  # type: ignore[misc, valid-type]
        def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
            mask = getattr(module.parametrizations, tensor_name)[0].mask
            gen = torch.Generator().manual_seed(kwargs["seed"] + sum(map(ord, kwargs["tensor_fqn"])))
            n = len(mask)
            mask[torch.randperm(n, generator=gen)[: int(n * kwargs["sparsity_level"])]] = False

    return RandomPruner


def gate_pruner(base: type) -> type:
    """Keeps a seeded random half of each gate quarter: different units per gate (like LSTMSaliencyPruner)."""

    class GatePruner(base):  # type: ignore[misc, valid-type]
        def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
            mask = getattr(module.parametrizations, tensor_name)[0].mask
            gen = torch.Generator().manual_seed(kwargs["seed"] + sum(map(ord, kwargs["tensor_fqn"])))
            for quarter in torch.split(mask, len(mask) // 4):
                quarter[torch.randperm(len(quarter), generator=gen)[: len(quarter) // 2]] = False

    return GatePruner


def make(kind: str, module: Any, defaults: Mapping[str, Any]) -> Any:
    """The pruner `kind` from the reference or the adapter, with the same arguments."""
    if kind == "saliency":
        return module.SaliencyPruner(dict(defaults))
    if kind == "lstm":
        return module.LSTMSaliencyPruner(dict(defaults))
    if kind.startswith("fpgm"):
        pruner = module.FPGMPruner(defaults["sparsity_level"], dist=int(kind[-1]))
        pruner.defaults.update({k: v for k, v in defaults.items() if k != "sparsity_level"})
        return pruner
    cls = {"random": random_pruner, "gates": gate_pruner}[kind](module.BaseStructuredSparsifier)
    return cls(dict(defaults))


def flat(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


class Run:
    """One prepare / step / forward / prune of a deep copy of `model`."""

    def __init__(self, module: Any, kind: str, model: nn.Module, config: Any, defaults: Mapping[str, Any],
                 x: Tensor, forward: bool = True) -> None:
        self.model = copy.deepcopy(model)
        self.pruner = make(kind, module, defaults)
        self.pruner.prepare(self.model, copy.deepcopy(config))
        self.pruner.step()
        self.masks = {k: v["mask"].clone() for k, v in self.pruner.state.items()}
        with torch.no_grad():
            self.prepared = flat(self.model(x)) if forward else None
        self.error: Exception | None = None
        self.out: list[Tensor] | None = None
        try:
            self.gm = self.pruner.prune()
            with torch.no_grad():
                self.out = flat(self.gm(x))
        except Exception as exc:  # the reference raises many types, in prune() or in the pruned model
            self.error = exc

    def params(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.model.named_parameters()}


def assert_same(ours: Run, ref: Run, skip: tuple[str, ...] = ()) -> None:
    """Same parameter names, shapes and values, and the same outputs."""
    a = {k: v for k, v in ours.params().items() if not k.startswith(skip)}
    b = {k: v for k, v in ref.params().items() if not k.startswith(skip)}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert ours.out is not None and ref.out is not None
    if not skip:
        for y, z in zip(ours.out, ref.out):
            torch.testing.assert_close(y, z, rtol=1e-4, atol=1e-4)


def kept_outputs(run: Run, head: str | None) -> list[Tensor]:
    """The prepared model's outputs restricted to the output channels the pruned model keeps."""
    assert run.prepared is not None
    if head is None or f"{head}.weight" not in run.masks:
        return run.prepared
    keep = run.masks[f"{head}.weight"]
    dim = 1 if run.prepared[0].dim() == 4 else -1
    return [run.prepared[0].index_select(dim, keep.nonzero().squeeze(1))] + run.prepared[1:]


def differential(kind: str, model: nn.Module, config: Any, defaults: Mapping[str, Any], x: Tensor,
                 head: str | None = None, exact: bool = True) -> None:
    """Runs both; checks masks, exactness against the prepared model, and equality with the reference."""
    ref = Run(reference, kind, model, config, defaults, x)
    ours = Run(compat, kind, model, config, defaults, x)
    assert ours.masks.keys() == ref.masks.keys()
    for k in ref.masks:
        assert torch.equal(ours.masks[k], ref.masks[k]), k
    if any(not bool(m.any()) for m in ours.masks.values()):  # every channel pruned: refused, untouched
        assert isinstance(ours.error, InvalidMaskError)
        assert any(parametrize.is_parametrized(m) for m in ours.model.modules())
        return
    assert ours.error is None, ours.error
    if exact:
        assert ours.out is not None
        for y, z in zip(ours.out, kept_outputs(ours, head)):
            torch.testing.assert_close(y, z, rtol=1e-4, atol=1e-5)
    if ref.error is not None:
        return  # the reference crashed; the adapter's result was checked against the prepared model
    head_bias_lost = (
        head is not None and f"{head}.weight" in ref.masks and not defaults.get("prune_bias", True)
        and getattr(ref.model.get_submodule(head), "_bias", None) is not None
    )
    assert_same(ours, ref, skip=(f"{head}.",) if head_bias_lost else ())


def fresh_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def prepared(kind: str, model: nn.Module, config: Any, **defaults: Any) -> Any:
    pruner = make(kind, compat, {"sparsity_level": 0.5, **defaults})
    pruner.prepare(model, config)
    pruner.step()
    return pruner


# ---------------------------------------------------------------------------------------------- API


def test_exports_and_constructors() -> None:
    """The six reference names are exported, constructed like the reference's, and sparsifiers."""
    assert set(compat.__all__) == {
        "BaseStructuredSparsifier", "SaliencyPruner", "LSTMSaliencyPruner", "FPGMPruner",
        "FakeStructuredSparsity", "BiasHook",
    }
    for pruner in (compat.SaliencyPruner({"sparsity_level": 0.3}), compat.LSTMSaliencyPruner({}),
                   compat.FPGMPruner(), compat.FPGMPruner(0.2, dist=1), compat.FPGMPruner(sparsity_level=0.2, dist=2)):
        assert isinstance(pruner, (compat.BaseStructuredSparsifier, BaseSparsifier))
    assert compat.FPGMPruner(0.3).defaults == {"sparsity_level": 0.3}
    with pytest.raises(TypeError, match="BaseStructuredSparsifier.*update_mask"):
        compat.BaseStructuredSparsifier({})  # type: ignore[abstract]


def test_prepare_registers_masks_bias_and_hooks_like_the_reference() -> None:
    """prepare(): same groups, state layout, parametrizations, _bias and hook as the reference."""
    for module in MODULES.values():
        model = cp.LinearBias()
        pruner = module.SaliencyPruner({"sparsity_level": 0.5, "extra": 3})
        pruner.prepare(model, [{"tensor_fqn": "seq.0.weight", "prune_bias": False}, {"tensor_fqn": "seq.1.weight"}])
        group = pruner.groups[0]
        assert {k: group[k] for k in ("tensor_fqn", "module_fqn", "tensor_name", "extra", "prune_bias")} == {
            "tensor_fqn": "seq.0.weight", "module_fqn": "seq.0", "tensor_name": "weight", "extra": 3, "prune_bias": False}
        assert group["module"] is model.seq[0]
        mask = pruner.state["seq.0.weight"]["mask"]
        p = model.seq[0].parametrizations.weight[0]
        assert type(p).__name__ == "FakeStructuredSparsity" and p.mask is mask and mask.dtype == torch.bool
        assert model.seq[0].bias is None and model.seq[0]._bias.shape == (5,) and model.seq[0].prune_bias is False
        assert [type(h).__name__ for h in model.seq[0]._forward_hooks.values()] == ["BiasHook"]
        assert not hasattr(model.seq[1], "_bias")
        assert pruner.state_dict()["groups"][0].keys() == {"sparsity_level", "extra", "prune_bias", "tensor_fqn"}


def test_config_none_discovers_like_the_reference_and_expands_lstms() -> None:
    """config None: the reference's module order; an LSTM gives its weight_ih/hh (the reference crashes)."""
    for model_cls in (cp.SimpleLinear, cp.Conv2dPoolFlatten, cp.LinearActivationFunctional):
        fqns = []
        for module in MODULES.values():
            pruner = module.SaliencyPruner({"sparsity_level": 0.5})
            pruner.prepare(model_cls(), None)
            fqns.append([g["tensor_fqn"] for g in pruner.groups])
        assert fqns[0] == fqns[1]
    with pytest.raises(AttributeError):
        reference.LSTMSaliencyPruner({"sparsity_level": 0.5}).prepare(cp.LSTMLinearModel(2, 4, 3, 2), None)
    pruner = compat.LSTMSaliencyPruner({"sparsity_level": 0.5})
    pruner.prepare(cp.LSTMLinearModel(2, 4, 3, 2), None)
    assert [g["tensor_fqn"] for g in pruner.groups] == [
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1", "linear.weight"]


def test_prepare_checks_every_entry_before_touching_the_model() -> None:
    """A bad entry raises a clear error and registers nothing (the reference registers the ones before it)."""
    bad_configs = [
        ([{"tensor_fqn": "seq.0.weight"}, {"tensor_fqn": "seq.9.weight"}], InvalidArgumentError),
        ([{"tensor_fqn": "seq.0.weight"}, {"tensor_fqn": "seq.0.weight"}], InvalidArgumentError),
        ([{"tensor_fqn": "seq.0.weight", "module_fqn": "seq.1"}], InvalidArgumentError),
        ([{"tensor_fqn": "seq.0.bias"}], InvalidArgumentError),
        ([{"tensor_fqn": "seq.0.weight", "mask": torch.ones(3, dtype=torch.bool)}], InvalidMaskError),
        ([{"tensor_fqn": "seq.0.weight"}, "seq.1.weight"], TypeError),
    ]
    for config, error in bad_configs:
        model = cp.LinearBias()
        before = fresh_state(model)
        with pytest.raises(error):
            compat.SaliencyPruner({"sparsity_level": 0.5}).prepare(model, config)  # type: ignore[arg-type]
        assert not any(parametrize.is_parametrized(m) for m in model.modules())
        assert_untouched(model, before)
    with pytest.raises(UnsupportedModelError, match="patterns"):
        compat.SaliencyPruner({}, patterns={})


# ---------------------------------------------------------------------------------------------- pruners


def test_pruner_counting_rules() -> None:
    """Saliency prunes int(n*s), FPGM round(n*s), s<=0 keeps all, s>=1 prunes all, LSTM per quarter."""
    weight = torch.arange(1.0, 11.0).repeat(3, 1).T.contiguous()  # rows of norm 3, 6, ..., 30
    for kind, sparsity, expected in (("saliency", 0.25, 10 - 2), ("fpgm2", 0.25, 10 - 2), ("fpgm2", 0.35, 10 - 4),
                                     ("saliency", 0.35, 10 - 3), ("fpgm1", 0.0, 10), ("fpgm1", -1.0, 10),
                                     ("fpgm2", 1.0, 0), ("fpgm2", 3.0, 0)):
        for module in MODULES.values():
            lin = nn.Linear(3, 10)
            with torch.no_grad():
                lin.weight.copy_(weight)
            pruner = make(kind, module, {"sparsity_level": sparsity})
            pruner.prepare(nn.Sequential(lin), None)
            pruner.step()
            assert int(pruner.state["0.weight"]["mask"].sum()) == expected, (kind, sparsity)
    pruner = make("lstm", compat, {"sparsity_level": 0.5})
    pruner.prepare(nn.Sequential(nn.LSTM(2, 6)), [{"tensor_fqn": "0.weight_ih_l0"}])
    pruner.step()
    assert [int(q.sum()) for q in pruner.state["0.weight_ih_l0"]["mask"].split(6)] == [3, 3, 3, 3]


def test_saliency_scores_the_masked_weight_and_masks_only_shrink() -> None:
    """A second step sees the rows pruned by the first as zero rows, as in the reference."""
    masks = []
    for module in MODULES.values():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        pruner = module.SaliencyPruner({"sparsity_level": 0.25})
        pruner.prepare(model, [{"tensor_fqn": "0.weight"}])
        pruner.step()
        first = pruner.state["0.weight"]["mask"].clone()
        pruner.groups[0]["sparsity_level"] = 0.5
        pruner.step()
        second = pruner.state["0.weight"]["mask"]
        assert bool((second <= first).all()) and int(second.sum()) == 4
        masks.append(second.clone())
    assert torch.equal(masks[0], masks[1])


def test_ties_follow_the_reference_while_topk_mask_keeps_its_rule() -> None:
    """Equal saliencies: the adapter drops the rows torch.topk picks; topk_mask drops lower indices first."""
    scores = torch.ones(8)
    assert sorted((-scores).topk(4).indices.tolist()) != [0, 1, 2, 3]  # torch.topk: not lower index first
    masks = []
    for kind in ("saliency", "fpgm2"):
        for module in MODULES.values():
            model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
            with torch.no_grad():
                model[0].weight.fill_(1.0)
            pruner = make(kind, module, {"sparsity_level": 0.5})
            pruner.prepare(model, [{"tensor_fqn": "0.weight"}])
            pruner.step()
            masks.append(pruner.state["0.weight"]["mask"].clone())
        assert torch.equal(masks[-1], masks[-2]), kind
    assert fprune.topk_mask(0.5)(scores).tolist() == [False] * 4 + [True] * 4
    assert masks[0].tolist() != fprune.topk_mask(0.5)(scores).tolist()


def test_fpgm_distance_and_dist_options() -> None:
    """_compute_distance equals the reference's for dist 1, 2 and a callable; other dists are refused."""
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(6, 3, 2, 2, generator=gen)
    for dist in (None, 1, 2, lambda x: torch.cdist(x, x, p=3)):
        ours = compat.FPGMPruner(0.5, dist=dist)._compute_distance(t)
        ref = reference.FPGMPruner(0.5, dist=dist)._compute_distance(t)
        assert torch.equal(ours, ref)
    with pytest.raises(FpruneError):
        compat.FPGMPruner(0.5, dist=3)
    with pytest.raises(ValueError, match="sparsity_level"):
        pruner = compat.SaliencyPruner({})
        pruner.prepare(nn.Sequential(nn.Linear(2, 4)), None)
        pruner.step()


# ---------------------------------------------------------------------------------------------- the reference's helper models

_LINEAR_CONFIGS = [
    (cp.SimpleLinear, ("seq.0", "seq.1", "seq.2"), None), (cp.SimpleLinear, ("seq.0", "seq.1", "seq.2", "linear1"), None),
    (cp.SimpleLinear, ("seq.0", "seq.2"), None), (cp.SimpleLinear, None, "linear2"),
    (cp.LinearBias, ("seq.0", "seq.1"), None), (cp.LinearBias, ("seq.2", "seq.3"), None),
    (cp.LinearBias, ("seq.0", "seq.1", "seq.2"), None), (cp.LinearBias, None, "seq.4"),
    (cp.LinearActivation, ("seq.0", "seq.2", "seq.4", "linear1"), None),
    (cp.LinearActivationFunctional, ("seq.0", "seq.2", "seq.4", "linear1"), None),
    (cp.LinearActivationFunctional, None, "linear3"),
]
_CONV_CONFIGS = [
    (cp.SimpleConv2d, ("seq.0",), None), (cp.SimpleConv2d, ("seq.0", "seq.1", "conv2d1"), None),
    (cp.SimpleConv2d, None, "conv2d2"),
    (cp.Conv2dBias, ("seq.0", "seq.1"), None), (cp.Conv2dBias, ("seq.0", "seq.1", "conv2d1"), None),
    (cp.Conv2dBias, ("seq.0", "seq.1", "seq.2"), None), (cp.Conv2dBias, None, "conv2d2"),
    (cp.Conv2dActivation, ("seq.4",), None), (cp.Conv2dActivation, ("seq.0", "seq.2"), None),
    (cp.Conv2dActivation, ("seq.2", "seq.4"), None), (cp.Conv2dActivation, ("conv2d1",), None),
    (cp.Conv2dPadBias, ("seq.4",), None), (cp.Conv2dPadBias, ("seq.2",), None), (cp.Conv2dPadBias, ("seq.0",), None),
    (cp.Conv2dPadBias, ("seq.6",), None), (cp.Conv2dPadBias, ("seq.8",), None),
    (cp.Conv2dPool, ("seq.0", "seq.3", "conv2d1", "conv2d2"), None), (cp.Conv2dPool, None, "conv2d3"),
    (cp.Conv2dPoolFlattenFunctional, ("seq.0", "seq.3", "conv2d1", "conv2d2"), None),
    (cp.Conv2dPoolFlattenFunctional, None, "fc"),
    (cp.Conv2dPoolFlatten, ("seq.0", "seq.3", "conv2d1", "conv2d2"), None), (cp.Conv2dPoolFlatten, None, "fc"),
]


@pytest.mark.parametrize("model_cls, names, head", _LINEAR_CONFIGS + _CONV_CONFIGS,
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_reference_helper_models(model_cls: type, names: tuple[str, ...] | None, head: str | None) -> None:
    """Each configuration of the reference's own tests (and config None): same masks, shapes, outputs."""
    torch.manual_seed(0)
    model = model_cls().double()
    x = torch.randn((7, 7) if model_cls in {c[0] for c in _LINEAR_CONFIGS} else (2, 1, 12, 12), dtype=torch.float64)
    config = None if names is None else [{"tensor_fqn": f"{n}.weight"} for n in names]
    kinds = ("saliency", "fpgm2", "random") if x.dim() == 2 else ("saliency", "random")  # FPGM on convs: hypothesis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        for kind in kinds:
            for prune_bias in (True, False):
                differential(kind, model, config, {"sparsity_level": 0.4, "prune_bias": prune_bias, "seed": 1}, x, head)


@pytest.mark.parametrize("model_cls", [cp.LSTMLinearModel, cp.LSTMLayerNormLinearModel])
@pytest.mark.parametrize("layers", [1, 2])
def test_reference_lstm_models(model_cls: type, layers: int) -> None:
    """LSTM (-> LayerNorm) -> Linear with per-gate masks: the reference's result, gate by gate."""
    torch.manual_seed(layers)
    model = model_cls(8, 8, 8, layers)
    x = torch.randn(3, 8)
    config = [{"tensor_fqn": f"lstm.weight_{k}_l{i}"} for i in range(layers) for k in ("ih", "hh")]
    for kind in ("lstm", "gates"):
        differential(kind, model, config, {"sparsity_level": 0.5, "seed": 3}, x, exact=False)
    # config None adds the Linear; the reference cannot discover the LSTM, so it is compared with the list
    ours = Run(compat, "lstm", model, None, {"sparsity_level": 0.5}, x)
    ref = Run(reference, "lstm", model, config + [{"tensor_fqn": "linear.weight"}], {"sparsity_level": 0.5}, x)
    assert_same(ours, ref)


# ---------------------------------------------------------------------------------------------- hypothesis: random chains

_ACTS: list[Callable[[], nn.Module] | None] = [
    None, nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.GELU, lambda: Functional(F.relu), lambda: Functional(F.hardtanh)]
_KINDS = ["saliency", "fpgm1", "fpgm2", "random"]
_SPARSITIES = [0.0, 0.25, 0.34, 0.5, 0.75]


def _seeded(model: nn.Module, seed: int, ties: bool) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            if ties and p.dim() > 1 and p.shape[0] > 2:  # duplicate rows: equal scores
                p[1::2] = p[0]
    return model.double()


@st.composite
def mlps(draw: st.DrawFn) -> tuple[nn.Module, list[str], str]:
    n = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(2, 7), min_size=n + 1, max_size=n + 1))
    layers: list[nn.Module] = []
    linears: list[str] = []
    for i in range(n):
        linears.append(str(len(layers)))
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=draw(st.booleans())))
        act = draw(st.sampled_from(_ACTS)) if i < n - 1 else None
        if act is not None:
            layers.append(act())
    model = _seeded(nn.Sequential(*layers), draw(st.integers(0, 2**16)), draw(st.booleans()))
    chosen = draw(st.lists(st.sampled_from(linears), min_size=1, unique=True))
    return model, chosen, linears[-1]


@st.composite
def convnets(draw: st.DrawFn) -> tuple[nn.Module, list[str], str]:
    n = draw(st.integers(1, 3))
    channels = draw(st.lists(st.integers(1, 5), min_size=n + 1, max_size=n + 1))
    layers: list[nn.Module] = []
    convs: list[str] = []
    size = 12
    for i in range(n):
        convs.append(str(len(layers)))
        k, pad = draw(st.sampled_from([(1, 0), (3, 0), (3, 1), (1, 1)]))
        layers.append(nn.Conv2d(channels[i], channels[i + 1], k, padding=pad, bias=draw(st.booleans())))
        size = size - k + 1 + 2 * pad
        if i < n - 1:
            act = draw(st.sampled_from(_ACTS))
            pool = draw(st.sampled_from([None, nn.MaxPool2d, nn.AvgPool2d, "f"])) if size >= 6 else None
            if pool is not None:
                size //= 2
            parts = [act() if act is not None else None,
                     (Functional(F.max_pool2d, kernel_size=2) if pool == "f" else pool(2)) if pool is not None else None]
            if draw(st.booleans()):
                parts.reverse()
            layers += [p for p in parts if p is not None]
    head = str(len(layers) - 1)
    if draw(st.booleans()):  # adaptive pool -> flatten -> linear head
        s = draw(st.integers(1, 2))
        layers += [nn.AdaptiveAvgPool2d(s), draw(st.sampled_from([nn.Flatten(), Functional(torch.flatten, start_dim=1)])),
                   nn.Linear(channels[-1] * s * s, draw(st.integers(2, 4)))]
        head = str(len(layers) - 1)
        convs.append(head)
    model = _seeded(nn.Sequential(*layers), draw(st.integers(0, 2**16)), draw(st.booleans()))
    chosen = draw(st.lists(st.sampled_from(convs), min_size=1, unique=True))
    return model, chosen, head


@given(case=mlps(), kind=st.sampled_from(_KINDS), sparsity=st.sampled_from(_SPARSITIES), prune_bias=st.booleans())
def test_random_mlps_match_the_reference(case: tuple[nn.Module, list[str], str], kind: str, sparsity: float,
                                         prune_bias: bool) -> None:
    """Random Linear chains, configs, pruners and ties: the reference's masks, shapes, outputs."""
    model, chosen, head = case
    x = torch.randn(5, model[0].in_features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = [{"tensor_fqn": f"{n}.weight"} for n in chosen]
    differential(kind, model, config, {"sparsity_level": sparsity, "prune_bias": prune_bias, "seed": 7}, x, head)


@given(case=convnets(), kind=st.sampled_from(_KINDS), sparsity=st.sampled_from(_SPARSITIES), prune_bias=st.booleans())
def test_random_convnets_match_the_reference(case: tuple[nn.Module, list[str], str], kind: str, sparsity: float,
                                             prune_bias: bool) -> None:
    """Random Conv2d chains (padding, pools, flatten heads): the reference's masks, shapes, outputs."""
    model, chosen, head = case
    x = torch.randn(2, model[0].in_channels, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = [{"tensor_fqn": f"{n}.weight"} for n in chosen]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        differential(kind, model, config, {"sparsity_level": sparsity, "prune_bias": prune_bias, "seed": 7}, x, head)


@given(hidden=st.integers(2, 5), layers=st.integers(1, 2), norm=st.booleans(), kind=st.sampled_from(["lstm", "gates"]),
       head=st.booleans(), seed=st.integers(0, 2**16))
def test_random_lstms_match_the_reference(hidden: int, layers: int, norm: bool, kind: str, head: bool, seed: int) -> None:
    """Random LSTM (-> LayerNorm) -> Linear models with per-gate masks: the reference's result."""
    torch.manual_seed(seed)
    model = (cp.LSTMLayerNormLinearModel if norm else cp.LSTMLinearModel)(3, 2 * hidden, 4, layers)
    config = [{"tensor_fqn": f"lstm.weight_{k}_l{i}"} for i in range(layers) for k in ("ih", "hh")]
    config += [{"tensor_fqn": "linear.weight"}] if head else []
    differential(kind, model, config, {"sparsity_level": 0.5, "seed": seed}, torch.randn(4, 3), exact=False)


@given(case=mlps(), sparsity=st.sampled_from([0.25, 0.5]))
def test_adapter_equals_the_core_rewrite(case: tuple[nn.Module, list[str], str], sparsity: float) -> None:
    """prune() gives what fprune.apply_patterns gives for the same masks (the adapter is a shell)."""
    model, chosen, _ = case
    config = [{"tensor_fqn": f"{n}.weight"} for n in chosen]
    pruner = prepared("saliency", copy.deepcopy(model), config, sparsity_level=sparsity)
    masks = {n: pruner.state[f"{n}.weight"]["mask"].clone() for n in chosen}
    clean = copy.deepcopy(model)
    with torch.no_grad():
        for n, m in masks.items():
            clean.get_submodule(n).weight.mul_(m[:, None])
    expected = fprune.apply_patterns(clean, {n: m for n, m in masks.items() if not bool(m.all())}, prune_outputs=True)
    pruned = pruner.prune()
    got = {k: v.shape for k, v in pruned.state_dict().items()}
    assert got == {k: v.shape for k, v in expected.state_dict().items()}
    x = torch.randn(3, model[0].in_features, dtype=torch.float64)
    torch.testing.assert_close(pruned(x), expected(x))


# ---------------------------------------------------------------------------------------------- where the reference fails


def test_output_layer_keeps_its_bias_with_prune_bias_false() -> None:
    """The reference drops a pruned output layer's bias (or crashes if a bias was propagated into it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ref = Run(reference, "saliency", model, [{"tensor_fqn": "2.weight"}], {"sparsity_level": 0.5, "prune_bias": False}, x)
    ours = Run(compat, "saliency", model, [{"tensor_fqn": "2.weight"}], {"sparsity_level": 0.5, "prune_bias": False}, x)
    assert ref.model[2].bias is None and ours.model[2].bias.shape == (2,)
    torch.testing.assert_close(ours.out[0], kept_outputs(ours, "2")[0])  # type: ignore[index]
    assert not torch.allclose(ref.out[0], ours.out[0])  # type: ignore[index]
    crash = Run(reference, "saliency", model, None, {"sparsity_level": 0.5, "prune_bias": False}, x)
    assert crash.error is not None
    differential("saliency", model, None, {"sparsity_level": 0.5, "prune_bias": False}, x, head="2")


def test_bias_free_conv_pool_flatten_linear_with_prune_bias_false() -> None:
    """The reference raises TypeError on a bias-free Conv2d -> pool -> flatten -> Linear; the adapter prunes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    config = [{"tensor_fqn": "0.weight"}]
    assert isinstance(Run(reference, "saliency", model, config, {"sparsity_level": 0.5, "prune_bias": False}, x).error, TypeError)
    ours = Run(compat, "saliency", model, config, {"sparsity_level": 0.5, "prune_bias": False}, x)
    assert ours.model[0].out_channels == 2 and ours.model[3].in_features == 8
    torch.testing.assert_close(ours.out[0], ours.prepared[0])  # type: ignore[index]


def test_padded_conv_result_does_not_depend_on_a_forward() -> None:
    """prune_bias=True before a padded conv: the reference keeps masked bias entries unless a forward ran."""
    torch.manual_seed(0)
    model = cp.Conv2dPadBias()
    config = [{"tensor_fqn": "seq.4.weight"}]  # Conv2d(pad 1, bias) -> ReLU -> Conv2d(pad 1)
    x = torch.randn(1, 1, 12, 12)
    ref_biases, ours_biases = [], []
    for forward in (True, False):
        ref_biases.append(Run(reference, "saliency", model, config, {"sparsity_level": 0.5}, x, forward).model.seq[4].bias)
        ours_biases.append(Run(compat, "saliency", model, config, {"sparsity_level": 0.5}, x, forward).model.seq[4].bias)
    assert not torch.equal(ref_biases[0], ref_biases[1])
    assert torch.equal(ours_biases[0], ours_biases[1]) and torch.equal(ours_biases[0], ref_biases[0])
    assert ours_biases[0].shape == (32,)  # kept whole, as the reference does
    assert int((ours_biases[0] == 0).sum()) == 16  # the masked entries, zeroed as the masked model has them


def test_unmatched_modules_are_pruned_by_the_core() -> None:
    """Linear -> activation -> output (no reference pattern: it raises) is pruned, exactly."""
    torch.manual_seed(0)
    model = cp.LinearActivation().double()
    x = torch.randn(5, 7, dtype=torch.float64)
    ref = Run(reference, "saliency", model, None, {"sparsity_level": 0.5}, x)
    assert ref.error is not None and "FakeStructuredSparsity" in str(ref.error)
    ours = Run(compat, "saliency", model, None, {"sparsity_level": 0.5}, x)
    assert ours.model.linear2.out_features == 5
    torch.testing.assert_close(ours.out[0], kept_outputs(ours, "linear2")[0])  # type: ignore[index]
    assert not any(parametrize.is_parametrized(m) or hasattr(m, "_bias") for m in ours.model.modules())


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.a(x))
        return self.head(h + self.b(h))


class _Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a(x).softmax(-1))


def _random_mask_pruner(masks: Mapping[str, Tensor]) -> Any:
    class Fixed(compat.BaseStructuredSparsifier):
        def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
            getattr(module.parametrizations, tensor_name)[0].mask.copy_(masks[kwargs["tensor_fqn"]])

    return Fixed({})


def test_coupled_and_unprunable_groups_raise_before_touching_the_model() -> None:
    """Residual adds prune when every producer has the same mask; otherwise, and for ops without a rule, a clear error."""
    keep = torch.tensor([True, False, True, True])
    other = torch.tensor([True, True, False, True])
    torch.manual_seed(0)
    model = _Residual().double()
    x = torch.randn(2, 3, dtype=torch.float64)
    pruner = _random_mask_pruner({"a.weight": keep, "b.weight": keep})
    pruner.prepare(model, [{"tensor_fqn": "a.weight"}, {"tensor_fqn": "b.weight"}])
    pruner.step()
    expected = model(x)
    pruned = pruner.prune()
    assert model.a.out_features == 3 and model.head.in_features == 3
    torch.testing.assert_close(pruned(x), expected)
    cases: list[tuple[nn.Module, dict[str, Tensor], type]] = [
        (_Residual(), {"a.weight": keep, "b.weight": other}, InvalidMaskError),
        (_Residual(), {"a.weight": keep}, InvalidMaskError),
        (_Cat(), {"a.weight": keep}, UnprunableError),
        (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)), {"0.weight": keep}, UnprunableError),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), {"0.weight": torch.zeros(4, dtype=torch.bool)},
         InvalidMaskError),
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), {"1.weight": keep}, InvalidMaskError),
    ]
    for model, masks, error in cases:
        pruner = _random_mask_pruner(masks)
        pruner.prepare(model, [{"tensor_fqn": k} for k in masks])
        pruner.step()
        before = fresh_state(model)
        with pytest.raises(error, match="nothing was changed"):
            pruner.prune()
        assert_untouched(model, before)
        assert all(parametrize.is_parametrized(model.get_submodule(k.rpartition(".")[0])) for k in masks)


def test_lstm_configs_the_reference_breaks_are_refused() -> None:
    """An LSTM pruned through weight_ih only, or with gates keeping different counts, raises before any change."""
    model = cp.LSTMLinearModel(2, 4, 3, 1)
    pruner = prepared("lstm", model, [{"tensor_fqn": "lstm.weight_ih_l0"}])
    with pytest.raises(InvalidMaskError, match="weight_hh_l0"):
        pruner.prune()
    model = cp.LSTMLinearModel(2, 4, 3, 1)
    uneven = torch.ones(16, dtype=torch.bool)
    uneven[0] = False
    pruner = _random_mask_pruner({"lstm.weight_ih_l0": uneven, "lstm.weight_hh_l0": uneven})
    pruner.prepare(model, [{"tensor_fqn": "lstm.weight_ih_l0"}, {"tensor_fqn": "lstm.weight_hh_l0"}])
    pruner.step()
    with pytest.raises(InvalidMaskError, match="same number of units"):
        pruner.prune()
    assert parametrize.is_parametrized(model.lstm)


def test_unused_module_is_left_prepared_with_a_warning() -> None:
    """A configured module the forward never calls: warned about and left as prepared, as the reference leaves it."""

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = nn.Linear(2, 4), nn.Linear(2, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x)

    model = Unused()
    pruner = prepared("saliency", model, None)
    with pytest.warns(FpruneWarning, match="spare"):
        pruner.prune()
    assert model.used.out_features == 2 and parametrize.is_parametrized(model.spare)


# ---------------------------------------------------------------------------------------------- state, squash, sharing


def test_prune_shares_modules_and_leaves_the_model_pruned() -> None:
    """The returned GraphModule holds the model's own modules, pruned, without parametrizations or hooks."""
    model = cp.Conv2dBias()
    pruner = prepared("saliency", model, [{"tensor_fqn": "seq.0.weight"}, {"tensor_fqn": "seq.1.weight"}])
    gm = pruner.prune()
    assert gm is pruner.traced and gm.get_submodule("seq.0") is model.seq[0]
    assert model.seq[0].out_channels == 16 and model.seq[1].in_channels == 16
    assert not any(parametrize.is_parametrized(m) or m._forward_hooks for m in model.modules())
    assert pruner.prune().get_submodule("seq.1").weight.shape == model.seq[1].weight.shape  # second prune: no-op


def test_state_dict_round_trip() -> None:
    """load_state_dict puts the masks into a fresh prepared model (the reference breaks its forward)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    pruner = prepared("saliency", copy.deepcopy(model), None)
    saved = pruner.state_dict()
    saved_copy = copy.deepcopy(saved)
    other = compat.SaliencyPruner({"sparsity_level": 0.5})
    target = copy.deepcopy(model)
    other.prepare(target, None)
    other.load_state_dict(saved)
    assert [g["tensor_fqn"] for g in other.groups] == ["0.weight", "2.weight"]
    for fqn, state in other.state.items():
        p = other.groups[[g["tensor_fqn"] for g in other.groups].index(fqn)]["module"].parametrizations.weight[0]
        assert state["mask"] is p.mask and torch.equal(p.mask, saved["state"][fqn]["mask"])
    assert saved.keys() == saved_copy.keys() and all(torch.equal(saved["state"][k]["mask"], saved_copy["state"][k]["mask"])
                                                     for k in saved["state"])
    x = torch.randn(2, 4)
    torch.testing.assert_close(target(x), pruner.model(x))
    torch.testing.assert_close(other.prune()(x), pruner.prune()(x))


def test_squash_mask_bakes_masks_and_keeps_the_function() -> None:
    """squash_mask: weights masked in place, same outputs, sparse_params attached; after prune() a no-op."""
    torch.manual_seed(0)
    model = cp.LinearActivation()
    pruner = prepared("saliency", model, [{"tensor_fqn": "seq.0.weight"}])
    x = torch.randn(3, 7)
    expected = model(x)
    pruner.squash_mask(params_to_keep=("sparsity_level",))
    assert not parametrize.is_parametrized(model.seq[0]) and model.seq[0].sparse_params == {"sparsity_level": 0.5}
    assert int((model.seq[0].weight.abs().sum(1) == 0).sum()) == 2
    torch.testing.assert_close(model(x), expected)
    pruner = prepared("saliency", cp.SimpleLinear(), None)
    pruner.prune()
    pruner.squash_mask()


def test_bias_hook_adds_along_the_channel_dimension() -> None:
    """A prepared Linear on rank-3 input adds its bias on the last dim (the reference's hook uses dim 1)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    expected = lin(torch.ones(2, 5, 4))
    pruner = compat.SaliencyPruner({"sparsity_level": 0.0})
    pruner.prepare(nn.Sequential(lin), None)
    torch.testing.assert_close(lin(torch.ones(2, 5, 4)), expected)


def test_mixed_prune_bias() -> None:
    """prune_bias differing per entry (two core passes): the reference's shapes; exact where it is not.

    The reference rebuilds the bias of a Linear pruned with prune_bias=True from its original
    ``_bias``, losing what a prune_bias=False producer folded into it; the adapter keeps it.
    """
    torch.manual_seed(0)
    model = cp.LinearActivation().double()
    x = torch.randn(4, 7, dtype=torch.float64)
    config = [{"tensor_fqn": "seq.0.weight", "prune_bias": False}, {"tensor_fqn": "seq.2.weight"},
              {"tensor_fqn": "seq.4.weight", "prune_bias": False}, {"tensor_fqn": "linear1.weight", "prune_bias": True}]
    differential("saliency", model, config[:3], {"sparsity_level": 0.4}, x)
    ours = Run(compat, "saliency", model, config, {"sparsity_level": 0.4}, x)
    ref = Run(reference, "saliency", model, config, {"sparsity_level": 0.4}, x)
    torch.testing.assert_close(ours.out[0], ours.prepared[0])  # type: ignore[index]
    a, b = ours.params(), ref.params()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert [k for k in a if not torch.allclose(a[k], b[k])] == ["linear1.bias"]


def test_documented_difference_sigmoid_of_a_bias_free_producer() -> None:
    """prune_bias=False, no bias, sigmoid: the adapter folds sigmoid(0) into the consumer (the reference drops it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    defaults = {"sparsity_level": 0.5, "prune_bias": False}
    ours = Run(compat, "saliency", model, [{"tensor_fqn": "0.weight"}], defaults, x)
    ref = Run(reference, "saliency", model, [{"tensor_fqn": "0.weight"}], defaults, x)
    torch.testing.assert_close(ours.out[0], ours.prepared[0])  # type: ignore[index]
    assert not torch.allclose(ref.out[0], ref.prepared[0])  # type: ignore[index]


class _LinearLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.lstm, self.head = nn.Linear(3, 4), nn.LSTM(4, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(torch.relu(self.inp(x)))
        return self.head(out)


@pytest.mark.parametrize("prune_bias", [True, False])
def test_linear_feeding_a_per_gate_lstm(prune_bias: bool) -> None:
    """Linear -> LSTM (no reference pattern): the LSTM's input follows what the core did to the Linear."""
    torch.manual_seed(0)
    model = _LinearLSTM()
    config = [{"tensor_fqn": "inp.weight"}, {"tensor_fqn": "lstm.weight_ih_l0"}, {"tensor_fqn": "lstm.weight_hh_l0"}]
    pruner = make("gates", compat, {"sparsity_level": 0.5, "seed": 0, "prune_bias": prune_bias})
    pruner.prepare(model, config)
    with torch.no_grad():  # drop half of the Linear's outputs too
        model.inp.parametrizations.weight[0].mask[:2] = False
    pruner.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FpruneWarning)
        gm = pruner.prune()
    assert gm(torch.randn(5, 3)).shape == (5, 2)
    width = 2 if prune_bias else 4  # fold_bias keeps a group read by an LSTM whole (rows zeroed)
    assert model.inp.out_features == width and model.lstm.input_size == width
    assert model.lstm.weight_ih_l0.shape == (8, width) and model.lstm.hidden_size == 2 and model.head.in_features == 2


def test_groups_pruned_in_whole_units_are_refused_before_any_change() -> None:
    """Attention heads cannot take the torch.ao API's per-channel masks: a clear error, model untouched.

    (Once an IndexError from inside the rewrite.)
    """
    from model_strategies import randomised
    from test_structures import AttentionNet

    model = randomised(AttentionNet(4, 2, "unbind"), 0).float()
    pruner = compat.SaliencyPruner({"sparsity_level": 0.5})
    pruner.prepare(model, [{"tensor_fqn": "attn.qkv.weight"}])
    pruner.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="whole units"):
        pruner.prune()
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
