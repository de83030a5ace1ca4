"""The main job: prune a small CNN on scikit-learn's bundled digits and report.

``fprune demo --out DIR`` (or ``python -m fprune demo --out DIR``) runs
:func:`run_demo` with the default :class:`DemoConfig`:

1. trains :class:`DigitsNet` (Conv-BN-ReLU blocks, a residual connection, a
   Linear head) on the 1,797 8x8 images of ``sklearn.datasets.load_digits``
   (bundled with scikit-learn: no download);
2. for every scorer (L1, L2, FPGM, Taylor, random) and sparsity (30/50/70% of
   the channels of every prunable group) prunes it with the functional
   pipeline ``pipe(model, scorer, topk_mask(sparsity), apply_patterns)``,
   measures test accuracy right after pruning and after a short fine-tune,
   parameters, MACs and single-thread CPU latency;
3. retraining-free recovery (``recovery=True``): for every sparsity, the
   scorers L1, activation, Wanda and FLAP, each with no recovery,
   ``reconstruct(calib, "bias")`` and ``reconstruct(calib)`` (lstsq), test
   accuracy right after pruning, with ``calib`` the first ``calib`` training
   images;
4. writes ``DIR/report.md`` (markdown tables) and ``DIR/accuracy_vs_macs.png``.

Everything runs on one CPU thread with deterministic algorithms and fixed
seeds, so every number but the latency is the same from run to run on a
given machine.  The global torch state (threads, determinism flag, RNG) is
restored afterwards.  scikit-learn, matplotlib and tqdm are imported only
when the demo runs (``pip install 'fprune[demo]'``).

Example:
    >>> from fprune.demo import DemoConfig
    >>> DemoConfig(methods=("L1", "Taylor"), sparsities=(0.5,)).runs
    (('L1', 0.5), ('Taylor', 0.5))
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from toolz import pipe
from torch import Tensor, nn

from fprune.calibrate import score_activation, score_flap, score_wanda
from fprune.errors import FpruneWarning, InvalidArgumentError, MissingDependencyError
from fprune.masks import topk_mask
from fprune.reconstruct import reconstruct
from fprune.rewrite import apply_patterns
from fprune.scores import score_fpgm, score_l1, score_l2, score_random, score_taylor
from fprune.summary import count_macs, count_params
from fprune.types import Scorer

__all__ = [
    "DemoConfig",
    "DemoResult",
    "DigitsNet",
    "Method",
    "METHODS",
    "RecoveryRow",
    "SweepRow",
    "load_digits_split",
    "run_demo",
]

REPORT = "report.md"
PLOT = "accuracy_vs_macs.png"


# --------------------------------------------------------------------------------------
# Methods, as data


@dataclass(frozen=True)
class Method:
    """A pruning criterion of the sweep: how to build its scorer for a seed."""

    name: str  # label in the report
    scorer: Callable[[int], Scorer]  # seed -> scorer
    needs_grad: bool = False  # True: weights need .grad (a backward pass on training data first)


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "L1": Method("L1", lambda seed: score_l1),
        "L2": Method("L2", lambda seed: score_l2),
        "FPGM": Method("FPGM", lambda seed: score_fpgm()),
        "Taylor": Method("Taylor", lambda seed: score_taylor, needs_grad=True),
        "random": Method("random", score_random),
    }
)


# --------------------------------------------------------------------------------------
# Configuration and results


def _positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"DemoConfig expects {name} to be an int >= 1; got {value!r}. Fix: pass e.g. {name}=2.")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the defaults are the README's main job (under 3 minutes on 2 cores).

    Example:
        >>> DemoConfig(methods=("L0",))
        Traceback (most recent call last):
        ...
        fprune.errors.InvalidArgumentError: DemoConfig expects methods among ('L1', 'L2', 'FPGM', 'Taylor', 'random'); got 'L0'. Fix: pass e.g. methods=('L1', 'Taylor').
    """

    epochs: int = 12  # training epochs of the unpruned model
    finetune_epochs: int = 3  # fine-tune epochs of every pruned model
    methods: tuple[str, ...] = tuple(METHODS)  # names in METHODS
    sparsities: tuple[float, ...] = (0.3, 0.5, 0.7)  # fraction of channels pruned in every prunable group
    seed: int = 0  # data split, initialisation, shuffling and the random scorer
    width: int = 32  # channels of the first stage (the second has twice as many)
    batch_size: int = 64  # training and fine-tuning batch size
    lr: float = 3e-3  # Adam learning rate for training
    finetune_lr: float = 1e-3  # Adam learning rate for fine-tuning
    latency_batch: int = 64  # images per timed forward pass (small batches time stably on a busy machine)
    latency_repeats: int = 25  # timed passes per model, round-robin over all models (the median is reported)
    progress: bool = True  # tqdm progress bars on stderr
    recovery: bool = True  # also the retraining-free table: 4 scorers x (none, bias, lstsq) per sparsity
    calib: int = 512  # training images used as calibration batches (of batch_size) by that table

    def __post_init__(self) -> None:
        for name in ("epochs", "finetune_epochs", "width", "batch_size", "latency_batch", "latency_repeats",
                     "calib"):
            _positive(getattr(self, name), name)
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "sparsities", tuple(self.sparsities))
        for name in self.methods:
            if name not in METHODS:
                raise InvalidArgumentError(
                    f"DemoConfig expects methods among {tuple(METHODS)}; got {name!r}. "
                    "Fix: pass e.g. methods=('L1', 'Taylor')."
                )
        for sparsity in self.sparsities:
            topk_mask(sparsity)  # raises InvalidArgumentError outside [0, 1)
        if not self.methods or not self.sparsities:
            raise InvalidArgumentError(
                "DemoConfig expects at least one method and one sparsity; got "
                f"methods={self.methods!r}, sparsities={self.sparsities!r}. Fix: pass e.g. sparsities=(0.5,)."
            )

    @property
    def runs(self) -> tuple[tuple[str, float], ...]:
        """The (method, sparsity) pairs of the sweep, in order."""
        return tuple((m, s) for m in self.methods for s in self.sparsities)


@dataclass(frozen=True)
class SweepRow:
    """One line of the report: a model and its measurements."""

    method: str  # scorer name, or "unpruned"
    sparsity: float  # fraction of channels pruned per prunable group
    params: int  # parameter entries
    macs: int  # Linear/Conv MACs per 8x8 image
    latency_ms: float  # median time of one forward pass on `latency_batch` images, one thread
    speedup: float  # latency of the original / latency of this model (timed interleaved)
    acc_pruned: float  # test accuracy right after pruning, in [0, 1]
    acc_finetuned: float  # test accuracy after the fine-tune, in [0, 1]


@dataclass(frozen=True)
class RecoveryRow:
    """One line of the recovery table: test accuracy right after pruning, no fine-tune."""

    scorer: str  # l1, activation, wanda or flap
    sparsity: float  # fraction of channels pruned per prunable group
    none: float  # plain pruning, in [0, 1]
    bias: float  # then reconstruct(calib, "bias")
    lstsq: float  # then reconstruct(calib) (least squares, damp 0.01)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured and wrote."""

    config: DemoConfig
    baseline: SweepRow  # the trained, unpruned model
    rows: tuple[SweepRow, ...]  # one per (method, sparsity), in config.runs order
    notes: tuple[str, ...]  # warnings raised while pruning, each once
    seconds: float  # wall time of the whole run
    report: Path  # DIR/report.md
    plot: Path  # DIR/accuracy_vs_macs.png
    data: Mapping[str, int] = field(default_factory=dict)  # sizes of the splits
    recovery: tuple[RecoveryRow, ...] = ()  # per sparsity, per scorer (config.recovery)

    def table(self) -> str:
        """The markdown table of the report (baseline first)."""
        return _table(self.baseline, self.rows)

    def recovery_table(self) -> str:
        """The markdown table of the retraining-free recovery (empty without it)."""
        if not self.recovery:
            return ""
        lines = ["| sparsity | scorer | none | bias | lstsq |", "|---:|---|---:|---:|---:|"]
        lines += [f"| {_sparsity(r.sparsity)} | {r.scorer} | {_pct(r.none)} | {_pct(r.bias)} | {_pct(r.lstsq)} |"
                  for r in self.recovery]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Lazy optional dependencies


def _demo_deps() -> SimpleNamespace:
    """Imports scikit-learn, matplotlib and tqdm, or says how to install them."""
    names = {"sklearn_datasets": "sklearn.datasets", "sklearn_split": "sklearn.model_selection",
             "figure": "matplotlib.figure", "tqdm": "tqdm"}
    found: dict[str, Any] = {}
    for key, module in names.items():
        try:
            found[key] = importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"fprune demo needs {module.split('.')[0]!r} (from the optional 'demo' extra: "
                f"scikit-learn, matplotlib, tqdm), which is not installed ({exc}). "
                "Fix: pip install 'fprune[demo]'"
            ) from exc
    return SimpleNamespace(**found)


# --------------------------------------------------------------------------------------
# Data, model, training


def load_digits_split(seed: int = 0, test_size: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled digits as tensors: ``(x_train, y_train, x_test, y_test)``.

    Images are ``[n, 1, 8, 8]`` floats in ``[0, 1]``; the split is stratified
    and fixed by `seed` (1,347 train / 450 test with the defaults).

    Example:
        >>> x_train, y_train, x_test, y_test = load_digits_split()  # doctest: +SKIP
        >>> x_train.shape, x_test.shape  # doctest: +SKIP
        (torch.Size([1347, 1, 8, 8]), torch.Size([450, 1, 8, 8]))
    """
    deps = _demo_deps()
    digits = deps.sklearn_datasets.load_digits()
    x_tr, x_te, y_tr, y_te = deps.sklearn_split.train_test_split(
        digits.images, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )

    def images(a: Any) -> Tensor:
        return torch.tensor(a, dtype=torch.float32).unsqueeze(1) / 16.0

    def labels(a: Any) -> Tensor:
        return torch.tensor(a, dtype=torch.long)

    return images(x_tr), labels(y_tr), images(x_te), labels(y_te)


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsNet(nn.Module):
    """A small residual CNN for 8x8 digits: Conv-BN-ReLU blocks, one residual add, a Linear head.

    ``stem`` (1→w, 8x8) → ``res`` (two 3x3 convs, added back to ``stem``'s output)
    → ``down`` (w→2w, stride 2, 4x4) → ``conv`` (2w→2w) → flatten → ``head`` (Linear to 10).
    The residual add couples ``stem.0`` and ``res.3`` into one channel group.

    Example:
        >>> import torch
        >>> DigitsNet(width=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = _cbr(1, width)
        self.res = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
        )
        self.down = _cbr(width, 2 * width, stride=2)
        self.conv = _cbr(2 * width, 2 * width)
        self.head = nn.Linear(2 * width * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[n, classes]`` for images ``[n, 1, 8, 8]``."""
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.conv(self.down(x))
        out: Tensor = self.head(torch.flatten(x, 1))
        return out


def _train(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int, seed: int,
           bar: Any = None) -> None:
    """Trains `model` in place with Adam; shuffling is fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            total += float(loss.detach()) * len(idx)
        if bar is not None:
            bar.set_postfix(loss=f"{total / len(x):.4f}")
            bar.update(1)
    model.eval()


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def _timed(model: nn.Module, x: Tensor, best_of: int = 3) -> float:
    """Seconds of one forward pass: the fastest of `best_of` back-to-back passes (drops preempted ones)."""
    best = float("inf")
    for _ in range(best_of):
        start = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - start)
    return best


def _latencies(models: Sequence[nn.Module], x: Tensor, repeats: int, bar: Any = None) -> list[float]:
    """Median seconds per forward pass of each model on `x`.

    The models are timed round-robin (one sample of each per round, in a rotating
    order, after a warm-up round), so a change in machine load affects them all alike;
    a sample is the fastest of 3 back-to-back passes, which drops passes the OS preempted.
    """
    for model in models:
        model.eval()
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_ in range(repeats + 1):
            for k in range(len(models)):
                i = (k + round_) % len(models)  # rotate the order: no model always follows the same one
                elapsed = _timed(models[i], x)
                if round_:
                    times[i].append(elapsed)
            if bar is not None:
                bar.update(1)
    return [statistics.median(samples) for samples in times]


def _with_grads(model: nn.Module, x: Tensor, y: Tensor) -> nn.Module:
    """A copy of `model` whose weights carry .grad of the training loss (eval mode, one batch)."""
    scored = copy.deepcopy(model)
    scored.eval()
    scored.zero_grad(set_to_none=True)
    torch.autograd.backward(F.cross_entropy(scored(x), y))
    return scored


def _prune(model: nn.Module, method: Method, sparsity: float, seed: int, x: Tensor, y: Tensor,
           notes: dict[str, None]) -> nn.Module:
    source = _with_grads(model, x, y) if method.needs_grad else model
    with _noting(notes):
        pruned: nn.Module = pipe(source, method.scorer(seed), topk_mask(sparsity), apply_patterns)
    return pruned


def _recovery(model: nn.Module, config: DemoConfig, x_tr: Tensor, x_te: Tensor, y_te: Tensor,
              notes: dict[str, None], bar: Any) -> tuple[RecoveryRow, ...]:
    """Accuracy right after pruning: each calibration scorer, with no recovery, bias and lstsq."""
    step = config.batch_size
    calib = [x_tr[i:i + step] for i in range(0, min(config.calib, len(x_tr)), step)]
    scorers = {"l1": score_l1, "activation": score_activation(calib), "wanda": score_wanda(calib),
               "flap": score_flap(calib)}
    rows = []
    with _noting(notes):
        for sparsity in config.sparsities:
            for name, scorer in scorers.items():
                plan = pipe(model, scorer, topk_mask(sparsity))
                plans = (plan, reconstruct(calib, "bias")(plan), reconstruct(calib)(plan))
                rows.append(RecoveryRow(name, sparsity, *(_accuracy(apply_patterns(p), x_te, y_te) for p in plans)))
                bar.update(1)
    return tuple(rows)


@contextlib.contextmanager
def _noting(notes: dict[str, None]) -> Iterator[None]:
    """Collects the FpruneWarnings raised inside into `notes` (each once); others pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FpruneWarning)
        yield
    for w in caught:
        if issubclass(w.category, FpruneWarning):
            notes.setdefault(f"{w.category.__name__}: {w.message}", None)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms, seeded RNG; the previous state is restored on exit."""
    threads = torch.get_num_threads()
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det, warn_only=warn_only)


# --------------------------------------------------------------------------------------
# The run


def run_demo(out_dir: str | Path, config: DemoConfig | None = None) -> DemoResult:
    """Trains, prunes with every method and sparsity, measures; writes the report and the plot.

    Args:
        out_dir: directory for ``report.md`` and ``accuracy_vs_macs.png`` (created if missing).
        config: the settings; ``DemoConfig()`` (the README's main job) when None.  Use a smaller
            one (e.g. ``DemoConfig(epochs=1, finetune_epochs=1, methods=("L1",),
            sparsities=(0.5,))``) for a quick check.

    Returns:
        A :class:`DemoResult`; its ``table()`` is the report's markdown table.

    Raises:
        MissingDependencyError: scikit-learn, matplotlib or tqdm is missing
            (``pip install 'fprune[demo]'``).

    Example:
        >>> from fprune.demo import run_demo, DemoConfig
        >>> result = run_demo("/tmp/fprune-demo", DemoConfig(epochs=1, finetune_epochs=1,
        ...     methods=("L1",), sparsities=(0.5,), progress=False))  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """
    config = DemoConfig() if config is None else config
    deps = _demo_deps()
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tqdm = deps.tqdm.tqdm
    bars = {"file": sys.stderr, "disable": not config.progress, "dynamic_ncols": True}
    notes: dict[str, None] = {}
    with _deterministic(config.seed):
        x_tr, y_tr, x_te, y_te = load_digits_split(config.seed)
        example = x_te[:1]
        timing_batch = x_te[: config.latency_batch]
        model = DigitsNet(config.width)
        with tqdm(total=config.epochs, desc="train", unit="epoch", **bars) as bar:
            _train(model, x_tr, y_tr, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                   seed=config.seed, bar=bar)
        acc = _accuracy(model, x_te, y_te)
        macs0, params0 = count_macs(model, example), count_params(model)
        measured = []
        with tqdm(config.runs, desc="sweep", unit="model", **bars) as sweep:
            for name, sparsity in sweep:
                sweep.set_postfix(method=name, sparsity=sparsity)
                pruned = _prune(model, METHODS[name], sparsity, config.seed, x_tr, y_tr, notes)
                acc_pruned = _accuracy(pruned, x_te, y_te)
                _train(pruned, x_tr, y_tr, epochs=config.finetune_epochs, lr=config.finetune_lr,
                       batch_size=config.batch_size, seed=config.seed)
                measured.append((name, sparsity, pruned, acc_pruned, _accuracy(pruned, x_te, y_te)))
        recovery: tuple[RecoveryRow, ...] = ()
        if config.recovery:
            with tqdm(total=4 * len(config.sparsities), desc="recovery", unit="plan", **bars) as bar:
                recovery = _recovery(model, config, x_tr, x_te, y_te, notes, bar)
        models = [model, *(m[2] for m in measured)]
        with tqdm(total=config.latency_repeats + 1, desc="latency", unit="round", **bars) as bar:
            times = _latencies(models, timing_batch, config.latency_repeats, bar)
        rows = [
            SweepRow(name, sparsity, count_params(pruned), count_macs(pruned, example), 1e3 * t, times[0] / t,
                     acc_pruned, acc_ft)
            for (name, sparsity, pruned, acc_pruned, acc_ft), t in zip(measured, times[1:])
        ]
    baseline = SweepRow("unpruned", 0.0, params0, macs0, 1e3 * times[0], 1.0, acc, acc)
    data = {"train": len(x_tr), "test": len(x_te)}
    seconds = time.perf_counter() - started
    result = DemoResult(config, baseline, tuple(rows), tuple(notes), seconds, out / REPORT, out / PLOT, data,
                        recovery)
    result.report.write_text(_report(result), encoding="utf-8")
    _plot(deps, result)
    return result


# --------------------------------------------------------------------------------------
# Report and plot


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def _sparsity(value: float) -> str:
    return f"{100.0 * value:g}%"


def _table(baseline: SweepRow, rows: Sequence[SweepRow]) -> str:
    head = ("| method | sparsity | params | MACs | latency speedup | accuracy before fine-tune "
            "| accuracy after fine-tune |\n|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in (baseline, *rows):
        lines.append(
            f"| {r.method} | {_sparsity(r.sparsity)} "
            f"| {r.params:,} ({_pct(r.params / baseline.params)}) | {r.macs:,} ({_pct(r.macs / baseline.macs)}) "
            f"| {r.speedup:.2f}x | {_pct(r.acc_pruned)} | {_pct(r.acc_finetuned)} |"
        )
    return "\n".join(lines)


def _command(config: DemoConfig) -> str:
    """The fprune demo command line that reproduces `config` (flags only where it differs from the default)."""
    default = DemoConfig()
    flags = (("--seed", "seed"), ("--epochs", "epochs"), ("--finetune-epochs", "finetune_epochs"))
    parts = ["fprune demo --out DIR"]
    parts += [f"{flag} {getattr(config, key)}" for flag, key in flags if getattr(config, key) != getattr(default, key)]
    if not config.recovery:
        parts.append("--no-recovery")
    if config.methods != default.methods:
        parts.append("--methods " + ",".join(config.methods))
    if config.sparsities != default.sparsities:
        parts.append("--sparsities " + ",".join(f"{s:g}" for s in config.sparsities))
    rest = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(DemoConfig)
            if f.name not in ("seed", "epochs", "finetune_epochs", "methods", "sparsities", "progress", "recovery")
            and getattr(config, f.name) != getattr(default, f.name)]
    return " ".join(parts) + (f" (and DemoConfig({', '.join(rest)}))" if rest else "")


def _report(result: DemoResult) -> str:
    c, b = result.config, result.baseline
    notes = "".join(f"\n- {n}" for n in result.notes) or "\n- none"
    images = min(c.calib, result.data.get("train", c.calib))
    recovery = "" if not result.recovery else f"""
## Retraining-free recovery

Test accuracy right after `pipe(model, scorer, topk_mask(sparsity), [reconstruct(calib, method)],
apply_patterns)`, no fine-tune. `calib` is the first {images} training images in batches of
{c.batch_size}; the scorers (L1 on the weights; activation `mean |X|`, Wanda `|W| * ||X||`, FLAP
`var(X) * ||W||^2` on the calibration inputs) and `reconstruct` see the same ones. `bias` is FLAP's
compensation (the convolutions have no bias: what they lose reaches the BatchNorm statistics,
re-estimated on the batches), `lstsq` re-solves each consumer's kept weights from the pruned model's
own inputs (`damp=0.01`). The reconstructed models are not the original with the removed channels
zero: they are fitted to its outputs on the calibration images.

{result.recovery_table()}
"""
    return f"""# fprune demo: structured pruning of a small CNN on scikit-learn digits

Command: `{_command(c)}` (seed {c.seed}); wall time {result.seconds:.0f} s.

- **Data**: scikit-learn's bundled digits, 1,797 8x8 images, stratified split
  {result.data.get('train', 0):,} train / {result.data.get('test', 0):,} test (seed {c.seed}).
- **Model**: `DigitsNet(width={c.width})`: Conv-BN-ReLU stem, a residual block (two 3x3 Conv-BN, added back),
  a stride-2 Conv-BN-ReLU, a Conv-BN-ReLU, flatten, Linear head; trained {c.epochs} epochs with Adam
  (lr {c.lr}, batch {c.batch_size}): test accuracy {_pct(b.acc_finetuned)}, {b.params:,} params,
  {b.macs:,} MACs per image.
- **Pruning**: `pipe(model, scorer, topk_mask(sparsity), apply_patterns)`: every prunable channel group
  loses `int(n * sparsity)` channels (the residual add couples `stem.0` and `res.3` into one group).
  Taylor scores use the gradient of the training loss on the whole training set (eval mode).
  Random uses `score_random(seed={c.seed})`.
- **Fine-tune**: {c.finetune_epochs} epochs of Adam (lr {c.finetune_lr}) on the pruned GraphModule.
- **Measures**: params and Linear/Conv MACs per image (fx shape propagation); test accuracy right after
  pruning ("before fine-tune") and after the fine-tune ({result.data.get('test', 0)} test images: one image is
  {100 / max(result.data.get('test', 1), 1):.2f} points);
  latency = median of {c.latency_repeats} samples of one forward pass on {c.latency_batch} images (each
  sample the fastest of 3 back-to-back passes), one CPU thread, all models timed round-robin after the sweep, speedup = original / pruned ({b.latency_ms:.1f} ms
  for the original). Latency varies between runs and machines (models of one sparsity have the same
  shapes whatever the method, so their spread shows the noise); every other number is deterministic for
  a seed on a given machine (one thread, deterministic algorithms).

Warnings while pruning (each reported once):{notes}

{result.table()}

![accuracy vs MACs]({PLOT})
{recovery}"""


def _plot(deps: SimpleNamespace, result: DemoResult) -> None:
    """Two panels sharing the MACs axis: accuracy right after pruning, and after the fine-tune."""
    fig = deps.figure.Figure(figsize=(10, 4.5), dpi=120)
    axes = fig.subplots(1, 2, sharex=True)
    base = result.baseline
    styles = (("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^"), ("tab:red", "D"),
              ("tab:purple", "v"), ("tab:brown", "P"), ("tab:pink", "X"))
    panels: tuple[tuple[str, Callable[[SweepRow], float]], ...] = (
        ("right after pruning", lambda r: r.acc_pruned),
        ("after fine-tune", lambda r: r.acc_finetuned),
    )
    for ax, (title, acc) in zip(axes, panels):
        for i, name in enumerate(result.config.methods):
            rows = sorted((r for r in result.rows if r.method == name), key=lambda r: r.macs)
            color, marker = styles[i % len(styles)]
            ax.plot([r.macs / 1e3 for r in rows], [100 * acc(r) for r in rows], marker=marker, color=color,
                    label=name, alpha=0.85)
        ax.plot([base.macs / 1e3], [100 * base.acc_finetuned], "k*", markersize=12, label="unpruned")
        ax.set_title(f"accuracy {title}")
    test = result.data.get("test", 0)
    if test:
        axes[1].set_title(f"accuracy after fine-tune (1 of {test} test images = {100 / test:.2f} points)", fontsize=10)
        ax.set_xlabel("MACs per image (thousands)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    sparsities = ", ".join(_sparsity(s) for s in result.config.sparsities)
    fig.suptitle(f"DigitsNet on scikit-learn digits: {'/'.join(result.config.methods)} channel pruning at {sparsities}")
    fig.tight_layout()
    fig.savefig(result.plot, metadata={"Software": None})
