"""The fprune error hierarchy.

Every error raised for bad user input is an :class:`FpruneError` and also
subclasses the builtin that fits (``ValueError``, ``TypeError``,
``NotImplementedError``), so ``except ValueError`` keeps working.  Messages
name the module or node involved, what was expected, what arrived, and how
to fix it.

Example:
    >>> from fprune.errors import FpruneError, InvalidArgumentError
    >>> issubclass(InvalidArgumentError, ValueError)
    True
    >>> try:
    ...     raise InvalidArgumentError("sparsity must be in [0, 1); got 1.5")
    ... except FpruneError as e:
    ...     print(e)
    sparsity must be in [0, 1); got 1.5
"""

from __future__ import annotations

__all__ = [
    "FpruneError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "InvalidWeightError",
    "InvalidMaskError",
    "UnsupportedModelError",
    "UnprunableError",
    "TraceError",
    "PlanFormatError",
    "PlanMismatchError",
    "MissingDependencyError",
    "CheckpointError",
    "FpruneWarning",
]


class FpruneError(Exception):
    """Base class of every error fprune raises on purpose."""


class InvalidArgumentError(FpruneError, ValueError):
    """A hyper-parameter or option is outside its documented range."""


class InvalidTypeError(FpruneError, TypeError):
    """An argument has the wrong type (e.g. a non-float weight, a non-bool mask)."""


class InvalidWeightError(FpruneError, ValueError):
    """A weight or a score vector is unusable (wrong rank, no rows, NaN/inf values, missing gradient)."""


class InvalidMaskError(FpruneError, ValueError):
    """A keep-mask is malformed: wrong length, names no prunable module, keeps nothing."""


class UnsupportedModelError(FpruneError, NotImplementedError):
    """The model uses a construct fprune cannot prune (e.g. a module still carrying parametrizations)."""


class UnprunableError(FpruneError, ValueError):
    """A mask asks to prune a channel group that cannot be pruned exactly."""


class TraceError(FpruneError, TypeError):
    """``torch.fx.symbolic_trace`` could not trace the model."""


class PlanFormatError(FpruneError, ValueError):
    """Text handed to :func:`fprune.load_plan` is not an ``fprune.plan/1`` JSON document."""


class PlanMismatchError(FpruneError, ValueError):
    """A plan was computed for a different architecture than the model it is applied to."""


class MissingDependencyError(FpruneError, ImportError):
    """An optional dependency (the demo's scikit-learn, matplotlib, tqdm) is not installed."""


class CheckpointError(FpruneError, ValueError):
    """A model folder lacks its config or a weight shard, or a shard is corrupt or disagrees with its index."""


class FpruneWarning(UserWarning):
    """A group was left unpruned, or pruned conservatively; the message names it and says why."""
