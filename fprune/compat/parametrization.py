"""The reference's mask parametrization and bias hook, typed.

:class:`FakeStructuredSparsity` is the row-wise keep-mask that ``prepare()``
registers with :mod:`torch.nn.utils.parametrize`; :class:`BiasHook` adds a
module's moved bias (``_bias``) back after its forward, zeroing the masked
entries first when ``prune_bias`` is set.  Both have the constructors and
behaviour of ``torch.ao.pruning._experimental.pruner``'s classes, with two
documented corrections (see :class:`BiasHook`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.nn.utils import parametrize
    >>> from fprune.compat import FakeStructuredSparsity
    >>> lin = nn.Linear(2, 3)
    >>> mask = torch.tensor([True, False, True])
    >>> _ = parametrize.register_parametrization(lin, "weight", FakeStructuredSparsity(mask))
    >>> lin.weight[1].abs().sum().item()
    0.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fprune.errors import InvalidMaskError, InvalidTypeError

__all__ = ["FakeStructuredSparsity", "BiasHook", "structured_parametrization", "settle_bias"]


class FakeStructuredSparsity(nn.Module):
    """Parametrization multiplying each row (output channel) of a tensor by a bool keep-mask.

    ``forward(x)`` returns ``mask.reshape(-1, 1, ..., 1) * x``.  The mask is a
    buffer (the very tensor passed in, so ``sparsifier.state[fqn]["mask"]``
    and the parametrization share it) and, as in the reference, it is left out
    of ``state_dict()`` so a parametrized module does not save it twice.  The
    identity ``right_inverse`` is what ``parametrize`` assumes anyway; defining
    it only spares a failed attribute lookup on every registration.

    Args:
        mask: 1-D bool tensor, one entry per row of the tensor it masks (True = keep).

    Example:
        >>> import torch
        >>> p = FakeStructuredSparsity(torch.tensor([True, False]))
        >>> p(torch.ones(2, 3))
        tensor([[1., 1., 1.],
                [0., 0., 0.]])
        >>> p.state_dict()
        {}
    """

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        """Returns ``x`` with the rows the mask drops set to zero."""
        if not isinstance(self.mask, Tensor):
            raise InvalidTypeError(
                f"FakeStructuredSparsity.mask must be a torch.Tensor, got {type(self.mask).__name__}; "
                "assign a 1-D bool tensor to it"
            )
        if self.mask.shape[0] != x.shape[0]:
            raise InvalidMaskError(
                f"FakeStructuredSparsity: the mask has {self.mask.shape[0]} entries but the tensor it "
                f"masks has {x.shape[0]} rows (shape {tuple(x.shape)}); give one entry per output channel"
            )
        shape = [1] * x.dim()
        shape[0] = -1
        return self.mask.reshape(shape) * x

    def right_inverse(self, x: Tensor) -> Tensor:
        """The identity: assigning to the parametrized tensor sets its original."""
        return x

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Always empty: the mask is saved by the sparsifier, not by the module."""
        return {}


class BiasHook:
    """Forward hook adding ``module._bias`` to the output, as the reference's ``BiasHook``.

    With ``prune_bias`` the masked entries of ``_bias`` are set to zero first,
    in place, as the reference does.  One correction: the reference adds the
    bias along dimension 1, which is wrong for a ``Linear`` applied to inputs of
    rank 3 or more (it raises, or silently adds along the wrong dimension when
    the sizes happen to match); here the bias is added along the channel
    dimension of the module, the last one for ``Linear`` and ``-(d + 1)`` for a
    ``d``-dimensional convolution (dimension 1 for batched ``Conv2d`` input, as
    in the reference).

    Args:
        parametrization: the :class:`FakeStructuredSparsity` whose mask applies.
        prune_bias: zero the masked entries of the bias before adding it.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lin = nn.Linear(2, 2)
        >>> hook = BiasHook(FakeStructuredSparsity(torch.tensor([True, False])), prune_bias=True)
        >>> lin.register_parameter("_bias", nn.Parameter(torch.tensor([1.0, 2.0])))
        >>> hook(lin, (), torch.zeros(3, 4, 2))[0, 0]  # added along the last dim, masked entry zeroed
        tensor([1., 0.])
    """

    def __init__(self, parametrization: nn.Module, prune_bias: bool) -> None:
        self.param = parametrization
        self.prune_bias = prune_bias

    def __call__(self, module: nn.Module, input: Any, output: Tensor) -> Tensor:
        """Adds the (masked) bias to `output` in place and returns it."""
        bias_param = getattr(module, "_bias", None)
        if bias_param is not None:
            bias = bias_param.data
            if self.prune_bias:
                bias[~_mask(self.param)] = 0
            kernel = getattr(module, "kernel_size", None)
            dim = -(len(kernel) + 1) if isinstance(kernel, tuple) else -1
            shape = [1] * output.dim()
            shape[dim] = -1
            output += bias.reshape(shape)
        return output


def _mask(parametrization: nn.Module) -> Tensor:
    mask = parametrization.mask
    if not isinstance(mask, Tensor):
        raise InvalidTypeError(f"{type(parametrization).__name__}.mask must be a tensor, got {type(mask).__name__}")
    return mask


def structured_parametrization(module: nn.Module, tensor_name: str) -> FakeStructuredSparsity | None:
    """The first :class:`FakeStructuredSparsity` on ``module.<tensor_name>``, or None.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lin = nn.Linear(2, 2)
        >>> structured_parametrization(lin, "weight") is None
        True
    """
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    for p in module.parametrizations[tensor_name]:  # type: ignore[index, union-attr]
        if isinstance(p, FakeStructuredSparsity):
            return p
    return None


def settle_bias(module: nn.Module) -> None:
    """Applies now what every :class:`BiasHook` with ``prune_bias`` does on a forward.

    The reference zeroes the masked entries of ``_bias`` only when a forward
    runs, so what ``squash_mask()`` and ``prune()`` keep depended on whether the
    model ran; settling first makes them independent of it.  Modifies
    ``module._bias`` in place, as the hook does.
    """
    bias = getattr(module, "_bias", None)
    if bias is None:
        return
    with torch.no_grad():
        for hook in module._forward_hooks.values():
            if isinstance(hook, BiasHook) and hook.prune_bias:
                bias.data[~_mask(hook.param)] = 0
