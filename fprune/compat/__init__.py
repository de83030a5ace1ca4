"""Drop-in replacement for ``torch.ao.pruning._experimental.pruner``.

Change one import::

    # from torch.ao.pruning._experimental.pruner import SaliencyPruner
    from fprune.compat import SaliencyPruner

The classes keep the reference's names, constructors and state
(``groups``, ``state[tensor_fqn]["mask"]``, ``FakeStructuredSparsity``
parametrizations, biases moved to ``_bias`` with a ``BiasHook``), the same
counting and tie rules per pruner, and ``prune()`` returns the traced, pruned
GraphModule and leaves the model pruned in place.  They are a shell: scores
come from :mod:`fprune.scores`, the channel groups from :func:`fprune.analyze`
and the rewrite from :func:`fprune.apply_patterns`.

Where the reference returns a working model, the result is the same: same
masks, same module shapes, same outputs.  That includes three of its choices
the exact core would not make alone:

* a ``Conv2d`` with a bias (its own or one it received by bias propagation)
  whose output reaches, through its first user, a zero-padded ``Conv2d`` is
  kept at full size with its pruned rows zeroed, for ``prune_bias`` True and
  False alike;
* with ``prune_bias=False`` the consumer of a biased producer gets a bias even
  when nothing folds into it (zeros);
* an LSTM pruned with per-gate masks (``LSTMSaliencyPruner`` keeps different
  units in each gate and in ``weight_ih`` / ``weight_hh``) is sliced gate by
  gate as the reference does, its consumers by the output gate of the last
  layer's ``weight_hh`` mask; a LayerNorm after the LSTM is sliced too
  (approximate, as in the reference).

Where the reference raises, or returns a broken, half-pruned or wrong model,
the adapter does the correct thing (the pruned model computes what the
prepared, masked model computed), or raises a clear :mod:`fprune.errors` error
before the model is touched:

* ``prepare(model, None)`` on a model with an LSTM: the reference asks for
  ``lstm.weight`` and crashes; here the LSTM contributes ``weight_ih_l{k}`` and
  ``weight_hh_l{k}`` for every layer;
* modules no reference pattern matches (a Linear followed by an activation at
  the output, BatchNorm between convolutions, a Conv1d, a Linear feeding an
  LSTM, a second user of a layer's output) are pruned by the core's analysis;
  residual adds too when every coupled producer has the same mask; what cannot
  be pruned exactly (an op without a rule, a LayerNorm after a non-LSTM, a
  grouped convolution) raises before anything changes;
* an output layer with ``prune_bias=False`` keeps the bias of its kept
  channels (the reference drops it, or crashes when a bias was propagated into
  it);
* a bias-free ``Conv2d -> pool -> flatten -> Linear`` with ``prune_bias=False``
  prunes (the reference raises ``TypeError``);
* a layer pruned with ``prune_bias=True`` keeps the bias folded into it from a
  ``prune_bias=False`` producer (the reference rebuilds it from ``_bias``);
* with ``prune_bias=False`` a removed channel is replaced by the constant it
  emits, ``act(bias)``, folded into its consumers, also when the producer has
  no bias and ``act(0) != 0`` (sigmoid, softplus: the reference drops the
  constant); a channel whose constant would meet zero padding (a padded
  consumer, a padded average pool) is kept at full size with its rows zeroed
  (the reference folds it as if the border did not exist);
* results no longer depend on whether a forward ran: the reference's
  ``BiasHook`` zeroes the masked bias entries only during a forward, so its
  padded-conv result with ``prune_bias=True`` kept or dropped them depending on
  that; here they are always zeroed, as the masked model has them;
* the bias is re-added along the channel dimension (the reference's hook uses
  dimension 1, wrong for a ``Linear`` on rank-3 input);
* ``load_state_dict`` loads the structured masks into the existing
  parametrizations (the reference adds an element-wise ``FakeSparsity`` that
  breaks the next forward, and empties ``state``); ``squash_mask`` after
  ``prune()`` is a no-op (the reference raises);
* a mask that prunes every channel (``sparsity_level >= 1``; the reference
  leaves a zero-width layer), an LSTM configured through only some of its
  weights or whose gates keep different numbers of units, coupled producers
  with different masks, custom ``patterns`` and ``FPGMPruner(dist=3)`` raise a
  clear error; a configured module the forward never calls is left prepared
  with a :class:`fprune.errors.FpruneWarning`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.compat import SaliencyPruner
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> pruner = SaliencyPruner({"sparsity_level": 0.5})
    >>> pruner.prepare(net, [{"tensor_fqn": "0.weight"}])
    >>> pruner.step()
    >>> x = torch.randn(2, 4)
    >>> expected = net(x)
    >>> pruned = pruner.prune()
    >>> net[0].out_features, net[2].in_features
    (4, 4)
    >>> torch.allclose(pruned(x), expected, atol=1e-6)
    True
"""

from fprune.compat.base import BaseStructuredSparsifier
from fprune.compat.parametrization import BiasHook, FakeStructuredSparsity
from fprune.compat.pruners import FPGMPruner, LSTMSaliencyPruner, SaliencyPruner

__all__ = [
    "BaseStructuredSparsifier",
    "SaliencyPruner",
    "LSTMSaliencyPruner",
    "FPGMPruner",
    "FakeStructuredSparsity",
    "BiasHook",
]
