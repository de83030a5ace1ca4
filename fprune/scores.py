"""Pure per-channel scorers at tensor level.

A scorer is a :class:`fprune.types.Scorer` value: a small immutable object
around a *row function* ``rows(matrix[n, k], grad[n, k] | None) -> scores[n]``.
Calling a scorer on a weight tensor runs :func:`score_tensor`, which checks the
weight, flattens it over every dimension but 0 and scores its rows (output
channels).  Higher scores mean *more important*: every mask rule prunes the
lowest scores first.  Lifting a scorer to a whole model is one explicit step
done by :func:`fprune.plan.score_model` (calling the scorer on a module).

Scoring never modifies its input, never builds an autograd graph and returns a
new tensor with the weight's dtype and device.

Example:
    >>> import torch
    >>> from fprune.scores import score_l1, score_fpgm
    >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.5], [0.0, 0.0]])
    >>> score_l1(w)
    tensor([3., 1., 0.])
    >>> score_fpgm(dist=1)
    score_fpgm(dist=1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from fprune.errors import InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.types import Scorer, Scores, register_stage

__all__ = [
    "score_tensor",
    "score_l1",
    "score_l2",
    "score_taylor",
    "score_bn_scale",
    "score_fpgm",
    "score_random",
    "score_lstm",
    "lstm_unit_rows",
    "unit_rows",
]

# 16-bit floats are scored in float32 (several kernels, e.g. cdist, lack them on CPU)
_UPCAST = (torch.float16, torch.bfloat16)
_BLOCK = 1 << 24  # entries a rowwise scorer sees at once (64 MB in float32)
_SEED_LIMIT = 2**64  # torch.Generator.manual_seed accepts seeds in [0, 2**64)


# --------------------------------------------------------------------------- checks


def _where(scorer: object, name: str | None) -> str:
    return f"{scorer!r}" + (f" on {name!r}" if name else "")


def _check_scorer(scorer: object, caller: str) -> Scorer:
    if not isinstance(scorer, Scorer):
        raise InvalidTypeError(
            f"{caller} expects a Scorer value such as fprune.scores.score_l1; "
            f"got {type(scorer).__name__} ({scorer!r}). "
            "Fix: pass one of the score_* values, or the result of score_fpgm(...) or "
            "score_random(...)."
        )
    return scorer


def _check_tensor(weight: object, where: str, *, min_dim: int, form: str, finite: bool = True) -> Tensor:
    """Checks that ``weight`` is a (with `finite`: finite) floating tensor with rows; returns it."""
    if not isinstance(weight, Tensor):
        raise InvalidTypeError(
            f"{where} expects a floating-point torch.Tensor {form}; got {type(weight).__name__}. "
            "Fix: pass a weight tensor such as module.weight."
        )
    if not weight.is_floating_point():
        raise InvalidTypeError(
            f"{where} expects a floating-point tensor {form}; got dtype {weight.dtype} "
            f"with shape {tuple(weight.shape)}. Fix: convert it first, e.g. weight.float()."
        )
    if weight.dim() < min_dim:
        hint = (
            "use score_bn_scale for 1-D per-channel scales (e.g. BatchNorm weight)"
            if min_dim == 2
            else "pass a tensor with one entry per channel"
        )
        raise InvalidWeightError(
            f"{where} expects a tensor {form}; got a {weight.dim()}-D tensor of shape "
            f"{tuple(weight.shape)}. Fix: score a Conv/Linear weight, or {hint}."
        )
    if weight.shape[0] == 0:
        raise InvalidWeightError(
            f"{where} expects a tensor {form} with at least one row (channel); got shape "
            f"{tuple(weight.shape)}. Fix: a layer without output channels cannot be scored; "
            "leave it out."
        )
    if finite and weight.device.type != "meta" and not _all_finite(weight):
        raise _not_finite(weight, where)
    return weight


def _not_finite(weight: Tensor, where: str) -> InvalidWeightError:
    return InvalidWeightError(
        f"{where} expects finite values; the tensor of shape {tuple(weight.shape)} contains "
        "NaN or inf. Fix: check the model (e.g. a diverged training run) before pruning."
    )


def _all_finite(t: Tensor) -> bool:
    """``isfinite(t).all()``, mostly through float32 sums of blocks of rows (a 16-bit block is upcast
    alone, so the temporaries stay small): a NaN or inf anywhere makes its block's sum non-finite,
    and only then (or when finite values overflow it) are that block's elements checked."""
    step = _rows_per_block(t)
    blocks = [t[i:i + step] for i in range(0, t.shape[0], step)] if t.dim() else [t]
    return all(math.isfinite(float(b.sum(dtype=torch.float32))) or bool(torch.isfinite(b).all()) for b in blocks)


def _rows_per_block(t: Tensor, block: int = _BLOCK) -> int:
    """How many of `t`'s rows (dim 0) make a block of at most `block` entries (at least one row)."""
    return max(1, block // max(t[0].numel(), 1)) if t.dim() and t.shape[0] else 1


def _check_grad(weight: Tensor, where: str) -> Tensor:
    """Returns ``weight.grad`` after checking it exists, matches and is finite."""
    grad = weight.grad
    if grad is None:
        raise InvalidWeightError(
            f"{where} needs the gradient of the weight, but weight.grad is None "
            f"(shape {tuple(weight.shape)}). Fix: run a forward pass and loss.backward() first, "
            "without zeroing the gradients."
        )
    if grad.shape != weight.shape:
        raise InvalidWeightError(
            f"{where} expects weight.grad with the weight's shape {tuple(weight.shape)}; got "
            f"{tuple(grad.shape)}. Fix: recompute the gradient with loss.backward()."
        )
    if not _all_finite(grad):
        raise InvalidWeightError(
            f"{where} expects a finite gradient; weight.grad of shape {tuple(grad.shape)} "
            "contains NaN or inf. Fix: check the loss, or lower the learning signal, then "
            "rerun backward()."
        )
    return grad


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    return a.numel() > 0 and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _as_rows(t: Tensor) -> Tensor:
    """A 1-D tensor as ``n`` rows of length 1; otherwise flattened over dims 1.."""
    return t.reshape(-1, 1) if t.dim() == 1 else t.flatten(1)


def _run_rows(
    scorer: Scorer, matrix: Tensor, grad: Tensor | None, *, like: Tensor, where: str
) -> Scores:
    """Runs ``scorer.rows`` without autograd and returns a fresh tensor like ``like``."""
    with torch.no_grad():
        m = matrix.detach()
        g = None if grad is None else grad.detach()
        n = matrix.shape[0]
        step = _rows_per_block(m) if scorer.rowwise else n
        parts = []
        for i in range(0, max(n, 1), step):  # rowwise: blocks of rows, each upcast and scored alone
            mi, gi = m[i:i + step], None if g is None else g[i:i + step]
            if m.dtype in _UPCAST:
                mi, gi = mi.float(), None if gi is None else gi.float()
            parts.append(scorer.rows(mi, gi))
        bad = [p for p in parts if not isinstance(p, Tensor)]  # reported below, as one part
        out = bad[0] if bad else parts[0] if len(parts) == 1 else torch.cat(parts)
        if not isinstance(out, Tensor) or tuple(out.shape) != (n,):
            found = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise InvalidArgumentError(
                f"{where}: the row function must return a 1-D tensor with one score per row, "
                f"shape ({n},); got {found}. Fix: reduce over dimension 1 of the [n, k] matrix."
            )
        out = out.to(dtype=like.dtype, device=like.device)
        if any(_shares_memory(out, t) for t in (like, matrix) + (() if grad is None else (grad,))):
            out = out.clone()
    return out


# --------------------------------------------------------------------------- score_tensor


@register_stage("score_tensor")
def score_tensor(scorer: Scorer, weight: Tensor, *, name: str | None = None) -> Scores:
    """Scores every output channel (row) of one weight tensor.

    Checks the weight, flattens it over every dimension but 0 and applies
    ``scorer.rows``.  Scorers with ``source == "norm"`` (e.g.
    :data:`score_bn_scale`) also accept a 1-D per-channel scale, read as ``n``
    rows of length 1.  When ``scorer.needs_grad`` the rows of ``weight.grad``
    are passed too.  16-bit weights are scored in float32.  Does not modify
    the input; builds no autograd graph; returns a new tensor (never a view of
    the weight) with the weight's dtype and device.

    Args:
        scorer: the scoring rule.
        weight: a floating tensor ``[out_channels, ...]``.
        name: optional name of the tensor (e.g. ``"features.0.weight"``), used
            in error messages.

    Returns:
        A 1-D tensor ``[out_channels]``; higher = more important.

    Raises:
        InvalidTypeError: ``weight`` is not a floating-point tensor.
        InvalidWeightError: wrong rank, no rows, NaN/inf values, or a missing
            gradient for a gradient-based scorer.

    Example:
        >>> import torch
        >>> from fprune.scores import score_tensor, score_l2
        >>> score_tensor(score_l2, torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([5., 1.])
    """
    scorer = _check_scorer(scorer, "score_tensor")
    where = _where(scorer, name)
    norm = scorer.source == "norm"
    form = (
        "of shape [channels] or [channels, ...]"
        if norm
        else "of shape [out_channels, ...] with at least 2 dimensions"
    )
    # a sum of |w| or w**2 is NaN or inf where a row holds one: those scores check the weight themselves
    reveals = scorer.rows in (_l1_rows, _l2_rows) and not scorer.needs_grad
    weight = _check_tensor(weight, where, min_dim=1 if norm else 2, form=form, finite=not reveals)
    if weight.device.type == "meta":  # shapes without values: only scores that read no values
        if not isinstance(scorer.rows, _RandomRows):
            raise InvalidWeightError(
                f"{where} reads the weight's values, but the tensor of shape {tuple(weight.shape)} is on "
                "the meta device (it has none). Fix: load the weights first, or score with "
                "score_random(seed), which needs only the shapes."
            )
        return scorer.rows(_as_rows(weight), None).to(weight.dtype)  # CPU: masks are chosen there
    grad = _check_grad(weight, where) if scorer.needs_grad else None
    out = _run_rows(
        scorer,
        _as_rows(weight),
        None if grad is None else _as_rows(grad),
        like=weight,
        where=where,
    )
    if reveals and not bool(torch.isfinite(out).all()) and not _all_finite(weight):  # else an overflow
        raise _not_finite(weight, where)
    return out


# --------------------------------------------------------------------------- row functions


def _l1_rows(rows: Tensor, grad: Tensor | None) -> Tensor:
    out: Tensor = torch.linalg.vector_norm(rows, ord=1, dim=1)
    return out


def _l2_rows(rows: Tensor, grad: Tensor | None) -> Tensor:
    out: Tensor = torch.linalg.vector_norm(rows, ord=2, dim=1)
    return out


def _taylor_rows(rows: Tensor, grad: Tensor | None) -> Tensor:
    if grad is None:
        raise InvalidWeightError(
            "score_taylor needs the gradient rows, got None. Fix: call it through score_tensor "
            "(score_taylor(weight)) after loss.backward()."
        )
    return (rows * grad).abs().sum(dim=1)


@dataclass(frozen=True)
class _FpgmRows:
    """Row function of :func:`score_fpgm`: sum of |distances| to all rows."""

    dist: int | Callable[[Tensor], Tensor]

    def __call__(self, rows: Tensor, grad: Tensor | None) -> Tensor:
        n = rows.shape[0]
        if callable(self.dist):
            matrix = self.dist(rows)
            if not isinstance(matrix, Tensor) or tuple(matrix.shape) != (n, n):
                found = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
                raise InvalidArgumentError(
                    f"score_fpgm(dist={self.dist!r}): the distance function must return an "
                    f"[n, n] tensor for an [n, k] matrix, here ({n}, {n}); got {found}. "
                    "Fix: return the pairwise distance matrix, e.g. torch.cdist(x, x)."
                )
        else:
            matrix = torch.cdist(rows, rows, p=float(self.dist))
        return torch.sum(torch.abs(matrix), 1)


@dataclass(frozen=True)
class _RandomRows:
    """Row function of :func:`score_random`: seeded uniform scores."""

    seed: int

    def __call__(self, rows: Tensor, grad: Tensor | None) -> Tensor:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed)
        return torch.rand(rows.shape[0], generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------- scorer values

score_l1 = Scorer(name="score_l1", rows=_l1_rows, rowwise=True)
"""L1 norm of each row (``|w|`` summed over everything but dim 0).

Equals the saliency of ``torch.ao``'s ``SaliencyPruner``
(``weight.norm(dim=(1, ..., d - 1), p=1)``), which prunes the smallest first.

Example:
    >>> import torch
    >>> from fprune.scores import score_l1
    >>> score_l1(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
    tensor([3., 1.])
"""

score_l2 = Scorer(name="score_l2", rows=_l2_rows, rowwise=True)
"""L2 norm of each row.

Example:
    >>> import torch
    >>> from fprune.scores import score_l2
    >>> score_l2(torch.ones(2, 1, 2, 2))
    tensor([2., 2.])
"""

score_taylor = Scorer(name="score_taylor", rows=_taylor_rows, needs_grad=True, rowwise=True)
"""First-order Taylor importance: ``sum(|w * grad|)`` over each row.

Needs ``weight.grad``: run ``loss.backward()`` first.

Example:
    >>> import torch
    >>> from fprune.scores import score_taylor
    >>> w = torch.tensor([[1.0, -2.0], [3.0, 0.0]], requires_grad=True)
    >>> (w * torch.tensor([[1.0, 1.0], [0.0, 5.0]])).sum().backward()
    >>> score_taylor(w)
    tensor([3., 0.])
"""

score_bn_scale = Scorer(name="score_bn_scale", rows=_l1_rows, source="norm", rowwise=True)
"""Magnitude of a per-channel scale, e.g. BatchNorm ``gamma`` (network slimming).

On a 1-D tensor it returns ``|x|``; on a 2-D or larger tensor, the L1 norm of
each row.  Lifted to a model it reads each group's normalisation layer.

Example:
    >>> import torch
    >>> from fprune.scores import score_bn_scale
    >>> score_bn_scale(torch.tensor([0.5, -2.0, 0.0]))
    tensor([0.5000, 2.0000, 0.0000])
"""


def score_fpgm(dist: int | Callable[[Tensor], Tensor] = 2) -> Scorer:
    """Filter Pruning via Geometric Median: sum of distances to all other rows.

    Each row's score is ``sum_j |d(row_i, row_j)|`` with ``d`` the L1
    (``dist=1``) or L2 (``dist=2``) distance, computed as
    ``torch.cdist(rows, rows, p=dist)``, or the ``[n, n]`` matrix a callable
    ``dist`` returns for the ``[n, k]`` row matrix.  This equals
    ``torch.ao``'s ``FPGMPruner(dist=dist)._compute_distance(weight)``.
    Rows with the *smallest* sum lie closest to the geometric median and are
    the most replaceable, so, as for every scorer, lower = pruned first.

    Args:
        dist: 1, 2, or a function ``[n, k] -> [n, n]``.

    Returns:
        A :class:`~fprune.types.Scorer` whose repr reads like this call.

    Raises:
        InvalidArgumentError: ``dist`` is an int other than 1 or 2.
        InvalidTypeError: ``dist`` is neither an int nor callable.

    Example:
        >>> import torch
        >>> from fprune.scores import score_fpgm
        >>> fpgm = score_fpgm(dist=1)
        >>> fpgm
        score_fpgm(dist=1)
        >>> fpgm(torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
        tensor([4., 3., 5.])
    """
    if isinstance(dist, bool) or not (isinstance(dist, int) or callable(dist)):
        raise InvalidTypeError(
            f"score_fpgm expects dist to be 1, 2 or a callable [n, k] -> [n, n]; got "
            f"{type(dist).__name__} ({dist!r}). Fix: pass dist=1 (L1), dist=2 (L2) or a function "
            "such as lambda x: torch.cdist(x, x, p=3)."
        )
    if isinstance(dist, int) and dist not in (1, 2):
        raise InvalidArgumentError(
            f"score_fpgm expects dist=1 (L1) or dist=2 (L2); got dist={dist}. Fix: for another "
            f"distance pass a callable, e.g. dist=lambda x: torch.cdist(x, x, p={dist})."
        )
    return Scorer(name="score_fpgm", rows=_FpgmRows(dist), args=(("dist", dist),))


def score_random(seed: int) -> Scorer:
    """Seeded random scores, a baseline for comparisons.

    The scores for ``n`` rows are ``torch.rand(n, dtype=float64)`` drawn from
    a private ``torch.Generator`` seeded with ``seed``, then cast to the
    weight's dtype and device: the same seed and ``n`` give the same scores,
    whatever the weight values and the global RNG state, which is not touched.

    Args:
        seed: an int in ``[0, 2**64)``.

    Returns:
        A :class:`~fprune.types.Scorer` whose repr reads like this call.

    Raises:
        InvalidTypeError: ``seed`` is not an int.
        InvalidArgumentError: ``seed`` is out of range.

    Example:
        >>> import torch
        >>> from fprune.scores import score_random
        >>> score_random(seed=0)
        score_random(seed=0)
        >>> w = torch.zeros(4, 3)
        >>> torch.equal(score_random(0)(w), score_random(0)(w))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidTypeError(
            f"score_random expects an int seed; got {type(seed).__name__} ({seed!r}). "
            "Fix: pass e.g. score_random(seed=0)."
        )
    if not 0 <= seed < _SEED_LIMIT:
        raise InvalidArgumentError(
            f"score_random expects a seed in [0, 2**64); got {seed}. Fix: pass a non-negative "
            "seed, e.g. seed % 2**64."
        )
    return Scorer(name="score_random", rows=_RandomRows(seed), args=(("seed", seed),))


# --------------------------------------------------------------------------- LSTM


def _check_hidden_size(hidden_size: object, caller: str) -> int:
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int):
        raise InvalidTypeError(
            f"{caller} expects an int hidden_size; got {type(hidden_size).__name__} "
            f"({hidden_size!r}). Fix: pass lstm.hidden_size."
        )
    if hidden_size < 1:
        raise InvalidArgumentError(
            f"{caller} expects hidden_size >= 1; got {hidden_size}. Fix: pass lstm.hidden_size."
        )
    return hidden_size


def _check_packed(weight: Tensor, hidden_size: int, caller: str) -> None:
    if weight.shape[0] != 4 * hidden_size:
        raise InvalidWeightError(
            f"{caller} expects a packed LSTM tensor with 4 * hidden_size = {4 * hidden_size} rows "
            f"(gates i, f, g, o stacked); got shape {tuple(weight.shape)}. Fix: pass "
            "lstm.weight_ih_l0 / weight_hh_l0 with hidden_size=lstm.hidden_size "
            "(projections, proj_size > 0, are not supported)."
        )


def lstm_unit_rows(weight: Tensor, hidden_size: int) -> Tensor:
    """Regroups a packed LSTM tensor into one row per hidden unit.

    A packed LSTM weight ``[4 * H, k]`` stacks the gates i, f, g, o.  Row ``u``
    of the result is the concatenation of rows ``u, H + u, 2H + u, 3H + u``
    (unit ``u`` in each gate), so the result has shape ``[H, 4 * k]``.  A 1-D
    packed bias ``[4 * H]`` becomes ``[H, 4]``.  Returns a new tensor (a copy,
    never a view); does not modify the input.

    Args:
        weight: a packed LSTM tensor ``[4 * hidden_size, ...]``.
        hidden_size: the LSTM's hidden size ``H``.

    Returns:
        The ``[H, 4 * k]`` matrix of per-unit rows.

    Raises:
        InvalidTypeError: ``weight`` is not a tensor or ``hidden_size`` not an int.
        InvalidWeightError: ``weight.shape[0] != 4 * hidden_size``.

    Example:
        >>> import torch
        >>> from fprune.scores import lstm_unit_rows
        >>> lstm_unit_rows(torch.arange(8.0).reshape(8, 1), hidden_size=2)
        tensor([[0., 2., 4., 6.],
                [1., 3., 5., 7.]])
    """
    hidden_size = _check_hidden_size(hidden_size, "lstm_unit_rows")
    if not isinstance(weight, Tensor) or weight.dim() < 1:
        found = (
            f"shape {tuple(weight.shape)}" if isinstance(weight, Tensor) else type(weight).__name__
        )
        raise InvalidTypeError(
            f"lstm_unit_rows expects a packed LSTM tensor of shape [4 * hidden_size, ...]; got "
            f"{found}. Fix: pass lstm.weight_ih_l0, weight_hh_l0 or a bias."
        )
    _check_packed(weight, hidden_size, "lstm_unit_rows")
    return unit_rows(weight, hidden_size, 4)


def unit_rows(weight: Tensor, hidden_size: int, gates: int) -> Tensor:
    """:func:`lstm_unit_rows` for any number of packed gates (GRU: 3, RNN: 1); a new tensor.

    Example:
        >>> import torch
        >>> unit_rows(torch.arange(6.0).reshape(6, 1), hidden_size=2, gates=3)
        tensor([[0., 2., 4.],
                [1., 3., 5.]])
    """
    grouped = weight.reshape(gates, hidden_size, -1).permute(1, 0, 2)
    return grouped.clone(memory_format=torch.contiguous_format).reshape(hidden_size, -1)


def score_lstm(weight: Tensor, hidden_size: int, scorer: Scorer = score_l1) -> Scores:
    """Scores the hidden units of a packed LSTM weight, one score per unit.

    Unit ``u``'s four gate rows (``u, H + u, 2H + u, 3H + u``) are joined into
    one row (see :func:`lstm_unit_rows`) and scored with ``scorer.rows``, so
    one mask on the result removes the same unit from all four gates.  For
    :data:`score_l1` the score is the sum of the four rows' L1 norms.  Checks
    the weight as :func:`score_tensor` does; does not modify it.

    Args:
        weight: a packed LSTM weight ``[4 * hidden_size, in]``.
        hidden_size: the LSTM's hidden size ``H``.
        scorer: the rule applied to the joined rows (default :data:`score_l1`).

    Returns:
        A 1-D tensor ``[hidden_size]`` with the weight's dtype and device.

    Raises:
        InvalidTypeError: wrong argument types or a non-floating weight.
        InvalidWeightError: wrong shape, NaN/inf, or a missing gradient.

    Example:
        >>> import torch
        >>> from fprune.scores import score_lstm
        >>> w = torch.tensor([[1.0], [2.0], [1.0], [0.0], [-1.0], [0.0], [1.0], [0.0]])
        >>> score_lstm(w, hidden_size=2)
        tensor([4., 2.])
    """
    scorer = _check_scorer(scorer, "score_lstm")
    hidden_size = _check_hidden_size(hidden_size, "score_lstm")
    where = f"score_lstm(scorer={scorer!r})"
    weight = _check_tensor(
        weight, where, min_dim=2, form=f"of shape [4 * hidden_size, in] = [{4 * hidden_size}, in]"
    )
    _check_packed(weight, hidden_size, "score_lstm")
    grad = _check_grad(weight, where) if scorer.needs_grad else None
    with torch.no_grad():
        rows = lstm_unit_rows(weight.detach(), hidden_size)
        grad_rows = None if grad is None else lstm_unit_rows(grad.detach(), hidden_size)
    return _run_rows(scorer, rows, grad_rows, like=weight, where=where)


# Module-level values carry their examples in attribute docstrings, which doctest
# does not collect; the same examples are registered here (read-only) so they run.
__test__ = MappingProxyType(
    {
        "score_l1": """
    >>> import torch
    >>> from fprune.scores import score_l1
    >>> score_l1(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
    tensor([3., 1.])
    """,
        "score_l2": """
    >>> import torch
    >>> from fprune.scores import score_l2
    >>> score_l2(torch.ones(2, 1, 2, 2))
    tensor([2., 2.])
    """,
        "score_taylor": """
    >>> import torch
    >>> from fprune.scores import score_taylor
    >>> w = torch.tensor([[1.0, -2.0], [3.0, 0.0]], requires_grad=True)
    >>> (w * torch.tensor([[1.0, 1.0], [0.0, 5.0]])).sum().backward()
    >>> score_taylor(w)
    tensor([3., 0.])
    """,
        "score_bn_scale": """
    >>> import torch
    >>> from fprune.scores import score_bn_scale
    >>> score_bn_scale(torch.tensor([0.5, -2.0, 0.0]))
    tensor([0.5000, 2.0000, 0.0000])
    """,
    }
)
