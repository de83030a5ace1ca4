"""Retraining-free recovery: re-solve what reads the removed channels, from calibration batches.

``reconstruct(batches)`` is a ``Plan -> Plan`` stage: the plan keeps its masks and gains new values
for the tensors of the pruned model, which :func:`fprune.apply_patterns` writes in::

    pipe(model, score_wanda(b), topk_mask(0.5), reconstruct(b), apply_patterns)

For each ``Linear`` or ``Conv2d`` that loses input columns (a consumer of a pruned group), with
``x`` its input on the original model over every token of the batches (for a convolution, every
input patch, ``in * kh * kw`` columns, a removed channel removing its patch columns), ``K`` the columns kept and ``R`` those
removed:

* ``method="lstsq"``: its kept weights are re-solved so that ``W' x_K`` best matches the original
  ``W x`` in least squares: ``W' = W S[:, K] (S[K, K] + lambda I)^-1`` with ``S = E[x x^T]`` and
  ``lambda = damp * mean(diag S[K, K])`` (ridge damping; ``damp=0`` uses the pseudo-inverse);
* ``method="bias"`` (FLAP's compensation): the removed columns' mean contribution moves into the
  bias, ``b' = b + W[:, R] E[x_R]``; a consumer without a bias is left as it is (its class has no
  bias to hold it), with a warning.

The statistics are those of the **original** model's inputs, one pass over the batches for all
consumers (not yet re-collected layer by layer on the pruned model).  The result is no longer the
original with the removed slices zeroed: it is closer to the original's output on data like the
batches.  Grouped convolutions, ``Conv1d``/``Conv3d`` and string padding are not re-solved yet (a
warning names them), nor are BatchNorm statistics re-estimated.  Statistics accumulate in
float64; ``lstsq`` keeps one ``in x kept`` matrix per consumer (``in * kh * kw`` rows for a convolution).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from toolz import pipe
    >>> from fprune import apply_patterns, score_wanda, topk_mask
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    >>> batches = [torch.randn(64, 6) for _ in range(4)]
    >>> plan = pipe(net, score_wanda(batches), topk_mask(0.5), reconstruct(batches))
    >>> plan
    Plan(pruned={'0': '6/12'}, values=1)
    >>> x = torch.randn(256, 6)
    >>> plain = pipe(net, score_wanda(batches), topk_mask(0.5), apply_patterns)
    >>> err = lambda m: float((m(x) - net(x)).pow(2).mean())
    >>> err(apply_patterns(plan)) < err(plain)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fprune.calibrate import _check, record_inputs
from fprune.errors import FpruneWarning, InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.plan import Plan

__all__ = ["Reconstruct", "reconstruct"]

Method = Literal["lstsq", "bias"]


@dataclass(frozen=True, eq=False)
class Reconstruct:
    """The ``Plan -> Plan`` stage :func:`reconstruct` returns."""

    batches: Iterable[Any] = field(repr=False)
    method: Method = "lstsq"
    damp: float = 0.01
    progress: bool = False

    def __repr__(self) -> str:
        return f"reconstruct(<batches>, method={self.method!r}, damp={self.damp!r})"

    def __call__(self, plan: Plan) -> Plan:
        if not isinstance(plan, Plan):
            raise InvalidTypeError(f"{self!r} expects a Plan (e.g. topk_mask(0.5)(score_wanda(b)(model))), "
                                   f"got {type(plan).__name__}")
        analysis = plan.analysis
        modules = dict(analysis.graph.named_modules())
        params = plan.params()
        targets: dict[str, tuple[list[int], list[int] | None]] = {}  # consumer -> kept columns, kept rows
        skipped: list[str] = []
        for name, module in modules.items():
            if name not in analysis.roles:
                continue
            entries = {e["dim"]: e["keep"] for e in params.get(analysis.public_name(f"{name}.weight"), [])}
            if 1 not in entries:
                continue
            if not _solvable(module):
                skipped.append(name)
                continue
            targets[name] = (entries[1], entries.get(0))
        if skipped:
            warnings.warn(f"{self!r} re-solves Linear and Conv2d (groups=1, zero padding) consumers only; left as "
                          f"pruned: {', '.join(skipped)}", FpruneWarning, stacklevel=2)
        if not targets:
            return plan
        # every target is measured per weight column (a convolution over its patches); lstsq also keeps
        # the second moments of the kept columns
        outer: dict[str, Tensor | None] = {
            name: torch.tensor(_columns(modules[name], cols)) if self.method == "lstsq" else None
            for name, (cols, _) in targets.items()}
        stats = record_inputs(analysis, sorted(targets), self.batches, repr(self), outer=outer, progress=self.progress)
        values = dict(plan.values)
        no_bias: list[str] = []
        for name, (cols, rows) in targets.items():
            module = modules[name]
            assert isinstance(module, (nn.Linear, nn.Conv2d))
            found = self._solve(name, module, stats[name], cols, rows)
            if found is None:
                no_bias.append(name)
                continue
            key, value = found
            values[analysis.public_name(f"{name}.{key}")] = value
        if no_bias:
            warnings.warn(f"{self!r}: {', '.join(no_bias)} have no bias to hold the removed channels' mean "
                          "contribution; left as pruned (method='lstsq' re-solves their weights instead)",
                          FpruneWarning, stacklevel=2)
        return Plan(plan.analysis, plan.masks, plan.options, MappingProxyType(values))

    def _solve(self, name: str, module: nn.Linear | nn.Conv2d, stats: Any, cols: list[int],
               rows: list[int] | None) -> tuple[str, Tensor] | None:
        weight = module.weight.detach().to(torch.float64)
        shape = weight.shape
        weight = weight.reshape(shape[0], -1)
        cols = _columns(module, cols)
        n = max(stats.count, 1)
        kept = torch.tensor(cols, dtype=torch.long)
        removed = torch.ones(weight.shape[1], dtype=torch.bool)
        removed[kept] = False
        out_rows = torch.tensor(rows, dtype=torch.long) if rows is not None else None
        if self.method == "bias":
            if module.bias is None:
                return None
            mean = stats.total / n
            bias = module.bias.detach().to(torch.float64) + weight[:, removed] @ mean[removed]
            value = bias if out_rows is None else bias[out_rows]
            key = "bias"
        else:
            second = stats.outer / n  # E[x x_K^T]: [in, |K|]
            block = second[kept]
            rhs = weight @ second  # [out, |K|]
            if self.damp > 0:
                scale = float(block.diagonal().mean()) or 1.0
                system = block + self.damp * scale * torch.eye(len(cols), dtype=torch.float64)
                solved = torch.linalg.solve(system, rhs.T).T
            else:
                solved = rhs @ torch.linalg.pinv(block, hermitian=True)
            value = solved if out_rows is None else solved[out_rows]
            key = "weight"
        if key == "weight" and isinstance(module, nn.Conv2d):
            value = value.reshape(value.shape[0], -1, *shape[2:])
        if not bool(torch.isfinite(value).all()):
            raise InvalidWeightError(
                f"{self!r}: re-solving {name!r} gave NaN or inf (its inputs' statistics are not finite, or the "
                "system is singular); use damp > 0, or more calibration batches")
        dtype = module.weight.dtype
        return key, value.to(dtype)


def _columns(module: nn.Module, channels: list[int]) -> list[int]:
    """The weight columns of the kept input channels (a convolution: each channel's patch columns)."""
    patch = module.weight[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
    return [c * patch + j for c in channels for j in range(patch)]


def _solvable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def reconstruct(batches: Iterable[Any], method: Method = "lstsq", damp: float = 0.01, *,
                progress: bool = False) -> Reconstruct:
    """A ``Plan -> Plan`` stage re-solving each pruned consumer from calibration batches.

    Args:
        batches: calibration batches: tensors, tuples or dicts of what the model's forward takes.
        method: ``"lstsq"`` (re-solve the kept weights) or ``"bias"`` (FLAP's bias compensation).
        damp: ridge damping of ``lstsq``, relative to the mean input energy (``0``: pseudo-inverse).
        progress: show a progress bar over the batches on stderr.

    Raises:
        InvalidArgumentError, InvalidTypeError: bad arguments; when called, empty or misfit batches,
            non-finite activations; InvalidWeightError: a solve that is not finite.

    Example:
        >>> reconstruct([], method="bias")
        reconstruct(<batches>, method='bias', damp=0.01)
    """
    _check(batches, progress, "reconstruct")
    if method not in ("lstsq", "bias"):
        raise InvalidArgumentError(f"reconstruct expects method 'lstsq' or 'bias', got {method!r}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0 or damp != damp or damp == float("inf"):
        raise InvalidArgumentError(f"reconstruct expects damp as a finite number >= 0, got {damp!r} (0.01 is usual)")
    return Reconstruct(batches, method, float(damp), progress)
