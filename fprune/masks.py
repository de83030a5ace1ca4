"""Pure keep-mask rules: from per-channel scores to boolean keep-masks.

A mask factory takes hyper-parameters, checks them, and returns a small frozen
value implementing :class:`fprune.types.MaskFn`; its ``repr`` reads like the
call that built it.  ``select`` maps one score vector to a mask (``True`` =
keep), ``select_many`` maps named score vectors to named masks, and calling the
value on a tensor is ``select`` while calling it on a scored model
(:class:`fprune.plan.Scored`) returns a :class:`fprune.plan.Plan`.

Every rule prunes the lowest scores first and breaks ties deterministically:
among equal scores the **lower index is pruned first** (for global ranking:
the earlier name in the mapping's order, then the lower index).  No rule
modifies its input; each returns a new ``torch.bool`` tensor on the scores'
device.

Example:
    >>> import torch
    >>> from fprune.masks import topk_mask
    >>> rule = topk_mask(0.5)
    >>> rule
    topk_mask(sparsity=0.5)
    >>> rule(torch.tensor([0.3, 0.1, 0.2, 0.4]))
    tensor([ True, False, False,  True])
"""

from __future__ import annotations

import functools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, overload

import torch
from torch import Tensor
from typing_extensions import TypeAlias

from fprune._names import check_patterns, name_matches
from fprune.errors import InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.types import _STAGES, Mask, Scores

if TYPE_CHECKING:
    from fprune.plan import Plan, Scored

__all__ = [
    "Normalize",
    "Producers",
    "TopK",
    "Threshold",
    "GlobalTopK",
    "topk_mask",
    "threshold_mask",
    "global_topk_mask",
]

Normalize: TypeAlias = Literal["mean", "max", "l2", "none"]  # per-vector scaling before ranking
Producers: TypeAlias = Mapping[str, Sequence[str]]  # vector (group) name -> fqns of the modules producing it
_NORMALIZE_CHOICES = ("mean", "max", "l2", "none")
_DIVISORS: Mapping[str, Callable[[Tensor], Tensor]] = MappingProxyType(
    {  # |scores| -> the positive constant a vector is divided by ("none" divides by nothing)
        "mean": torch.mean,
        "max": torch.amax,
        "l2": torch.linalg.vector_norm,
    }
)


# --------------------------------------------------------------------------- argument checks


def _check_real(value: object, name: str, factory: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"{factory} expects {name} to be a real number; got {type(value).__name__} "
            f"({value!r}). Fix: pass a Python float, e.g. {factory}({example})."
        )
    result = float(value)
    if math.isnan(result):
        raise InvalidArgumentError(
            f"{factory} expects {name} to be a number; got nan. "
            f"Fix: pass e.g. {factory}({example})."
        )
    return result


def _check_fraction(value: object, name: str, factory: str, *, closed: bool = False) -> float:
    """Checks ``value`` is in [0, 1) (or [0, 1] when ``closed``)."""
    result = _check_real(value, name, factory, f"{name}=0.5")
    if not (0.0 <= result <= 1.0 if closed else 0.0 <= result < 1.0):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise InvalidArgumentError(
            f"{factory} expects {name} in {interval} (a fraction of channels to prune); got "
            f"{value!r}. Fix: pass e.g. {name}=0.5"
            + ("" if closed else "; pruning every channel (1.0) is not allowed")
            + "."
        )
    return result


def _check_count(value: object, name: str, factory: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            f"{factory} expects {name} to be an int; got {type(value).__name__} ({value!r}). "
            f"Fix: pass e.g. {name}={max(minimum, 1)}."
        )
    if value < minimum:
        raise InvalidArgumentError(
            f"{factory} expects {name} >= {minimum}; got {value}. Fix: pass e.g. "
            f"{name}={max(minimum, 1)}."
        )
    return value


def _check_per_module(value: object, factory: str) -> tuple[tuple[str, float], ...]:
    """Checks a mapping (or pairs) module name or glob -> sparsity; returns the pairs in order."""
    example = "per_module={'layer4.*': 0.7, 'fc1': 0.2}"
    pairs: list[tuple[object, object]] | None = None
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):  # pairs, as the field stores them
        pairs = list(value)
    if pairs is None or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        raise InvalidTypeError(
            f"{factory} expects per_module to be a mapping module name or glob -> sparsity; got "
            f"{type(value).__name__} ({value!r}). Fix: pass e.g. {example}."
        )
    out: list[tuple[str, float]] = []
    for key, fraction in pairs:
        if not isinstance(key, str) or not key:
            raise InvalidTypeError(
                f"{factory} expects the keys of per_module to be module names or globs (non-empty str); "
                f"got {key!r}. Fix: pass e.g. {example}."
            )
        if any(key == seen for seen, _ in out):
            raise InvalidArgumentError(
                f"{factory} got the per_module key {key!r} twice. Fix: give each key once; the first "
                "key matching a group wins."
            )
        out.append((key, _check_fraction(fraction, f"per_module[{key!r}]", factory)))
    return tuple(out)


def _check_producers(producers: object, where: str) -> Producers:
    if not isinstance(producers, Mapping):
        raise InvalidTypeError(
            f"{where} expects producers as a mapping name -> module names; got "
            f"{type(producers).__name__}. Fix: pass e.g. {{'conv1': ('conv1',)}}, or leave it out."
        )
    return {name: (value,) if isinstance(value, str) else tuple(value) for name, value in producers.items()}


def _check_mapping(scores: object, rule: object, example: str) -> None:
    if not isinstance(scores, Mapping):
        raise InvalidTypeError(
            f"{rule!r}.select_many expects a mapping name -> scores; got "
            f"{type(scores).__name__}. Fix: pass e.g. {example}."
        )


def _check_scores(scores: object, where: str) -> Tensor:
    """Checks ``scores`` is a 1-D floating tensor without NaN; returns it."""
    if not isinstance(scores, Tensor):
        raise InvalidTypeError(
            f"{where} expects scores as a 1-D floating torch.Tensor; got {type(scores).__name__}. "
            "Fix: compute them with a scorer, e.g. score_l1(weight)."
        )
    if not scores.is_floating_point():
        raise InvalidTypeError(
            f"{where} expects floating-point scores; got dtype {scores.dtype}. "
            "Fix: convert them, e.g. scores.float()."
        )
    if scores.dim() != 1:
        raise InvalidWeightError(
            f"{where} expects a 1-D score vector (one score per channel); got shape "
            f"{tuple(scores.shape)}. Fix: score a weight with a scorer (e.g. score_l1(weight)) "
            "or flatten the scores."
        )
    if bool(torch.isnan(scores).any()):
        raise InvalidWeightError(
            f"{where} expects scores without NaN; the vector of length {scores.numel()} contains "
            "NaN. Fix: check the weights (or gradients) that were scored."
        )
    return scores


# --------------------------------------------------------------------------- kernels


def _prune_lowest(scores: Tensor, n_prune: int) -> Mask:
    """Keep-mask pruning the ``n_prune`` lowest scores; ties: lower index first."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        order = torch.sort(scores, stable=True).indices
        mask[order[:n_prune]] = False
    return mask


def _round_kept(n: int, keep: int, round_to: int) -> int:
    """``keep`` rounded up to a multiple of ``round_to``, capped at ``n``."""
    return min(n, -(-keep // round_to) * round_to)


def _normalized(scores: Tensor, how: Normalize) -> Tensor:
    """Scores divided by a positive per-vector constant (order-preserving)."""
    values = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if how == "none" or values.numel() == 0:
        return values
    divisor = _DIVISORS[how](values.abs())
    safe = torch.where((divisor > 0) & torch.isfinite(divisor), divisor, torch.ones_like(divisor))
    return values / safe


def _global_prune_counts(
    normed: Sequence[Tensor], caps: Sequence[int], target: int
) -> list[int]:
    """How many channels each vector loses under bounded joint ranking.

    Walks all channels in ascending (value, vector position, index) order and
    prunes each one whose vector has pruned fewer than its cap, until
    ``target`` are pruned or the channels run out.  Vectorised: a channel is
    eligible iff its rank inside its own vector is below the cap.
    """
    device = normed[0].device
    dtype = functools.reduce(torch.promote_types, (z.dtype for z in normed))
    sizes = torch.tensor([z.numel() for z in normed], device=device)
    flat = torch.cat([z.to(device=device, dtype=dtype) for z in normed])
    total = flat.numel()
    group = torch.repeat_interleave(torch.arange(len(normed), device=device), sizes)
    group_sorted = group[torch.sort(flat, stable=True).indices]
    by_group = torch.sort(group_sorted, stable=True).indices
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty(total, dtype=torch.long, device=device)
    rank[by_group] = torch.arange(total, device=device) - starts[group_sorted[by_group]]
    eligible = rank < torch.tensor(list(caps), device=device)[group_sorted]
    taken = eligible & (torch.cumsum(eligible.long(), 0) <= target)
    counts: list[int] = torch.bincount(group_sorted[taken], minlength=len(normed)).tolist()
    return counts


# --------------------------------------------------------------------------- values


class _MaskRule(ABC):
    """Shared behaviour of the mask values: repr like the call, lifting."""

    _factory: ClassVar[str]
    takes_producers: ClassVar[bool] = True  # select_many(scores, producers=...): see plan_from_scored

    @abstractmethod
    def select(self, scores: Scores) -> Mask:
        """Maps one score vector to a keep-mask."""

    def select_many(
        self, scores: Mapping[str, Scores], *, producers: Producers | None = None
    ) -> dict[str, Mask]:
        """Applies :meth:`select` to every named score vector independently.

        ``producers`` (vector name -> the modules producing it) is what
        :func:`fprune.plan.plan_from_scored` passes to every fprune rule; only
        ``topk_mask(per_module=...)`` uses it.
        """
        _check_mapping(scores, self, "{'conv1': scores}")
        return {name: self.select(value) for name, value in scores.items()}

    @overload
    def __call__(self, x: Tensor) -> Mask: ...

    @overload
    def __call__(self, x: Scored) -> Plan: ...

    def __call__(self, x: Tensor | Scored) -> Mask | Plan:
        """A tensor gives :meth:`select`; a ``Scored`` value gives a ``Plan``."""
        if isinstance(x, Tensor):
            return self.select(x)
        return _STAGES["plan_from_scored"](self, x)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass
            value = getattr(self, f.name)
            if f.default is MISSING or value != f.default:
                shown = f.metadata["show"](value) if "show" in f.metadata else value
                parts.append(f"{f.name}={shown!r}")
        return f"{self._factory}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class TopK(_MaskRule):
    """Keep-mask rule of :func:`topk_mask`; build it with that factory."""

    _factory: ClassVar[str] = "topk_mask"

    sparsity: float  # fraction of channels to prune, in [0, 1); groups no per_module key matches
    round_to: int = 1  # the kept count is rounded up to a multiple of this
    min_keep: int = 1  # at least this many channels are kept (capped at n)
    per_module: tuple[tuple[str, float], ...] = field(  # (module name or glob, sparsity), first match wins
        default=(), metadata={"show": dict}
    )

    def __post_init__(self) -> None:
        sparsity = _check_fraction(self.sparsity, "sparsity", "topk_mask")
        object.__setattr__(self, "sparsity", sparsity)
        _check_count(self.round_to, "round_to", "topk_mask", 1)
        _check_count(self.min_keep, "min_keep", "topk_mask", 0)
        object.__setattr__(self, "per_module", _check_per_module(self.per_module, "topk_mask"))

    def select(self, scores: Scores) -> Mask:
        """Keeps all but the lowest scores at the default ``sparsity``; see :func:`topk_mask`."""
        return self._select(scores, self.sparsity, repr(self))

    def select_many(
        self, scores: Mapping[str, Scores], *, producers: Producers | None = None
    ) -> dict[str, Mask]:
        """Each named vector at its own sparsity (``per_module`` matched against its producers)."""
        _check_mapping(scores, self, "{'conv1': scores}")
        fractions = self.sparsities(list(scores), producers)
        return {
            name: self._select(value, fractions[name], f"{self!r} on scores[{name!r}]")
            for name, value in scores.items()
        }

    def sparsities(self, names: Sequence[str], producers: Producers | None = None) -> dict[str, float]:
        """The sparsity each named vector gets: the first ``per_module`` key matching one of its producers.

        Without ``producers`` a vector's own name stands for its producer.

        Raises:
            InvalidArgumentError: a key matches none of the producers (of the names, without
                ``producers``).

        Example:
            >>> rule = topk_mask(0.5, per_module={"layer4": 0.7, "fc*": 0.2})
            >>> rule.sparsities(["conv1", "layer4.0.conv1", "fc"])
            {'conv1': 0.5, 'layer4.0.conv1': 0.7, 'fc': 0.2}
        """
        if not self.per_module:
            return dict.fromkeys(names, self.sparsity)
        if producers is None:
            owners: Producers = {name: (name,) for name in names}
            what = "score name"
        else:
            owners = _check_producers(producers, f"{self!r}.select_many")
            what = "producer of a channel group of the model"
        known = list(dict.fromkeys(p for group in owners.values() for p in group))
        check_patterns([key for key, _ in self.per_module], known, f"{self!r}, per_module", what)
        return {
            name: next(
                (fraction for key, fraction in self.per_module
                 if any(name_matches(p, key) for p in owners.get(name, (name,)))),
                self.sparsity,
            )
            for name in names
        }

    def _select(self, scores: object, sparsity: float, where: str) -> Mask:
        values = _check_scores(scores, where)
        n = values.numel()
        keep = max(n - int(n * sparsity), min(self.min_keep, n))
        return _prune_lowest(values, n - _round_kept(n, keep, self.round_to))


@dataclass(frozen=True, repr=False)
class Threshold(_MaskRule):
    """Keep-mask rule of :func:`threshold_mask`; build it with that factory."""

    _factory: ClassVar[str] = "threshold_mask"

    threshold: float  # keep iff score > threshold
    min_keep: int = 1  # at least this many channels are kept (capped at n)

    def __post_init__(self) -> None:
        value = _check_real(self.threshold, "threshold", "threshold_mask", "threshold=0.1")
        object.__setattr__(self, "threshold", value)
        _check_count(self.min_keep, "min_keep", "threshold_mask", 0)

    def select(self, scores: Scores) -> Mask:
        """Keeps the scores above the threshold; see :func:`threshold_mask`."""
        values = _check_scores(scores, repr(self))
        n = values.numel()
        above = int((values > self.threshold).sum())
        return _prune_lowest(values, n - max(above, min(self.min_keep, n)))


@dataclass(frozen=True, repr=False)
class GlobalTopK(_MaskRule):
    """Keep-mask rule of :func:`global_topk_mask`; build it with that factory."""

    _factory: ClassVar[str] = "global_topk_mask"

    sparsity: float  # fraction of all channels (summed over vectors) to prune, in [0, 1)
    normalize: Normalize = "mean"  # per-vector scaling before ranking
    min_keep: int = 1  # each vector keeps at least this many (capped at its length)
    max_sparsity: float | None = None  # each vector loses at most int(n * max_sparsity)
    round_to: int = 1  # each vector's kept count is rounded up to a multiple of this

    def __post_init__(self) -> None:
        factory = "global_topk_mask"
        object.__setattr__(self, "sparsity", _check_fraction(self.sparsity, "sparsity", factory))
        if not isinstance(self.normalize, str):
            raise InvalidTypeError(
                f"{factory} expects normalize to be one of {_NORMALIZE_CHOICES}; got "
                f"{type(self.normalize).__name__} ({self.normalize!r}). Fix: pass e.g. "
                "normalize='mean'."
            )
        if self.normalize not in _NORMALIZE_CHOICES:
            raise InvalidArgumentError(
                f"{factory} expects normalize to be one of {_NORMALIZE_CHOICES}; got "
                f"{self.normalize!r}. Fix: pass e.g. normalize='mean' "
                "(or 'none' to rank raw scores)."
            )
        _check_count(self.min_keep, "min_keep", factory, 0)
        if self.max_sparsity is not None:
            bound = _check_fraction(self.max_sparsity, "max_sparsity", factory, closed=True)
            object.__setattr__(self, "max_sparsity", bound)
        _check_count(self.round_to, "round_to", factory, 1)

    def _cap(self, n: int) -> int:
        cap = n - min(self.min_keep, n)
        return cap if self.max_sparsity is None else min(cap, int(n * self.max_sparsity))

    def select(self, scores: Scores) -> Mask:
        """One vector ranked alone: ``select_many`` with a single entry."""
        return self._select(((repr(self), scores),))[0]

    def select_many(
        self, scores: Mapping[str, Scores], *, producers: Producers | None = None
    ) -> dict[str, Mask]:
        """Ranks all named vectors jointly; see :func:`global_topk_mask` (``producers`` is unused)."""
        _check_mapping(scores, self, "{'conv1': s1, 'conv2': s2}")
        named = tuple((f"{self!r} on scores[{name!r}]", value) for name, value in scores.items())
        return dict(zip(scores, self._select(named)))

    def _select(self, named: Sequence[tuple[str, object]]) -> list[Mask]:
        values = [_check_scores(value, where) for where, value in named]
        if not values:
            return []
        normed = [_normalized(v, self.normalize) for v in values]
        sizes = [v.numel() for v in values]
        target = int(sum(sizes) * self.sparsity)
        counts = _global_prune_counts(normed, [self._cap(n) for n in sizes], target)
        return [
            _prune_lowest(z, n - _round_kept(n, n - c, self.round_to))
            for z, n, c in zip(normed, sizes, counts)
        ]


# --------------------------------------------------------------------------- factories


def topk_mask(
    sparsity: float,
    *,
    round_to: int = 1,
    min_keep: int = 1,
    per_module: Mapping[str, float] | None = None,
) -> TopK:
    """Prunes a fixed fraction of channels, the lowest scores first.

    For ``n`` scores the rule prunes ``int(n * sparsity)`` channels, so with
    the defaults exactly ``n - int(n * sparsity)`` are kept.  The options then
    adjust the number kept, in this order:

    1. ``keep = max(n - int(n * sparsity), min(min_keep, n))``;
    2. ``keep = min(n, round_to * ceil(keep / round_to))`` (rounded *up* to a
       multiple of ``round_to``, capped at ``n``).

    Options only ever keep more channels.  The kept channels are the ``keep``
    highest scores; among equal scores the lower index is pruned first (a
    stable ascending sort, the first ``n - keep`` pruned).  Does not modify
    the scores.

    ``per_module`` gives some channel groups their own sparsity (``round_to``
    and ``min_keep`` still apply).  Keys are module names or :mod:`fnmatch`
    globs, matched like :func:`fprune.ignore` matches them (a name also covers
    the modules inside it), against **every** producer of a group (a residual
    sum has several); the **first** matching key, in the mapping's order,
    wins, and groups no key matches get ``sparsity``.  On a scored model the
    keys are checked against the producers of all its groups: a key matching
    none raises.  On plain named vectors (``select_many`` without
    ``producers``) a vector's name stands for its producer; a single vector
    (``select``) always gets ``sparsity``.

    Args:
        sparsity: fraction to prune, ``0 <= sparsity < 1``; the default for every group.
        round_to: the kept count is a multiple of this (unless capped at ``n``).
        min_keep: at least this many channels are kept (``0`` allows none).
        per_module: module name or glob -> fraction to prune (each ``0 <= s < 1``).

    Returns:
        A frozen :class:`TopK` value; ``repr`` reads like this call.

    Raises:
        InvalidTypeError: an argument has the wrong type (e.g. ``True``).
        InvalidArgumentError: ``sparsity`` or a ``per_module`` value outside
            ``[0, 1)`` or NaN, ``round_to < 1``, ``min_keep < 0``; when the
            rule runs, a ``per_module`` key matching no producer (the message
            lists the closest names).

    Example:
        >>> import torch
        >>> from fprune.masks import topk_mask
        >>> s = torch.tensor([0.5, 0.1, 0.5, 0.9, 0.1, 0.7])
        >>> topk_mask(0.5)(s)
        tensor([False, False,  True,  True, False,  True])
        >>> topk_mask(0.5, round_to=4)
        topk_mask(sparsity=0.5, round_to=4)
        >>> topk_mask(0.5, round_to=4)(s).sum().item()
        4
        >>> rule = topk_mask(0.5, per_module={"fc1": 0.25})
        >>> rule
        topk_mask(sparsity=0.5, per_module={'fc1': 0.25})
        >>> {k: int(m.sum()) for k, m in rule.select_many({"fc1": torch.rand(8), "fc2": torch.rand(8)}).items()}
        {'fc1': 6, 'fc2': 4}
    """
    pairs = () if per_module is None else _check_per_module(per_module, "topk_mask")
    return TopK(sparsity=sparsity, round_to=round_to, min_keep=min_keep, per_module=pairs)


def threshold_mask(threshold: float, *, min_keep: int = 1) -> Threshold:
    """Keeps the channels whose score is strictly greater than ``threshold``.

    A channel is kept iff ``score > threshold`` (compared in the scores'
    dtype), so ``threshold_mask(0.0)`` prunes exactly the channels scored 0 or
    less.  If fewer than ``min(min_keep, n)`` channels pass, the
    ``min(min_keep, n)`` highest scores are kept instead, ties broken as
    everywhere: among equal scores the lower index is pruned first.
    ``min_keep=0`` allows an all-``False`` mask.  Does not modify the scores.

    Args:
        threshold: a real number (``±inf`` allowed, NaN not).
        min_keep: at least this many channels are kept.

    Returns:
        A frozen :class:`Threshold` value; ``repr`` reads like this call.

    Raises:
        InvalidTypeError: an argument has the wrong type.
        InvalidArgumentError: ``threshold`` is NaN or ``min_keep < 0``.

    Example:
        >>> import torch
        >>> from fprune.masks import threshold_mask
        >>> threshold_mask(0.2)(torch.tensor([0.1, 0.2, 0.3]))
        tensor([False, False,  True])
        >>> threshold_mask(5.0, min_keep=2)(torch.tensor([1.0, 3.0, 3.0]))
        tensor([False,  True,  True])
    """
    return Threshold(threshold=threshold, min_keep=min_keep)


def global_topk_mask(
    sparsity: float,
    *,
    normalize: Normalize = "mean",
    min_keep: int = 1,
    max_sparsity: float | None = None,
    round_to: int = 1,
) -> GlobalTopK:
    """Ranks the channels of several score vectors jointly and prunes the lowest.

    With ``N`` channels over all vectors the target is ``int(N * sparsity)``.
    Each vector is first divided by a positive constant (which keeps its
    order): ``"mean"`` the mean of ``|scores|``, ``"max"`` the max of
    ``|scores|``, ``"l2"`` its L2 norm, ``"none"`` nothing; a divisor that is
    0 or not finite is replaced by 1.  Channels are then visited in ascending
    normalised score, ties broken by the vector's position in the mapping,
    then by the lower index, and each is pruned unless its vector is at its
    bound, until the target is reached.  A vector of length ``n`` loses at
    most ``n - min(min_keep, n)`` channels and, if ``max_sparsity`` is given,
    at most ``int(n * max_sparsity)``.  Finally each vector's kept count is
    rounded up to a multiple of ``round_to`` (capped at ``n``).

    So the total pruned is ``min(int(N * sparsity), sum of the bounds)``
    before rounding: when bounds bind, the next-lowest channels of other
    vectors are pruned instead, and **fewer than the target** are pruned only
    when every vector is at its bound; ``round_to > 1`` can lower the count
    further.  On a single vector, ``select`` equals ``select_many`` with one
    entry.  Does not modify the scores; each mask is on its vector's device.

    Args:
        sparsity: overall fraction to prune, ``0 <= sparsity < 1``.
        normalize: ``"mean"``, ``"max"``, ``"l2"`` or ``"none"``.
        min_keep: each vector keeps at least this many channels.
        max_sparsity: optional per-vector cap on the pruned fraction, in ``[0, 1]``.
        round_to: each vector's kept count is a multiple of this (unless capped).

    Returns:
        A frozen :class:`GlobalTopK` value; ``repr`` reads like this call.

    Raises:
        InvalidTypeError: an argument has the wrong type.
        InvalidArgumentError: an argument is out of range.

    Example:
        >>> import torch
        >>> from fprune.masks import global_topk_mask
        >>> scores = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}
        >>> rule = global_topk_mask(0.5, normalize="none", min_keep=0)
        >>> rule
        global_topk_mask(sparsity=0.5, normalize='none', min_keep=0)
        >>> rule.select_many(scores)
        {'a': tensor([False, False]), 'b': tensor([True, True])}
        >>> global_topk_mask(0.5, normalize="none").select_many(scores)  # "a" keeps 1
        {'a': tensor([False,  True]), 'b': tensor([False,  True])}
    """
    return GlobalTopK(
        sparsity=sparsity,
        normalize=normalize,
        min_keep=min_keep,
        max_sparsity=max_sparsity,
        round_to=round_to,
    )
