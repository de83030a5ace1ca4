"""Benchmark: fprune against Torch-Pruning 1.6.1 on real architectures (issue: dependency-aware pruning).

Runs only under the benchmark environment ``.venv-bench`` (built by
``benchmarks/setup_bench_env.sh``: timm, torch-pruning and torchvision installed ``--no-deps``
beside a CPU torch).  Never part of the library or the default test run.

Models: the hand-written ones in ``tests/models.py`` (whatever exists: every ``nn.Module`` class
defined there that builds without arguments), timm's ``resnet18``, ``mobilenetv3_small_100``,
``vit_tiny_patch16_224`` and ``regnetx_002`` (grouped convolutions) (``pretrained=False``: nothing
is downloaded), a 6-block Transformer encoder on torch's own ``nn.MultiheadAttention`` (ViT-Tiny
sizes), and a 512-layer MLP (``Linear(64, 64)`` + ``ReLU``).  For each, at 50% channel sparsity with L1 scores:

* **fprune**: the whole pipeline ``pipe(model, score_l1, topk_mask(0.5), apply_patterns)``
  (trace, groups, scores, masks, rewrite) is timed, and beside it the **floor**: one
  ``torch.fx.symbolic_trace`` plus one forward pass with ``ShapeProp`` on the example input.
  Untimed: the channel groups (``analyze(trace(model)).groups``), how many are prunable, the
  reasons of the others (``why_not``, summarised by op), parameters and MACs before/after
  (``fprune.summary``), and the exactness error ``max |pruned(x) - zeroed(x)|`` where ``zeroed``
  is a copy of the original with every slice of ``plan.params()`` set to zero.
* **Torch-Pruning**: ``MetaPruner`` with ``MagnitudeImportance(p=1)``, ``pruning_ratio=0.5``,
  the classifier head ignored (for the hand-written models and the MLP: the producers whose
  channels reach the output, the layers fprune leaves alone by default); for ViT, TP's documented
  recipe for timm attention (a forward that reshapes with ``num_heads``, ``num_heads={qkv: heads}``,
  head dims pruned, ``num_heads`` / ``head_dim`` updated afterwards).  Timed: building the pruner
  and ``step()`` (the ``deepcopy`` of the model is made outside the timer).  Untimed: its groups,
  MACs and parameters (``tp.utils.count_ops_and_params``) and, because the indices it removes can
  be read from its groups, the same exactness error against the original with those indices zeroed.

Both pruned models are then timed on CPU (median forward latency, batch 8 for the 224x224
models); "efficiency" is latency speedup divided by MAC reduction, with the MACs of each tool's
result counted by one counter (Torch-Pruning's, which runs on any module) so the two are
comparable.  All timings are interleaved (the order rotates every repetition), with one torch
thread and the garbage collector off inside each timed call.

Usage (from the repository root)::

    bash benchmarks/setup_bench_env.sh                       # once
    .venv-bench/bin/python benchmarks/bench_architectures.py [--quick] [--markdown OUT.md]

``--markdown`` writes the tables and verdicts to a file; ``--append RESULTS.md`` appends them to it
in one write.
"""

from __future__ import annotations

import sys
import types

# torchvision from PyPI is CUDA-linked: these two modules register kernels through its C
# extension.  Stub them before anything imports torchvision (timm does).
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import argparse  # noqa: E402
import collections  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at run time

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.fx.passes.shape_prop import ShapeProp  # noqa: E402

torch.set_num_threads(1)

import timm  # noqa: E402
import torch_pruning as tp  # noqa: E402
from toolz import pipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fprune  # noqa: E402
from fprune import apply_patterns, score_l1, topk_mask  # noqa: E402

try:
    from fprune.summary import count_macs, count_params
except ImportError:  # older checkouts
    count_macs = None  # type: ignore[assignment]

    def count_params(model: nn.Module) -> int:  # type: ignore[misc]
        return sum(p.numel() for p in model.parameters())


SPARSITY = 0.5
TARGET_FLOOR = 2.0  # fprune total time within 2x of the floor
TARGET_MLP_SPEEDUP = 10.0  # >= 10x faster than Torch-Pruning on the 512-layer MLP
MIN_REDUCTION = 1.05  # below this MAC reduction, speedup / reduction is noise (N/A)
FASTER_ON = ("timm/resnet18", "timm/vit_tiny_patch16_224")


# --------------------------------------------------------------------------------------
# Timing


def _clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def timed(fn: Callable[[], Any], clock: Callable[[], float]) -> tuple[float, Any]:
    """Seconds one call takes (gc off inside, as timeit does), and its result.

    ``main`` freezes the objects alive at start (``gc.freeze``) so the collection before each call is cheap.
    """
    gc.collect()
    gc.disable()
    try:
        t0 = clock()
        out = fn()
        return clock() - t0, out
    finally:
        gc.enable()


def median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------
# Models


@dataclass
class Spec:
    name: str
    family: str  # "zoo" | "mlp" | "timm" | "torch"
    build: Callable[[], nn.Module]  # a fresh, deterministic model in eval mode
    make_input: Callable[[int], Tensor]  # batch size -> an input
    exact_dtype: torch.dtype  # dtype of the exactness check
    heads: Callable[[nn.Module], list[nn.Module]] | None = None  # TP's ignored layers (None: the output producers)
    reps: int = 5  # timed repetitions
    latency_batch: int = 64
    latency_rounds: int = 21
    vit: bool = False
    note: str = ""


def _seeded_input(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def timm_spec(name: str, reps: int, vit: bool = False) -> Spec:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False).eval()

    return Spec(
        name=f"timm/{name}", family="timm", build=build,
        make_input=lambda b: _seeded_input((b, 3, 224, 224), torch.float32),
        exact_dtype=torch.float32, heads=lambda m: [m.get_classifier()], reps=reps,
        latency_batch=8, latency_rounds=7, vit=vit,
    )


class _EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block around torch's own nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class _MHAEncoder(nn.Module):
    """Token embedding, `depth` encoder blocks with nn.MultiheadAttention, mean-pooled Linear head."""

    def __init__(self, depth: int = 6, dim: int = 192, heads: int = 3, hidden: int = 768) -> None:
        super().__init__()
        self.embed = nn.Linear(64, dim)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(1))


def mha_spec(reps: int) -> Spec:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return _MHAEncoder().eval()

    return Spec(
        name="torch/mha_encoder", family="torch", build=build,
        make_input=lambda b: _seeded_input((b, 197, 64), torch.float32),
        exact_dtype=torch.float32, heads=lambda m: [m.head], reps=reps, latency_batch=8, latency_rounds=7,
        note="6 pre-norm blocks, dim 192, 3 heads of nn.MultiheadAttention (ViT-Tiny sizes), 197 tokens",
    )


def mlp_spec(depth: int, reps: int) -> Spec:
    def build() -> nn.Module:
        g = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        for i in range(depth):
            lin = nn.Linear(64, 64)
            with torch.no_grad():  # He init: the output keeps its scale through 512 ReLUs
                lin.weight.copy_(torch.randn(64, 64, generator=g) * (2 / 64) ** 0.5)
                lin.bias.copy_(torch.randn(64, generator=g) * 0.01)
            layers.append(lin)
            if i < depth - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers).eval()

    return Spec(
        name=f"mlp{depth}", family="mlp", build=build,
        make_input=lambda b: _seeded_input((b, 64), torch.float32),
        exact_dtype=torch.float64, heads=lambda m: [list(m)[-1]], reps=reps, latency_batch=512,
        latency_rounds=15,
    )


def _load_zoo() -> Any:
    path = ROOT / "tests" / "models.py"
    if not path.exists():
        return None
    if "models" in sys.modules and getattr(sys.modules["models"], "__file__", None) == str(path):
        return sys.modules["models"]
    spec = importlib.util.spec_from_file_location("models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["models"] = module
    spec.loader.exec_module(module)
    return module


def _registered_shapes(zoo: Any) -> dict[str, tuple[int, ...]]:
    """Input shapes given by the zoo itself: any dict name -> (constructor, shape)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in vars(zoo).values():
        if isinstance(value, dict):
            for key, item in value.items():
                if (isinstance(key, str) and isinstance(item, tuple) and len(item) == 2
                        and callable(item[0]) and isinstance(item[1], tuple)):
                    shapes[key] = item[1]
    return shapes


def _infer_input(model: nn.Module) -> Callable[[int], Tensor] | None:
    """An input maker from the first module reading the model's input."""
    gm = torch.fx.symbolic_trace(model)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    modules = dict(gm.named_modules())
    frontier, seen = list(placeholders[0].users), set()
    while frontier:
        node = frontier.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module":
            m = modules[str(node.target)]
            dtype = next((p.dtype for p in model.parameters()), torch.float32)
            if isinstance(m, nn.Linear):
                return lambda b, f=m.in_features, d=dtype: _seeded_input((b, f), d)
            if isinstance(m, nn.Conv1d):
                return lambda b, c=m.in_channels, d=dtype: _seeded_input((b, c, 32), d)
            if isinstance(m, nn.Conv2d):
                return lambda b, c=m.in_channels, d=dtype: _seeded_input((b, c, 16, 16), d)
            if isinstance(m, nn.Conv3d):
                return lambda b, c=m.in_channels, d=dtype: _seeded_input((b, c, 8, 8, 8), d)
            if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
                if m.batch_first:
                    return lambda b, f=m.input_size, d=dtype: _seeded_input((b, 5, f), d)
                return lambda b, f=m.input_size, d=dtype: _seeded_input((5, b, f), d)
            if isinstance(m, nn.Embedding):
                return lambda b, n=m.num_embeddings: torch.randint(0, n, (5, b), generator=torch.Generator().manual_seed(0))
        frontier.extend(node.users)
    return None


def zoo_specs(skipped: list[str]) -> list[Spec]:
    zoo = _load_zoo()
    if zoo is None:
        skipped.append("tests/models.py: not found")
        return []
    shapes = _registered_shapes(zoo)
    specs: list[Spec] = []
    names = getattr(zoo, "__all__", None) or [n for n in vars(zoo) if not n.startswith("_")]
    for name in names:
        cls = getattr(zoo, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == zoo.__name__):
            continue
        if name == "Chain":
            continue  # the building block of the random chains, not an architecture
        try:
            params = inspect.signature(cls.__init__).parameters.values()
            if any(p.default is inspect.Parameter.empty and p.name != "self"
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                skipped.append(f"zoo/{name}: needs constructor arguments")
                continue

            def build(cls: type = cls) -> nn.Module:
                torch.manual_seed(0)
                model = cls()
                seeded = getattr(zoo, "seeded", None)
                return seeded(model, 0) if seeded is not None else model.double().eval()

            if name in shapes:
                shape = shapes[name]
                make = lambda b, s=shape: _seeded_input((b,) + s[1:], torch.float64)  # noqa: E731
            else:
                maybe = _infer_input(build())
                if maybe is None:
                    skipped.append(f"zoo/{name}: cannot infer an input shape")
                    continue
                make = maybe
            with torch.no_grad():
                build()(make(2))  # runs
        except Exception as exc:  # noqa: BLE001 - a zoo entry in progress
            skipped.append(f"zoo/{name}: {type(exc).__name__}: {exc}")
            continue
        specs.append(Spec(name=f"zoo/{name}", family="zoo", build=build, make_input=make,
                          exact_dtype=torch.float64, reps=11, latency_batch=64, latency_rounds=21))
    return specs


# --------------------------------------------------------------------------------------
# fprune


def reason_key(gm: torch.fx.GraphModule, message: str, node_name: str) -> str:
    """A block message with the node's own name replaced by its op, so equal causes count together."""
    nodes = {n.name: n for n in gm.graph.nodes}
    node = nodes.get(node_name)
    why = message
    label = node_name
    if node is not None:
        prefix = fprune.groups.describe(node) + ": "
        if message.startswith(prefix):
            why = message[len(prefix):]
        if node.op == "call_module":
            label = f"call_module {type(gm.get_submodule(str(node.target))).__name__}"
        elif node.op == "call_function":
            label = f"call_function {getattr(node.target, '__name__', repr(node.target))}"
        else:
            label = f"{node.op} {node.target}"
    why = re.sub(r"'[A-Za-z_][\w]*(\.[\w]+)+'", "'<module>'", why)
    why = re.sub(r"groups=\d+", "groups=N", why)
    return f"{label}: {why}"


@dataclass
class FpruneResult:
    groups: int | None = None
    prunable: int | None = None
    reasons: list[tuple[int, str]] = field(default_factory=list)  # (number of groups, reason)
    error: str | None = None  # exception raised by the pipeline or the analysis
    warnings: int = 0
    pruned: nn.Module | None = None
    params: tuple[int, int] | None = None
    macs: tuple[int, int] | None = None  # fprune's counter
    tp_macs: tuple[float, float] | None = None  # Torch-Pruning's counter, for the efficiency ratio
    err: float | None = None
    scale: float | None = None
    groups_pruned: int = 0


def fprune_untimed(spec: Spec, model: nn.Module, x: Tensor, x_check: Tensor) -> FpruneResult:
    r = FpruneResult()
    try:
        gm = fprune.trace(model)
        groups = fprune.analyze(gm).groups
    except Exception as exc:  # noqa: BLE001
        r.error = f"{type(exc).__name__}: {exc}"
        return r
    r.groups = len(groups)
    r.prunable = sum(g.prunable() for g in groups)
    counts: collections.Counter[str] = collections.Counter()
    options = fprune.Options()
    for g in groups:
        if g.prunable():
            continue
        keys = {reason_key(gm, b.message, b.node) for b in g.blocks if not options.tolerates(b.kind)}
        counts.update(keys)
    r.reasons = [(n, k) for k, n in counts.most_common()]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = pipe(model, score_l1, topk_mask(SPARSITY))
            pruned = apply_patterns(plan)
        r.warnings = sum(issubclass(w.category, fprune.errors.FpruneWarning) for w in caught)
    except Exception as exc:  # noqa: BLE001
        r.error = f"{type(exc).__name__}: {exc}"
        return r
    r.pruned = pruned
    r.groups_pruned = sum(1 for m in plan.masks.values() if not bool(m.all()))
    r.params = (count_params(model), count_params(pruned))
    if count_macs is not None:
        try:
            r.macs = (count_macs(model, x), count_macs(pruned, x))
        except Exception as exc:  # noqa: BLE001
            r.macs = None
            print(f"  [fprune count_macs failed: {type(exc).__name__}: {exc}]")
    zeroed = copy.deepcopy(model)
    state = dict(zeroed.named_parameters()) | dict(zeroed.named_buffers())
    with torch.no_grad():
        for fqn, entries in plan.params().items():
            t = state[fqn]
            for e in entries:
                remove = torch.ones(t.shape[e["dim"]], dtype=torch.bool)
                remove[e["keep"]] = False
                t.index_fill_(e["dim"], remove.nonzero().squeeze(1), 0)
    r.err, r.scale = output_error(copy.deepcopy(pruned), zeroed, x_check, spec.exact_dtype)
    return r


def output_error(pruned: nn.Module, reference: nn.Module, x: Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """max |pruned(x) - reference(x)| and max |reference(x)|, both models cast to `dtype`."""
    pruned, reference = pruned.to(dtype).eval(), reference.to(dtype).eval()
    x = x.to(dtype) if x.is_floating_point() else x
    with torch.no_grad():
        a, b = pruned(x), reference(x)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    return float((a - b).abs().max()), float(b.abs().max())


def fprune_pipeline(model: nn.Module) -> nn.Module:
    return pipe(model, score_l1, topk_mask(SPARSITY), apply_patterns)


def floor(model: nn.Module, x: Tensor) -> None:
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)


# --------------------------------------------------------------------------------------
# Torch-Pruning


def _vit_attention_forward(self: Any, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """timm Attention's forward as Torch-Pruning's ViT example rewrites it: the reshapes follow
    num_heads / head_dim (updated after pruning) instead of the input width."""
    B, N, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    if self.fused_attn:
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    else:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        x = self.attn_drop(attn.softmax(dim=-1)) @ v
    x = x.transpose(1, 2).reshape(B, N, -1)
    x = self.norm(x)
    if gate is not None:
        x = x * gate
    return self.proj_drop(self.proj(x))


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    from timm.layers.attention import Attention

    return [m for m in model.modules() if isinstance(m, Attention)]


def tp_prepare(spec: Spec, model: nn.Module) -> dict[str, Any]:
    """Keyword arguments for the pruner; patches the attention forward (ViT) on `model` itself."""
    kwargs: dict[str, Any] = {}
    if spec.vit:
        num_heads = {}
        for m in _attention_modules(model):
            m.forward = _vit_attention_forward.__get__(m, type(m))
            num_heads[m.qkv] = m.num_heads
        kwargs.update(num_heads=num_heads, prune_num_heads=False, prune_head_dims=True)
    return kwargs


def tp_finish(spec: Spec, model: nn.Module, pruner: Any) -> None:
    if spec.vit:
        for m in _attention_modules(model):
            m.num_heads = pruner.num_heads[m.qkv]
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.num_heads * m.head_dim


def tp_ignored(spec: Spec, model: nn.Module, heads_by_name: list[str]) -> list[nn.Module]:
    if spec.heads is not None:
        return spec.heads(model)
    return [model.get_submodule(n) for n in heads_by_name]


def tp_run(spec: Spec, model: nn.Module, x: Tensor, heads_by_name: list[str], interactive: bool = False) -> Any:
    """Prunes `model` in place with Torch-Pruning; returns the pruner (and the removed slices if interactive)."""
    kwargs = tp_prepare(spec, model)
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=SPARSITY,
        ignored_layers=tp_ignored(spec, model, heads_by_name), **kwargs,
    )
    removed: list[tuple[Any, str, Any, list[int], str | None]] | None = None
    if interactive:
        removed = []
        pruner.groups_found = sum(1 for _ in pruner.DG.get_all_groups(
            ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types))
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                plain = tp._helpers.to_plain_idxs(idxs) if idxs and isinstance(idxs[0], tp._helpers._HybridIndex) else list(idxs)
                pname = pruner.DG._param_to_name.get(dep.target.module) if dep.target.type == tp.ops.OPTYPE.PARAMETER else None
                removed.append((dep.target, dep.handler.__name__, dep.target.module, plain, pname))
            group.prune()
    else:
        pruner.step()
    tp_finish(spec, model, pruner)
    return pruner, removed


def tp_zeroed(original: nn.Module, tp_copy_names: dict[int, str], removed: list[Any]) -> tuple[nn.Module | None, str]:
    """A copy of the original with every slice Torch-Pruning removed set to zero; None and why if unmapped."""
    zeroed = copy.deepcopy(original)
    OP = tp.ops.OPTYPE

    def zero(t: Tensor | None, dim: int, idxs: list[int]) -> None:
        if t is not None and idxs:
            t.index_fill_(dim, torch.tensor(idxs, dtype=torch.long), 0)

    with torch.no_grad():
        for target, handler, module, idxs, pname in removed:
            kind = target.type
            if kind == OP.PARAMETER:
                name = pname
                if name is None:
                    return None, "an unwrapped parameter it prunes has no name"
                zero(zeroed.get_parameter(name), target.pruning_dim, idxs)
                continue
            if kind in (OP.ELEMENTWISE, OP.CONCAT, OP.SPLIT, OP.RESHAPE, OP.UNBIND, OP.EXPAND, OP.SLICE,
                        OP.OUTPUT, OP.CUSTOMIZED) and not any(True for _ in module.parameters(recurse=False)):
                continue  # no tensor of its own
            name = tp_copy_names.get(id(module))
            if name is None:
                return None, f"cannot map {type(module).__name__}"
            m = zeroed.get_submodule(name)
            out = handler == "prune_out_channels"
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                if m.groups == 1:
                    zero(m.weight, 0 if out else 1, idxs)
                    if out:
                        zero(m.bias, 0, idxs)
                elif m.groups == m.in_channels == m.out_channels:
                    zero(m.weight, 0, idxs)
                    zero(m.bias, 0, idxs)
                else:
                    return None, f"grouped conv {name}"
            elif isinstance(m, nn.Linear):
                zero(m.weight, 0 if out else 1, idxs)
                if out:
                    zero(m.bias, 0, idxs)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean, m.running_var):
                    zero(t, 0, idxs)
            elif isinstance(m, nn.LayerNorm):
                zero(m.weight, -1, idxs)
                zero(m.bias, -1, idxs)
            elif isinstance(m, nn.Embedding):
                zero(m.weight, 1, idxs)
            elif isinstance(m, nn.PReLU):
                if m.num_parameters > 1:
                    zero(m.weight, 0, idxs)
            else:
                return None, f"no zeroing rule for {type(m).__name__}"
    return zeroed, ""


@dataclass
class TPResult:
    groups: int | None = None
    error: str | None = None
    pruned: nn.Module | None = None
    params: tuple[float, float] | None = None
    macs: tuple[float, float] | None = None  # Torch-Pruning's counter
    err: float | None = None
    scale: float | None = None
    err_note: str = ""


def tp_untimed(spec: Spec, model: nn.Module, x: Tensor, x_check: Tensor, heads_by_name: list[str]) -> TPResult:
    r = TPResult()
    try:
        work = copy.deepcopy(model)
        names = {id(m): n for n, m in work.named_modules()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner, removed = tp_run(spec, work, x, heads_by_name, interactive=True)
            r.groups = pruner.groups_found
            base_macs, base_params = tp.utils.count_ops_and_params(model, x)
            macs, params = tp.utils.count_ops_and_params(work, x)
    except Exception as exc:  # noqa: BLE001
        r.error = f"{type(exc).__name__}: {exc}"
        return r
    r.pruned = work
    r.params = (base_params, params)
    r.macs = (base_macs, macs)
    zeroed, why = tp_zeroed(model, names, removed or [])
    if zeroed is None:
        r.err_note = f"n/a ({why})"
        return r
    try:
        r.err, r.scale = output_error(copy.deepcopy(work), zeroed, x_check, spec.exact_dtype)
    except Exception as exc:  # noqa: BLE001
        r.err_note = f"n/a ({type(exc).__name__}: {exc})"
    return r


# --------------------------------------------------------------------------------------
# Latency


def latency(models: dict[str, nn.Module], x: Tensor, rounds: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds of one forward of each model, interleaved (the order rotates)."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()  # for the whole loop: one collection costs more than a small model's forward
    try:
        with torch.no_grad():
            for n in names:
                models[n](x)  # warm-up
            for r in range(rounds):
                for n in names[r % len(names):] + names[: r % len(names)]:
                    t0 = clock()
                    models[n](x)
                    times[n].append(clock() - t0)
    finally:
        gc.enable()
    return {n: statistics.median(v) for n, v in times.items()}


# --------------------------------------------------------------------------------------
# One model


@dataclass
class Row:
    spec: Spec
    fp: FpruneResult
    tpr: TPResult
    fp_ms: float = float("nan")
    floor_ms: float = float("nan")
    tp_ms: float = float("nan")
    fp_ratio: float = float("nan")  # median of per-rep fprune / floor
    tp_speedup: float = float("nan")  # median of per-rep TP / fprune
    reps: int = 0
    lat: dict[str, float] = field(default_factory=dict)
    fp_eff: float | None = None
    tp_eff: float | None = None
    seconds: float = 0.0


def output_producers(model: nn.Module) -> list[str]:
    """The producers whose channels reach the output (fprune's "output" blocks): TP's ignored layers."""
    try:
        groups = fprune.analyze(fprune.trace(model)).groups
        names = [p for g in groups if any(b.kind == "output" for b in g.blocks) for p in g.producers]
        if names:
            return names
    except Exception:  # noqa: BLE001
        pass
    last = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LSTM))]
    return last[-1:]


def bench(spec: Spec, clock_kind: str, reps_override: int | None) -> Row:
    started = time.perf_counter()
    clock = _clock(clock_kind)
    model = spec.build()
    x = spec.make_input(1)
    x_check = spec.make_input(2)
    heads = output_producers(model) if spec.heads is None else []
    fp = fprune_untimed(spec, model, x, x_check)
    tpr = tp_untimed(spec, model, x, x_check, heads)
    row = Row(spec, fp, tpr)
    reps = reps_override or spec.reps
    fp_t: list[float] = []
    fl_t: list[float] = []
    tp_t: list[float] = []
    fp_ratio: list[float] = []
    tp_ratio: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(reps):
            work = copy.deepcopy(model) if tpr.error is None else None  # outside the timer
            this: dict[str, float] = {}
            runs: list[tuple[str, Callable[[], Any]]] = [("floor", lambda: floor(model, x))]
            if fp.error is None:
                runs.append(("fprune", lambda: fprune_pipeline(model)))
            if work is not None:
                runs.append(("tp", lambda w=work: tp_run(spec, w, x, heads)))
            k = r % len(runs)
            for name, fn in runs[k:] + runs[:k]:
                this[name], _ = timed(fn, clock)
            del work
            fl_t.append(this["floor"])
            if "fprune" in this:
                fp_t.append(this["fprune"])
                fp_ratio.append(this["fprune"] / this["floor"])
            if "tp" in this:
                tp_t.append(this["tp"])
                if "fprune" in this:
                    tp_ratio.append(this["tp"] / this["fprune"])
    row.reps = reps
    row.fp_ms, row.floor_ms, row.tp_ms = median_ms(fp_t), median_ms(fl_t), median_ms(tp_t)
    row.fp_ratio = statistics.median(fp_ratio) if fp_ratio else float("nan")
    row.tp_speedup = statistics.median(tp_ratio) if tp_ratio else float("nan")
    # One MAC counter for both results (Torch-Pruning's runs on any module).
    if fp.pruned is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base, _ = tp.utils.count_ops_and_params(model, x)
                after, _ = tp.utils.count_ops_and_params(fp.pruned, x)
            fp.tp_macs = (base, after)
        except Exception as exc:  # noqa: BLE001
            print(f"  [TP counter on fprune's result failed: {type(exc).__name__}: {exc}]")
    # Latency, interleaved.
    xl = spec.make_input(spec.latency_batch)
    models: dict[str, nn.Module] = {"original": model}
    try:  # the unpruned model as a GraphModule: separates fx's call overhead from the pruning gain
        models["original_fx"] = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001
        pass
    if fp.pruned is not None:
        models["fprune"] = fp.pruned
    if tpr.pruned is not None:
        models["tp"] = tpr.pruned
    row.lat = latency(models, xl, spec.latency_rounds, clock)

    def eff(macs: tuple[float, float] | None, key: str) -> float | None:
        if not macs or key not in row.lat or not macs[1]:
            return None
        return (row.lat["original"] / row.lat[key]) / (macs[0] / macs[1])

    row.fp_eff = eff(fp.tp_macs, "fprune")
    row.tp_eff = eff(tpr.macs, "tp")
    fp.pruned = tpr.pruned = None  # measured: free them
    row.seconds = time.perf_counter() - started
    return row


# --------------------------------------------------------------------------------------
# Report


def _n(v: float | int | None) -> str:
    if v is None:
        return "-"
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.4g}"


def _pair(p: tuple[float, float] | None) -> str:
    if not p:
        return "-"
    return f"{_n(p[0])} → {_n(p[1])} ({100 * p[1] / p[0]:.1f}%)" if p[0] else f"{_n(p[0])} → {_n(p[1])}"


def _e(v: float | None, scale: float | None = None, note: str = "") -> str:
    if v is None:
        return note or "-"
    s = f"{v:.2g}"
    return f"{s} (scale {scale:.2g})" if scale is not None else s


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None or v != v else fmt.format(v)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def model_table(row: Row) -> str:
    s, fp, t = row.spec, row.fp, row.tpr
    lat = row.lat
    fp_err = f"**{_cell(fp.error)}**" if fp.error else None
    tp_err = f"**{_cell(t.error)}**" if t.error else None
    lat_b = f"batch {s.latency_batch}"
    lines = [
        f"#### {s.name}",
        "",
        f"input {tuple(s.make_input(1).shape)}, exactness in {str(s.exact_dtype).replace('torch.', '')}, "
        f"{row.reps} timed reps, latency {lat_b} x {s.latency_rounds} rounds; {row.seconds:.0f} s for this model",
        "",
        "| | fprune | Torch-Pruning |",
        "|---|---|---|",
    ]
    if fp_err or tp_err:
        lines.append(f"| exception | {fp_err or '-'} | {tp_err or '-'} |")
    lines += [
        f"| time, ms (median) | {_f(row.fp_ms, '{:.1f}')} | {_f(row.tp_ms, '{:.1f}')} |",
        f"| floor (trace + ShapeProp), ms | {_f(row.floor_ms, '{:.1f}')} | |",
        f"| time / floor | {_f(row.fp_ratio)} | {_f(row.tp_ms / row.floor_ms if row.floor_ms else None)} |",
        f"| Torch-Pruning time / fprune time | | {_f(row.tp_speedup, '{:.2f}x')} |",
        f"| groups | {fp.groups if fp.groups is not None else '-'} found, {fp.prunable if fp.prunable is not None else '-'} prunable, "
        f"{fp.groups_pruned} pruned | {t.groups if t.groups is not None else '-'} |",
        f"| params | {_pair(fp.params)} | {_pair(t.params)} |",
        f"| MACs (fprune counter, batch 1) | {_pair(fp.macs)} | |",
        f"| MACs (TP counter, batch 1) | {_pair(fp.tp_macs)} | {_pair(t.macs)} |",
        f"| max \\|pruned − zeroed original\\| | {_e(fp.err, fp.scale)} | {_e(t.err, t.scale, t.err_note)} |",
        f"| latency, ms ({lat_b}; original {_f(1000 * lat.get('original', float('nan')), '{:.2f}')}) | "
        f"{_f(1000 * lat['fprune'], '{:.2f}') if 'fprune' in lat else '-'} | {_f(1000 * lat['tp'], '{:.2f}') if 'tp' in lat else '-'} |",
        f"| latency, unpruned model traced with fx, ms | {_f(1000 * lat['original_fx'], '{:.2f}') if 'original_fx' in lat else '-'} | |",
        f"| latency speedup | {_f(lat['original'] / lat['fprune']) if 'fprune' in lat else '-'} | "
        f"{_f(lat['original'] / lat['tp']) if 'tp' in lat else '-'} |",
        f"| MAC reduction (TP counter) | {_f(fp.tp_macs[0] / fp.tp_macs[1]) if fp.tp_macs and fp.tp_macs[1] else '-'} | "
        f"{_f(t.macs[0] / t.macs[1]) if t.macs and t.macs[1] else '-'} |",
        f"| speedup / MAC reduction | {_f(row.fp_eff)} | {_f(row.tp_eff)} |",
        "",
    ]
    if fp.reasons:
        lines.append(f"fprune: {fp.groups - fp.prunable} unprunable groups; reasons (number of groups, op: message):")
        lines.append("")
        for n, k in fp.reasons[:6]:
            lines.append(f"- {n} × `{_cell(k)}`")
        if len(fp.reasons) > 6:
            lines.append(f"- ... {len(fp.reasons) - 6} more distinct reasons")
        lines.append("")
    return "\n".join(lines)


def zoo_lines(rows: list[Row]) -> list[str]:
    """One line per hand-written model: fprune's unprunable reasons and any exception."""
    out = []
    for row in rows:
        if row.spec.family != "zoo":
            continue
        fp, t = row.fp, row.tpr
        parts = []
        if fp.error:
            parts.append(f"fprune raised **{_cell(fp.error)}**")
        reasons = [(n, k.split(";")[0]) for n, k in fp.reasons if not k.startswith("output output")]
        if reasons:
            parts.append("fprune refuses " + ", ".join(f"{n} × `{_cell(k)}`" for n, k in reasons))
        if t.error:
            parts.append(f"Torch-Pruning raised **{_cell(t.error)}**")
        elif t.err is not None and fp.err is not None and t.err > 1e-6 * max(t.scale or 1, 1):
            parts.append(f"Torch-Pruning's result is not exact (max error {t.err:.2g})")
        prunable = f"{fp.prunable}/{fp.groups} groups prunable" if fp.groups is not None else "no analysis"
        out.append(f"- {row.spec.name} ({prunable}; the output group is always refused): " + ("; ".join(parts) or "nothing else"))
    return out


def verdicts(rows: list[Row]) -> list[str]:
    out = []
    for row in rows:
        name = row.spec.name
        if row.fp.error or row.fp_ratio != row.fp_ratio:
            out.append(f"- N/A: {name}: fprune time within {TARGET_FLOOR:g}x of the floor (fprune raised)")
        else:
            ok = row.fp_ratio <= TARGET_FLOOR
            out.append(f"- {'PASS' if ok else 'FAIL'}: {name}: fprune / floor = {row.fp_ratio:.2f} (target <= {TARGET_FLOOR:g})")
    by_name = {r.spec.name: r for r in rows}
    for name in FASTER_ON:
        row = by_name.get(name)
        if row is None or row.tp_speedup != row.tp_speedup:
            out.append(f"- N/A: {name}: faster than Torch-Pruning (not measured)")
        else:
            ok = row.tp_speedup > 1
            out.append(f"- {'PASS' if ok else 'FAIL'}: {name}: Torch-Pruning / fprune time = {row.tp_speedup:.2f}x (target > 1x)")
    mlp = next((r for r in rows if r.spec.family == "mlp"), None)
    if mlp is None or mlp.tp_speedup != mlp.tp_speedup:
        out.append("- N/A: mlp512: >= 10x faster than Torch-Pruning (not measured)")
    else:
        ok = mlp.tp_speedup >= TARGET_MLP_SPEEDUP
        out.append(f"- {'PASS' if ok else 'FAIL'}: {mlp.spec.name}: Torch-Pruning / fprune time = "
                   f"{mlp.tp_speedup:.1f}x (target >= {TARGET_MLP_SPEEDUP:g}x)")
    for row in rows:
        name = row.spec.name
        if row.spec.family == "zoo":
            continue  # toy models: their latency is Python call overhead, not MACs
        fp_red = row.fp.tp_macs[0] / row.fp.tp_macs[1] if row.fp.tp_macs and row.fp.tp_macs[1] else None
        tp_red = row.tpr.macs[0] / row.tpr.macs[1] if row.tpr.macs and row.tpr.macs[1] else None
        if row.fp_eff is None or row.tp_eff is None:
            why = "a tool raised" if (row.fp.error or row.tpr.error) else "not measured"
            out.append(f"- N/A: {name}: speedup / MAC reduction at least Torch-Pruning's ({why})")
        elif min(fp_red or 1, tp_red or 1) < MIN_REDUCTION:
            out.append(f"- N/A: {name}: speedup / MAC reduction at least Torch-Pruning's (MAC reduction "
                       f"{fp_red:.3f}x fprune, {tp_red:.3f}x Torch-Pruning: below {MIN_REDUCTION}x the ratio is "
                       f"noise; measured {row.fp_eff:.2f} vs {row.tp_eff:.2f})")
        else:
            ok = row.fp_eff >= row.tp_eff
            out.append(f"- {'PASS' if ok else 'FAIL'}: {name}: speedup / MAC reduction {row.fp_eff:.2f} vs "
                       f"Torch-Pruning {row.tp_eff:.2f} (MAC reduction {fp_red:.2f}x vs {tp_red:.2f}x)")
    return out


def summary_table(rows: list[Row]) -> str:
    lines = [
        "| model | fprune ms | floor ms | fprune/floor | TP ms | TP/fprune | groups (prunable/found) | TP groups | "
        "MACs kept fprune | MACs kept TP | exact err fprune | exact err TP | speedup/MAC-red fprune | speedup/MAC-red TP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        fp, t = row.fp, row.tpr
        kept_fp = f"{100 * fp.tp_macs[1] / fp.tp_macs[0]:.1f}%" if fp.tp_macs and fp.tp_macs[0] else "-"
        kept_tp = f"{100 * t.macs[1] / t.macs[0]:.1f}%" if t.macs and t.macs[0] else "-"
        fp_err = f"{type_of(fp.error)}" if fp.error else _e(fp.err)
        tp_err = f"{type_of(t.error)}" if t.error else _e(t.err, None, t.err_note)
        groups = f"{fp.prunable}/{fp.groups}" if fp.groups is not None else "-"
        lines.append(
            f"| {row.spec.name} | {_f(row.fp_ms, '{:.1f}')} | {_f(row.floor_ms, '{:.1f}')} | {_f(row.fp_ratio)} | "
            f"{_f(row.tp_ms, '{:.1f}')} | {_f(row.tp_speedup, '{:.1f}x')} | {groups} | "
            f"{t.groups if t.groups is not None else '-'} | {kept_fp} | {kept_tp} | {_cell(fp_err)} | {_cell(tp_err)} | "
            f"{_f(row.fp_eff)} | {_f(row.tp_eff)} |")
    return "\n".join(lines)


def type_of(error: str) -> str:
    return "raised " + error.split(":", 1)[0]


def header(clock_kind: str) -> str:
    return (f"torch {torch.__version__}, timm {timm.__version__}, torch-pruning "
            f"{importlib.metadata.version('torch-pruning')}, fprune {fprune.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"clock {clock_kind}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one timed rep each, fewer latency rounds (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated substrings of model names to run")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or perf_counter")
    ap.add_argument("--no-zoo", action="store_true", help="skip the hand-written models of tests/models.py")
    ap.add_argument("--markdown", type=Path, help="also write the tables and verdicts to this file")
    ap.add_argument("--append", type=Path, help="append the tables and verdicts to this file, in one write")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    skipped: list[str] = []
    specs = [] if args.no_zoo else zoo_specs(skipped)
    specs += [
        mlp_spec(512, reps=5),
        timm_spec("resnet18", reps=7),
        timm_spec("mobilenetv3_small_100", reps=7),
        timm_spec("vit_tiny_patch16_224", reps=7, vit=True),
        timm_spec("regnetx_002", reps=7),
        mha_spec(reps=7),
    ]
    if args.only:
        keys = [k for k in args.only.split(",") if k]
        specs = [s for s in specs if any(k in s.name for k in keys)]
    gc.collect()
    gc.freeze()  # torch, timm and the rest: out of every later collection (one costs 0.2 s otherwise)
    print(f"# {header(args.clock)}", flush=True)
    for s in skipped:
        print(f"# skipped {s}", flush=True)
    rows: list[Row] = []
    for spec in specs:
        if args.quick:
            spec.latency_rounds = 3
        try:
            row = bench(spec, args.clock, 1 if args.quick else None)
        except Exception:  # noqa: BLE001 - the benchmark itself must go on
            print(f"# {spec.name}: benchmark failed\n{traceback.format_exc()}", flush=True)
            continue
        rows.append(row)
        print(model_table(row), flush=True)
    body = "\n".join([
        f"`{header(args.clock)}`; total run {time.perf_counter() - started:.0f} s.",
        "",
        "### Summary",
        "",
        summary_table(rows),
        "",
        "Times are medians over interleaved repetitions; TP/fprune and fprune/floor are medians of the "
        "per-repetition ratios. \"MACs kept\" and speedup/MAC-reduction use Torch-Pruning's MAC counter for "
        "both results; latency is the median CPU time of one forward of the pruned model against the original "
        "(eager) model. For the hand-written zoo models (a few hundred parameters) latency is Python call "
        "overhead, so their speedup columns are informational and have no verdict.",
        "",
        "### Verdicts (targets from the issue)",
        "",
        *verdicts(rows),
        "",
        *([f"Skipped: {'; '.join(skipped)}", ""] if skipped else []),
        "### Per model",
        "",
        *[model_table(r) for r in rows if r.spec.family != "zoo"],
        *(["### Hand-written models (tests/models.py): refusals and exceptions", "",
           "(Their full per-model tables are printed on stdout.)", "", *zoo_lines(rows), ""]
          if any(r.spec.family == "zoo" for r in rows) else []),
    ])
    print("\n## Summary\n")
    print(summary_table(rows))
    print("\n## Verdicts\n")
    print("\n".join(verdicts(rows)))
    print(f"\n# total {time.perf_counter() - started:.0f} s")
    if args.markdown:
        args.markdown.write_text(body + "\n")
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + body + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
