"""Activation-aware scores from a few calibration batches (issue #16, the scorers).

Weight magnitude alone says little about which channels a trained network relies on; the
activations that reach each channel's consumers say more.  Each scorer here runs the model once
over the calibration batches, records what enters every ``Linear`` and ``Conv`` that reads a
prunable group's channels, and scores each channel from those statistics (``X`` is a channel's
input to one consumer over every token or pixel of every batch, ``W`` the consumer's weights
reading it; a channel read by several consumers sums their scores):

* :func:`score_activation`: ``mean |X|`` (``statistic="mean_abs"``) or ``||X||_2`` (``"l2"``);
* :func:`score_wanda`: ``sum |W| * ||X||_2`` (Wanda's ``|W| * ||X||``, summed over the weights
  reading the channel, as Wanda-sp does for whole channels);
* :func:`score_flap`: ``var(X) * ||W||_2^2`` (FLAP's fluctuation metric: the variance of the
  channel's input over the tokens times the squared norm of the weights reading it).

They return the same :class:`fprune.Scored` as ``score_l1``, so ``topk_mask``,
``global_topk_mask``, ``ignore`` and ``fprune.hf.widths`` work unchanged, on torch.fx models and
on ExportedPrograms alike.  A batch is a tensor (``model(x)``), a tuple or list
(``model(*batch)``) or a dict (``model(**batch)``); the batches are iterated once per call, so a
generator serves one call.  The model runs in eval mode (BatchNorm reads its running statistics and
does not update them; dropout is off), and is not modified: the recording runs on a copy of its
graph, and every module's mode is restored afterwards.  Statistics accumulate in float64.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from toolz import pipe
    >>> from fprune import apply_patterns, topk_mask
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [torch.randn(16, 4) for _ in range(3)]
    >>> score_wanda(batches)
    score_wanda(<3 batches>)
    >>> pipe(net, score_wanda(batches), topk_mask(0.5), apply_patterns).get_submodule("0").out_features
    4
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from fprune.analysis import DEFAULT_OPTIONS, Analysis, Options, analyze
from fprune.errors import FpruneWarning, InvalidArgumentError, InvalidTypeError
from fprune.plan import GroupRead, Scored, _refuse_unknown, _untile, group_reads
from fprune.scores import _rows_per_block

__all__ = ["ActivationScorer", "Stats", "score_activation", "score_wanda", "score_flap", "record_inputs"]

Kind = Literal["activation", "wanda", "flap"]
Statistic = Literal["mean_abs", "l2"]


@dataclass
class Stats:
    """Running per-channel sums of one consumer's input (``add(x, dim)`` per batch)."""

    count: int = 0
    total: Tensor | None = None
    total_abs: Tensor | None = None
    total_sq: Tensor | None = None

    def add(self, x: Tensor, dim: int) -> None:
        x = x.detach().to(torch.float64).movedim(dim, -1).reshape(-1, x.shape[dim])
        parts = (x.sum(0), x.abs().sum(0), (x * x).sum(0))
        if self.total is None:
            self.total, self.total_abs, self.total_sq = parts
        else:
            assert self.total_abs is not None and self.total_sq is not None
            self.total, self.total_abs, self.total_sq = (
                self.total + parts[0], self.total_abs + parts[1], self.total_sq + parts[2])
        self.count += x.shape[0]

    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and (population) variance of everything added, float64."""
        assert self.total is not None and self.total_sq is not None, "moments() of no batch"
        n = max(self.count, 1)
        mean = self.total / n
        return mean, (self.total_sq / n - mean * mean).clamp_min(0.0)


@dataclass(frozen=True, eq=False)
class ActivationScorer:
    """A calibration-batch scorer, ``model -> Scored``; build it with :func:`score_wanda` and kin."""

    kind: Kind
    batches: Iterable[Any] = field(repr=False)
    statistic: Statistic = "mean_abs"
    options: Options = DEFAULT_OPTIONS
    progress: bool = False

    def __repr__(self) -> str:
        size = f"<{len(self.batches)} batches>" if isinstance(self.batches, Sized) else "<batches>"
        extra = f", statistic={self.statistic!r}" if self.kind == "activation" and self.statistic != "mean_abs" else ""
        return f"score_{self.kind}({size}{extra})"

    def __call__(self, model: Any) -> Scored:
        """Scores every prunable group of `model` (an nn.Module, GraphModule or ExportedProgram)."""
        analysis = analyze(model)
        return self.score_recorded(
            analysis, lambda consumers: record_inputs(analysis, consumers, self.batches, repr(self),
                                                      progress=self.progress), stacklevel=3)

    def score_recorded(self, analysis: Analysis, record: Callable[[list[str]], Mapping[str, Stats]],
                       weights: Mapping[str, nn.Module] | None = None, *, stacklevel: int = 2) -> Scored:
        """Scores `analysis` from input statistics that `record(consumers)` gathers, one per consumer named
        (:func:`record_inputs` runs the analysed graph; :mod:`fprune.hf.stream` runs a checkpoint a layer
        at a time).  `weights` may supply the consumers with their real tensors (by name), e.g. loaded one
        at a time, in place of the analysed graph's."""
        if self.options.strict:
            _refuse_unknown(analysis)
        modules = dict(analysis.graph.named_modules())
        weights = modules if weights is None else weights
        groups = [g for g in analysis.groups if g.prunable(self.options)]
        skipped = [f"{g.name!r} ({g.why_not(self.options)})" for g in analysis.groups if not g.prunable(self.options)]
        readers = {g.name: [r for r in group_reads(analysis, g) if r.module in modules and _measurable(modules[r.module])]
                   for g in groups}
        consumers = sorted({r.module for reads in readers.values() for r in reads})
        stats = record(consumers)
        scores: dict[str, Tensor] = {}
        fine: dict[str, Tensor] = {}
        for group in groups:
            parts = [self._channel_scores(weights[r.module], stats[r.module], r)
                     for r in readers[group.name] if stats[r.module].count]
            if not parts:
                skipped.append(f"{group.name!r} (no Linear or Conv reads these channels, so {self!r} has no input "
                               "to measure)")
                continue
            scores[group.name] = sum(parts[1:], parts[0]).to(torch.float32)
            if group.subunits > 1:  # per query head: reads at that level as measured, others per unit
                fine[group.name] = sum(
                    (self._channel_scores(weights[r.module], stats[r.module], r, fine=group.subunits)
                     for r in readers[group.name] if stats[r.module].count),
                    torch.zeros(group.size * group.subunits, dtype=torch.float64)).to(torch.float32)
        if skipped:
            warnings.warn("left unpruned: " + "; ".join(skipped), FpruneWarning, stacklevel=stacklevel)
        return Scored(analysis, MappingProxyType(scores), self, self.options, MappingProxyType(fine))

    # ----------------------------------------------------------------------------------

    def _channel_scores(self, module: nn.Module, stats: Stats, read: GroupRead, fine: int = 1) -> Tensor:
        """One score per channel of the group `read` reads, or per sub-unit when `fine` > 1."""
        assert stats.total is not None and stats.total_abs is not None and stats.total_sq is not None
        n = max(stats.count, 1)
        sl = slice(read.offset, read.offset + read.width)
        if self.kind == "activation":
            per_col = stats.total_abs[sl] / n if self.statistic == "mean_abs" else stats.total_sq[sl].sqrt()
        else:
            raw = getattr(module, "weight")
            assert isinstance(raw, Tensor)  # a Linear or Conv (see _measurable)
            if self.kind == "wanda":
                per_col = _column_sums(raw, square=False)[sl] * stats.total_sq[sl].sqrt()
            else:
                per_col = stats.moments()[1][sl] * _column_sums(raw, square=True)[sl]
        rows = per_col.reshape(read.channels, read.factor)
        if fine > 1 and read.level is None:
            return _untile(rows, read.stages).sum(1).repeat_interleave(fine)
        return _untile(rows, read.stages[:read.level] if fine > 1 else read.stages).sum(1)


def _column_sums(weight: Tensor, *, square: bool) -> Tensor:
    """Per input column of a Linear or Conv weight ``[out, in, *kernel]``: the sum of ``|w|`` (or ``w**2``)
    over its output rows and kernel positions, in float64, a block of rows at a time (a vocabulary-wide
    lm_head is never copied whole to float64)."""
    w = weight.detach()
    total = torch.zeros(w.shape[1], dtype=torch.float64, device=w.device)
    step = _rows_per_block(w, 1 << 22)  # float64 blocks of 32 MB
    dims = [0, *range(2, w.dim())]
    for start in range(0, w.shape[0], step):
        block = w[start:start + step].to(torch.float64)
        total += (block * block if square else block.abs()).sum(dim=dims)
    return total


def _check(batches: object, progress: object, factory: str) -> None:
    if isinstance(batches, (Tensor, str, bytes)) or not isinstance(batches, Iterable):
        raise InvalidTypeError(
            f"{factory} expects an iterable of calibration batches (a list of tensors, tuples or dicts), got "
            f"{type(batches).__name__}; wrap a single batch as [x]")
    if not isinstance(progress, bool):
        raise InvalidTypeError(f"{factory} expects progress as a bool, got {progress!r}")


def _options(options: object, factory: str) -> Options:
    if not isinstance(options, Options):
        raise InvalidTypeError(f"{factory} expects options as an fprune.Options, got {type(options).__name__}")
    return options


def score_activation(batches: Iterable[Any], *, statistic: Statistic = "mean_abs",
                     options: Options = DEFAULT_OPTIONS, progress: bool = False) -> ActivationScorer:
    """Scores each channel by the size of its input to its consumers: ``mean |X|`` or ``||X||_2``.

    Args:
        batches: calibration batches: tensors, tuples or dicts of what the model's forward takes.
        statistic: ``"mean_abs"`` (mean absolute value) or ``"l2"`` (norm over all tokens).
        options: what counts as prunable (as in :func:`fprune.score_with`).
        progress: show a progress bar over the batches on stderr.

    Raises:
        InvalidTypeError, InvalidArgumentError: bad arguments; when called, empty batches, a batch the
            model cannot run, or activations holding NaN or inf.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(3, 2)); _ = net[0].bias.zero_()
        >>> x = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
        >>> score_activation([x])(net).scores["0"]  # relu(x) per channel, averaged; channel 2 reads nothing
        tensor([2., 2., 0.])
    """
    _check(batches, progress, "score_activation")
    if statistic not in ("mean_abs", "l2"):
        raise InvalidArgumentError(f"score_activation expects statistic 'mean_abs' or 'l2', got {statistic!r}")
    return ActivationScorer("activation", batches, statistic, _options(options, "score_activation"), progress)


def score_wanda(batches: Iterable[Any], *, options: Options = DEFAULT_OPTIONS,
                progress: bool = False) -> ActivationScorer:
    """Wanda for whole channels: ``sum |W| * ||X||_2`` over the weights reading each channel.

    Args:
        batches: calibration batches: tensors, tuples or dicts of what the model's forward takes.
        options: what counts as prunable (as in :func:`fprune.score_with`).
        progress: show a progress bar over the batches on stderr.

    Raises:
        InvalidTypeError, InvalidArgumentError: as :func:`score_activation`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(2)); _ = net[0].bias.zero_()
        ...     _ = net[2].weight.copy_(torch.tensor([[0.5, -3.0]]))
        >>> score_wanda([torch.tensor([[3.0, 4.0]])])(net).scores["0"]  # |W| * ||X||: 0.5 * 3, 3 * 4
        tensor([ 1.5000, 12.0000])
    """
    _check(batches, progress, "score_wanda")
    return ActivationScorer("wanda", batches, "mean_abs", _options(options, "score_wanda"), progress)


def score_flap(batches: Iterable[Any], *, options: Options = DEFAULT_OPTIONS,
               progress: bool = False) -> ActivationScorer:
    """FLAP's fluctuation: ``var(X) * ||W||_2^2``, the input's variance over the tokens times the
    squared norm of the weights reading it (a channel that never varies scores 0: its mean is what
    FLAP's bias compensation restores).

    Args:
        batches: calibration batches: tensors, tuples or dicts of what the model's forward takes.
        options: what counts as prunable (as in :func:`fprune.score_with`).
        progress: show a progress bar over the batches on stderr.

    Raises:
        InvalidTypeError, InvalidArgumentError: as :func:`score_activation`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(2)); _ = net[0].bias.zero_()
        ...     _ = net[2].weight.copy_(torch.tensor([[2.0, 1.0]]))
        >>> x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])  # channel 0 varies (var 1), channel 1 is constant
        >>> score_flap([x])(net).scores["0"]
        tensor([4., 0.])
    """
    _check(batches, progress, "score_flap")
    return ActivationScorer("flap", batches, "mean_abs", _options(options, "score_flap"), progress)


# --------------------------------------------------------------------------------------


def record_inputs(analysis: Analysis, consumers: list[str], batches: Iterable[Any], where: str, *,
                  progress: bool = False) -> dict[str, Stats]:
    """Runs the analysed model over `batches` once, summing each consumer's input per channel.

    The model is not modified.  Raises InvalidArgumentError or InvalidTypeError naming the batch
    at fault.
    """
    modules = dict(analysis.graph.named_modules())
    stats = {name: Stats() for name in consumers}
    runner = _instrumented(analysis, consumers)
    seen = 0

    def record(name: str, x: Any) -> Any:
        if isinstance(x, Tensor):
            if not bool(torch.isfinite(x).all()):
                raise non_finite(where, f"the input of {name!r}", seen)
            stats[name].add(x, _channel_dim(modules[name]))
        return x

    constants = traced_constants(analysis)
    bar = _progress(progress, where, len(batches) if isinstance(batches, Sized) else None)
    # an ExportedProgram's module has its mode baked into its graph (and refuses .eval())
    mode = _evaluating(runner) if analysis.source is None else contextlib.nullcontext()
    with torch.no_grad(), _Recorder.installed(record), bar, mode:
        for batch in batches:
            try:
                args, kwargs = call_args(batch, constants, where, seen)
                runner(*args, **kwargs)
            except (RuntimeError, TypeError, ValueError, IndexError, AssertionError) as exc:
                if isinstance(exc, (InvalidArgumentError, InvalidTypeError)):
                    raise
                raise misfit(where, seen, exc, exported=analysis.source is not None) from exc
            seen += 1
            bar.update(1)
    if not seen:
        raise no_batches(where)
    return stats


def misfit(where: str, index: int, exc: BaseException, *, exported: bool, node: str | None = None) -> InvalidArgumentError:
    """The error for a calibration batch the model cannot run: the first line of what it raised, and
    (an ExportedProgram) that only the traced shapes run."""
    hint = ("; an ExportedProgram runs only the input shapes it was exported with, so give batches of exactly "
            "those shapes (for fprune.hf: trace(model, seq_len=..., batch=...) to match the batches)") if exported else ""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    at = f" at node {node!r}" if node else ""
    return InvalidArgumentError(f"{where}: calibration batch {index} does not fit the model{at} ({type(exc).__name__}: "
                                f"{reason}). Fix: give batches shaped like the model's inputs{hint}")


def non_finite(where: str, what: str, index: int) -> InvalidArgumentError:
    """The error for an activation holding NaN or inf on a calibration batch."""
    return InvalidArgumentError(f"{where}: {what} holds NaN or inf on calibration batch {index}: the statistics "
                                "would be meaningless. Fix: check the batches (and the model's dtype)")


def no_batches(where: str) -> InvalidArgumentError:
    """The error for calibration batches that yield nothing."""
    return InvalidArgumentError(f"{where}: the calibration batches yielded nothing (a generator serves one call; "
                                "pass a list to use them again)")


def traced_constants(analysis: Analysis) -> dict[str, Any]:
    """The non-tensor keyword inputs an ExportedProgram was traced with (e.g. ``use_cache=False``
    from :func:`fprune.hf.trace`): constants of the program, which a batch may leave out."""
    if analysis.source is None:
        return {}
    example = analysis.source.program.example_inputs
    kwargs = example[1] if example is not None else {}
    return {k: v for k, v in kwargs.items() if not isinstance(v, Tensor)}


def call_args(batch: Any, constants: Mapping[str, Any], where: str, seen: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """How the model is called on one batch: a tensor ``model(x)``, a tuple or list ``model(*batch)``,
    a dict ``model(**batch)`` (with the program's traced constants filled in where it leaves them out)."""
    if isinstance(batch, Tensor):
        return (batch,), {}
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    if isinstance(batch, Mapping):
        return (), {**constants, **batch}
    raise InvalidTypeError(
        f"{where}: calibration batch {seen} is a {type(batch).__name__}; expected a tensor "
        "(model(x)), a tuple or list (model(*batch)) or a dict (model(**batch))")


@contextlib.contextmanager
def _evaluating(runner: nn.Module) -> Iterator[None]:
    """Eval mode while the batches run (BatchNorm uses, and does not update, its running statistics;
    dropout is off), restoring every module's own mode after: the modules are the user's."""
    modes = [(m, m.training) for m in runner.modules()]
    runner.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def _measurable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups == 1


class _Recorder:
    """The function the instrumented graph calls before each consumer: ``record(name, x) -> x``."""

    current: Any = None

    @staticmethod
    def call(name: str, x: Any) -> Any:
        return _Recorder.current(name, x) if _Recorder.current is not None else x

    @staticmethod
    @contextlib.contextmanager
    def installed(fn: Any) -> Iterator[None]:
        previous, _Recorder.current = _Recorder.current, fn
        try:
            yield
        finally:
            _Recorder.current = previous


def _instrumented(analysis: Analysis, consumers: list[str]) -> Any:
    """A callable running the analysed model with a record call before each consumer's input."""
    wanted = {analysis.roles[name].node: name for name in consumers}
    if analysis.source is None:  # torch.fx: the analysis graph is the model's GraphModule
        root = analysis.graph
        graph = copy.deepcopy(root.graph)
        names = wanted
    else:  # torch.export: the program's own module, whose nodes the lifted ones stand for
        root = analysis.source.program.module()
        graph = root.graph
        names = {analysis.source.nodes[node]: name for node, name in wanted.items() if node in analysis.source.nodes}
    for node in list(graph.nodes):
        name = names.get(node.name)
        if name is None or not node.args or not isinstance(node.args[0], Node):
            continue
        with graph.inserting_before(node):
            recorded = graph.call_function(_Recorder.call, (name, node.args[0]))
        node.args = (recorded, *node.args[1:])
    if analysis.source is None:
        return GraphModule(root, graph)
    root.recompile()
    return root


class _Counter:
    """Batches seen, on stderr, where tqdm is not installed."""

    def __init__(self, what: str, unit: str = "batch") -> None:
        self.what, self.unit, self.n = what, unit, 0

    def __enter__(self) -> _Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        print(file=sys.stderr)

    def update(self, k: int) -> None:
        self.n += k
        plural = self.unit + ("es" if self.unit.endswith("ch") else "s")
        print(f"\r{self.what}: {self.n} {plural}", end="", file=sys.stderr, flush=True)


class _Silent:
    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, k: int) -> None:
        return None


def _progress(enabled: bool, what: str, total: int | None, unit: str = "batch") -> Any:
    if not enabled:
        return _Silent()
    if importlib.util.find_spec("tqdm") is None:
        return _Counter(what, unit)
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr)
