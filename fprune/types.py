"""The values that flow through an fprune pipeline, named once.

A pipeline is ``model -> Scored -> Plan -> GraphModule``:

* a :class:`Scorer` maps a weight tensor to :data:`Scores`, and lifts to a
  whole model (returning a :class:`fprune.plan.Scored`);
* a :class:`MaskFn` maps :data:`Scores` to a :data:`Mask`, and lifts to a
  ``Scored`` value (returning a :class:`fprune.plan.Plan`);
* :func:`fprune.apply_patterns` turns a ``Plan`` into a smaller model.

Example:
    >>> import torch
    >>> from fprune import score_l1
    >>> score_l1(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
    tensor([3., 1.])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, Union, overload


from torch import Tensor, nn
from typing_extensions import TypeAlias

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from fprune.plan import Plan, Scored

__all__ = [
    "register_stage",
    "Scores",
    "Mask",
    "RowFn",
    "Scorer",
    "MaskFn",
    "ModelLike",
]

Scores: TypeAlias = Tensor  # 1-D float tensor, one score per output channel (row); higher = more important
Mask: TypeAlias = Tensor  # 1-D torch.bool tensor, one entry per channel; True = keep
RowFn: TypeAlias = Callable[[Tensor, Union[Tensor, None]], Tensor]  # (rows [n, k], grad rows [n, k] | None) -> scores [n]
ModelLike: TypeAlias = nn.Module  # an nn.Module or a torch.fx.GraphModule


_F = TypeVar("_F", bound=Callable[..., Any])

# The model-level stages the values below hand a model or a Scored value to.  They live in the
# modules that implement them (fprune.scores, fprune.plan), which sit above this one and register
# them when imported; ``import fprune`` imports every one.  So this module imports nothing of
# fprune: the values stay at the bottom of the import graph (no cycle), the stages at the top.
_STAGES: dict[str, Callable[..., Any]] = {}


def register_stage(name: Literal["score_tensor", "score_model", "plan_from_scored"]) -> Callable[[_F], _F]:
    """Registers the function a value's ``__call__`` dispatches to (used by fprune's own modules).

    Example:
        >>> from fprune.types import _STAGES
        >>> _STAGES["score_model"].__module__
        'fprune.plan'
    """

    def register(fn: _F) -> _F:
        _STAGES[name] = fn
        return fn

    return register


def _format_args(args: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args)


@dataclass(frozen=True, repr=False)
class Scorer:
    """A per-channel scoring rule: a small immutable value around a row function.

    ``rows`` scores the rows of a 2-D matrix (a weight flattened over every
    dimension but 0); ``source`` says which tensors of a channel group are
    scored when the scorer is lifted to a model: the producers' weights
    (``"weight"``) or the per-channel scale of a normalisation layer
    (``"norm"``).  Call it on a tensor for scores, on a model for a
    :class:`fprune.plan.Scored` value.

    Example:
        >>> import torch
        >>> from fprune import score_l2
        >>> score_l2
        score_l2
        >>> score_l2(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([5., 1.])
    """

    name: str  # the public name, used in repr
    rows: RowFn  # scores rows of a 2-D matrix
    source: Literal["weight", "norm"] = "weight"  # what a lifted scorer reads in each group
    needs_grad: bool = False  # True: rows receives the gradient and it must exist
    args: tuple[tuple[str, Any], ...] = ()  # the factory arguments, for repr
    # True: each row's score depends on that row alone, so a large matrix may be scored a block of
    # rows at a time (bounded float32 temporaries of a 16-bit checkpoint's embedding, say)
    rowwise: bool = False

    def __repr__(self) -> str:
        return f"{self.name}({_format_args(self.args)})" if self.args else self.name

    @overload
    def __call__(self, x: Tensor) -> Scores: ...

    @overload
    def __call__(self, x: nn.Module | ExportedProgram) -> Scored: ...

    def __call__(self, x: Tensor | nn.Module | ExportedProgram) -> Scores | Scored:
        """Scores a weight tensor, or every prunable channel group of a model."""
        if isinstance(x, Tensor):
            return _STAGES["score_tensor"](self, x)  # type: ignore[no-any-return]
        return _STAGES["score_model"](self, x)  # type: ignore[no-any-return]


class MaskFn(Protocol):
    """A keep-mask rule built by a factory such as :func:`fprune.topk_mask`.

    ``select`` maps one score vector to a mask; ``select_many`` maps named
    score vectors to named masks (global rules rank them jointly).  Calling
    the value on a tensor is ``select``; calling it on a ``Scored`` value
    returns a :class:`fprune.plan.Plan`.
    """

    def select(self, scores: Scores) -> Mask: ...

    def select_many(self, scores: Mapping[str, Scores]) -> dict[str, Mask]: ...

    @overload
    def __call__(self, x: Tensor) -> Mask: ...

    @overload
    def __call__(self, x: Scored) -> Plan: ...


