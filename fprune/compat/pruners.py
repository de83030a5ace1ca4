"""The reference's three pruners: their counting and tie rules, scored by the core.

Each ``update_mask`` reads the *masked* tensor (``getattr(module, tensor_name)``,
so rows pruned by an earlier step score as zero rows), scores its rows with a
core scorer (:data:`fprune.score_l1` or :func:`fprune.score_fpgm`, bitwise equal
to the reference's ``norm`` / ``cdist`` expressions) and selects the rows to
drop with the very ``torch.topk`` call the reference makes, so masks agree with
the reference's even among equal scores.  (``torch.topk`` does not order equal
scores by index; :func:`fprune.topk_mask` keeps its own documented rule, the
lower index pruned first, and is not used here.)  Masks only ever lose rows,
except ``FPGMPruner`` with ``sparsity_level <= 0``, which keeps every row.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.compat import SaliencyPruner
    >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 1.0], [4.0, 0.0], [0.5, 0.0], [3.0, 3.0]]))
    >>> pruner = SaliencyPruner({"sparsity_level": 0.5})
    >>> pruner.prepare(net, [{"tensor_fqn": "0.weight"}])
    >>> pruner.step()
    >>> pruner.state["0.weight"]["mask"]
    tensor([False,  True, False,  True])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fprune.compat.base import BaseStructuredSparsifier
from fprune.compat.parametrization import FakeStructuredSparsity
from fprune.errors import InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.scores import score_fpgm, score_l1, score_tensor
from fprune.types import Scorer

__all__ = ["SaliencyPruner", "LSTMSaliencyPruner", "FPGMPruner"]


def _sparsity(kwargs: Mapping[str, Any], who: str, tensor_name: str) -> float:
    if "sparsity_level" not in kwargs:
        raise InvalidArgumentError(
            f"{who}.update_mask on {tensor_name!r} needs a 'sparsity_level'; none was configured. "
            f"Fix: {who}({{'sparsity_level': 0.5}}) or add it to the config entry"
        )
    value = kwargs["sparsity_level"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise InvalidArgumentError(
            f"{who}: sparsity_level for {tensor_name!r} must be a number, got {value!r}; pass e.g. 0.5"
        )
    return float(value)


def _count(n: int, k: int, sparsity: float, who: str, tensor_name: str) -> int:
    if not 0 <= k <= n:
        raise InvalidArgumentError(
            f"{who}: sparsity_level={sparsity!r} asks to prune {k} of the {n} rows of {tensor_name!r}; "
            "pass a sparsity_level in [0, 1]"
        )
    return k


def _weight_and_mask(module: nn.Module, tensor_name: str, who: str) -> tuple[Tensor, Tensor]:
    """The masked tensor (``getattr(module, tensor_name)``) and its first parametrization's mask.

    The mask is read as the reference reads it, ``module.parametrizations.<name>[0].mask``.
    """
    try:
        plist = getattr(module.parametrizations, tensor_name)
        first = plist[0]
    except (AttributeError, IndexError, KeyError) as exc:
        raise InvalidArgumentError(
            f"{who}.update_mask: {type(module).__name__}.{tensor_name} carries no mask; "
            "call prepare(model, config) before step()"
        ) from exc
    mask = first.mask
    if not isinstance(mask, Tensor):
        raise InvalidTypeError(f"{who}: the mask of {tensor_name!r} is a {type(mask).__name__}, not a tensor")
    if len(plist) == 1 and type(first) is FakeStructuredSparsity:
        weight = first.forward(plist.original)  # what the attribute access computes, minus its overhead
    else:
        weight = getattr(module, tensor_name)
    if not isinstance(weight, Tensor) or weight.dim() <= 1:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise InvalidWeightError(
            f"{who}: structured pruning needs a weight with 2 or more dimensions; "
            f"{type(module).__name__}.{tensor_name} is {shape}"
        )
    return weight, mask


def _l1(weight: Tensor) -> Tensor:
    """:data:`fprune.score_l1`'s row function on the rows of `weight` (bitwise the reference's norm).

    Called without :func:`fprune.scores.score_tensor`'s checks (finite values,
    16-bit upcast): the reference scores whatever the weight holds, and the
    checks would double the cost of ``step()``.
    """
    return score_l1.rows(weight.detach().flatten(1), None)


class _CDist:
    """``x -> torch.cdist(x, x, p)``: the reference's ``dist_fn`` for an int ``dist``."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, x: Tensor) -> Tensor:
        return torch.cdist(x, x, p=self.p)


class SaliencyPruner(BaseStructuredSparsifier):
    """Prunes the ``int(n * sparsity_level)`` rows with the lowest L1 norm of the masked weight.

    Scores are :data:`fprune.score_l1` of ``getattr(module, tensor_name)``;
    the rows dropped are ``(-scores).topk(k).indices``, the reference's call,
    so ties fall as they do there.  Constructor: ``SaliencyPruner(defaults,
    patterns=None)``; ``sparsity_level`` comes from ``defaults`` or the config.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> pruner = SaliencyPruner({"sparsity_level": 0.25})
        >>> pruner.prepare(net, [{"tensor_fqn": "0.weight"}])
        >>> pruner.step()
        >>> int(pruner.state["0.weight"]["mask"].sum())
        3
    """

    def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
        """Sets to False the mask entries of the lowest-saliency rows."""
        who = type(self).__name__
        weights, mask = _weight_and_mask(module, tensor_name, who)
        sparsity = _sparsity(kwargs, who, tensor_name)
        n = mask.shape[0]
        k = _count(n, int(n * sparsity), sparsity, who, tensor_name)
        mask[(-_l1(weights)).topk(k).indices] = False


class LSTMSaliencyPruner(BaseStructuredSparsifier):
    """Prunes each quarter (gate) of a packed LSTM weight separately, by L1 saliency.

    The mask of ``weight_ih_l{k}`` / ``weight_hh_l{k}`` (``4 * hidden_size``
    rows, gates i, f, g, o) is split in four; in each quarter the
    ``int(quarter * sparsity_level)`` rows of lowest L1 norm are dropped
    (``topk(k, largest=False, sorted=False)``, the reference's call).  The four
    gates, and the input and hidden weights, generally keep *different* units;
    :meth:`prune` reproduces the reference's per-gate result (see
    :mod:`fprune.compat`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lstm = nn.LSTM(2, 2)
        >>> pruner = LSTMSaliencyPruner({"sparsity_level": 0.5})
        >>> pruner.prepare(lstm, [{"tensor_fqn": "weight_ih_l0"}])
        >>> pruner.step()
        >>> [int(q.sum()) for q in pruner.state["weight_ih_l0"]["mask"].split(2)]
        [1, 1, 1, 1]
    """

    def update_mask(self, module: nn.Module, tensor_name: str, **kwargs: Any) -> None:
        """Sets to False the lowest-saliency rows of each gate quarter."""
        who = type(self).__name__
        weights, _ = _weight_and_mask(module, tensor_name, who)
        for p in getattr(module.parametrizations, tensor_name):
            if not isinstance(p, FakeStructuredSparsity):
                continue
            mask = p.mask
            sparsity = _sparsity(kwargs, who, tensor_name)
            saliency = _l1(weights)
            split = len(mask) // 4
            if split == 0:
                raise InvalidWeightError(
                    f"{who}: {tensor_name!r} has {len(mask)} rows; a packed LSTM weight has "
                    "4 * hidden_size rows (gates i, f, g, o)"
                )
            for keep, sal in zip(torch.split(mask, split), torch.split(saliency, split)):
                k = _count(len(keep), int(len(keep) * sparsity), sparsity, who, tensor_name)
                keep.data[sal.topk(k, largest=False, sorted=False).indices] = False


class FPGMPruner(BaseStructuredSparsifier):
    """Filter Pruning via Geometric Median: prunes the ``round(n * sparsity_level)`` most central rows.

    A row's score is the sum of its distances to every row of the masked
    weight (:func:`fprune.score_fpgm`, ``dist`` 1, 2 or a callable
    ``[n, k] -> [n, n]``); the rows dropped are
    ``torch.topk(scores, k, largest=False).indices``, the reference's call.
    ``sparsity_level <= 0`` keeps every row and ``>= 1`` drops every row
    (:meth:`prune` then refuses: a layer cannot be removed whole).

    Args:
        sparsity_level: default fraction of rows to prune.
        dist: 1 (L1), 2 or None (L2, the default), or a callable distance matrix.

    Raises:
        InvalidArgumentError, InvalidTypeError: ``dist`` is not 1, 2, None or
            callable (the reference raises ``NotImplementedError``).

    Example:
        >>> import torch
        >>> pruner = FPGMPruner(0.3)
        >>> pruner._compute_distance(torch.tensor([[3.0, 3.0], [2.0, 2.0], [0.0, 0.0]]))
        tensor([5.6569, 4.2426, 7.0711])
    """

    def __init__(self, sparsity_level: float = 0.5, dist: Callable[[Tensor], Tensor] | int | None = None) -> None:
        if dist is None:
            dist = 2
        self._scorer: Scorer = score_fpgm(dist)
        self.dist_fn: Callable[[Tensor], Tensor] = dist if callable(dist) else _CDist(float(dist))
        super().__init__(defaults={"sparsity_level": sparsity_level})

    def _compute_distance(self, t: Tensor) -> Tensor:
        """Sum of each row's distances to all rows of `t` (flattened over dims 1..)."""
        return score_tensor(self._scorer, t)

    def update_mask(  # type: ignore[override]
        self, module: nn.Module, tensor_name: str, sparsity_level: float, **kwargs: Any
    ) -> None:
        """Sets to False the mask entries of the rows closest to the geometric median."""
        who = type(self).__name__
        weight, mask = _weight_and_mask(module, tensor_name, who)
        sparsity = _sparsity({"sparsity_level": sparsity_level}, who, tensor_name)
        if sparsity <= 0:
            mask.data = torch.ones_like(mask).bool()
        elif sparsity >= 1.0:
            mask.data = torch.zeros_like(mask).bool()
        else:
            distance = self._compute_distance(weight)
            n = weight.shape[0]
            k = min(max(round(sparsity * n), 0), n)
            mask[torch.topk(distance, k=k, largest=False).indices] = False
